//! Database connections: the request pool and the migration connection.

use std::str::FromStr;
use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sea_orm::sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sea_orm::{DatabaseConnection, DbErr, SqlxPostgresConnector, SqlxSqliteConnector};

use crate::config::{Backend, DatabaseConfig};

/// How long a SQLite writer waits for the file lock before giving up.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Open the request pool on `DATABASE_URL`.
pub async fn connect(cfg: &DatabaseConfig) -> Result<DatabaseConnection, DbErr> {
    open(cfg.url.expose(), cfg, cfg.max_connections).await
}

/// Apply pending migrations over the direct endpoint (`DATABASE_URL_DIRECT`, else
/// `DATABASE_URL`), on a connection of its own that is closed afterwards: DDL is session-level
/// work that does not belong on a transaction-mode pooler.
pub async fn migrate(cfg: &DatabaseConfig) -> Result<(), DbErr> {
    let direct = open(cfg.direct_url().expose(), cfg, 1).await?;
    let result = Migrator::up(&direct, None).await;
    direct.close().await?;
    result
}

/// Names of migrations not yet applied (without creating the migrations table).
pub async fn pending_migrations(db: &DatabaseConnection) -> Result<Vec<String>, DbErr> {
    Ok(Migrator::get_pending_migrations_read_only(db)
        .await?
        .iter()
        .map(|m| m.name().to_owned())
        .collect())
}

async fn open(
    url: &str,
    cfg: &DatabaseConfig,
    max_connections: u32,
) -> Result<DatabaseConnection, DbErr> {
    let bad_url = |e: sea_orm::sqlx::Error| DbErr::Custom(format!("invalid database URL: {e}"));
    match Backend::of(url) {
        Some(Backend::Postgres) => {
            let options = PgConnectOptions::from_str(url)
                .map_err(bad_url)?
                .application_name("aiwrapper-api");
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                .min_connections(0)
                .acquire_timeout(cfg.connect_timeout)
                .idle_timeout(cfg.idle_timeout)
                .connect_with(options)
                .await
                .map_err(|e| DbErr::Conn(sea_orm::RuntimeErr::SqlxError(e.into())))?;
            Ok(SqlxPostgresConnector::from_sqlx_postgres_pool(pool))
        }
        _ => {
            // WAL lets readers proceed while one writer commits; foreign keys are off by default
            // in SQLite and the cascades depend on them.
            let options = SqliteConnectOptions::from_str(url)
                .map_err(bad_url)?
                .foreign_keys(true)
                // So that REPLACE conflict resolution (which deletes) fires the append-only
                // delete triggers too.
                .pragma("recursive_triggers", "ON")
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(SQLITE_BUSY_TIMEOUT);
            let pool = SqlitePoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(cfg.connect_timeout)
                .idle_timeout(cfg.idle_timeout)
                .connect_with(options)
                .await
                .map_err(|e| DbErr::Conn(sea_orm::RuntimeErr::SqlxError(e.into())))?;
            Ok(SqlxSqliteConnector::from_sqlx_sqlite_pool(pool))
        }
    }
}
