//! Opening connections: the request pool on `DATABASE_URL` (PostgreSQL or SQLite, on the access
//! path `DATABASE_POOL_MODE` names) and the direct connection for migrations and operator work.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sea_orm::sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sea_orm::sqlx::{self, ConnectOptions as _};
use sea_orm::{DatabaseConnection, DbErr, RuntimeErr, SqlxPostgresConnector, SqlxSqliteConnector};

use super::{Db, Path};
use crate::config::{Backend, DatabaseConfig, PoolMode};

/// How long a SQLite writer waits for the file lock before giving up.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// `application_name` of the request pool's connections (what `pg_stat_activity` shows).
pub const POOL_APPLICATION_NAME: &str = "aiwrapper-api";
/// `application_name` of the direct connection used for migrations.
pub const DIRECT_APPLICATION_NAME: &str = "aiwrapper-migrate";

/// Open the request pool on `DATABASE_URL`, on the access path for `DATABASE_POOL_MODE`.
pub async fn connect(cfg: &DatabaseConfig) -> Result<Db, DbErr> {
    let url = cfg.url.expose();
    match Backend::of(url) {
        Some(Backend::Postgres) => {
            let pool = pg_pool(url, cfg, cfg.max_connections, POOL_APPLICATION_NAME).await?;
            Ok(match cfg.pool_mode {
                PoolMode::Direct => Db::orm(SqlxPostgresConnector::from_sqlx_postgres_pool(pool)),
                PoolMode::Transaction => Db {
                    path: Path::Simple(pool),
                    statements: Arc::default(),
                },
            })
        }
        _ => Ok(Db::orm(open_sqlite(url, cfg, cfg.max_connections).await?)),
    }
}

/// A SeaORM connection on the direct endpoint (`DATABASE_URL_DIRECT`, else `DATABASE_URL`),
/// for session-level work: migrations and operator commands.
pub async fn connect_direct(
    cfg: &DatabaseConfig,
    max_connections: u32,
) -> Result<DatabaseConnection, DbErr> {
    let url = cfg.direct_url().expose();
    match Backend::of(url) {
        Some(Backend::Postgres) => Ok(SqlxPostgresConnector::from_sqlx_postgres_pool(
            pg_pool(url, cfg, max_connections, DIRECT_APPLICATION_NAME).await?,
        )),
        _ => open_sqlite(url, cfg, max_connections).await,
    }
}

/// Apply pending migrations over the direct endpoint, on a connection of its own that is
/// closed afterwards: DDL is session-level work that does not belong on a transaction-mode
/// pooler.
pub async fn migrate(cfg: &DatabaseConfig) -> Result<(), DbErr> {
    let direct = connect_direct(cfg, 1).await?;
    let result = Migrator::up(&direct, None).await;
    direct.close().await?;
    result
}

/// Names of migrations not yet applied (without creating the migrations table).
pub async fn pending_migrations(db: &Db) -> Result<Vec<String>, DbErr> {
    Ok(Migrator::get_pending_migrations_read_only(db)
        .await?
        .iter()
        .map(|m| m.name().to_owned())
        .collect())
}

#[allow(clippy::needless_pass_by_value)] // the shape map_err wants
fn bad_url(e: sqlx::Error) -> DbErr {
    DbErr::Custom(format!("invalid database URL: {e}"))
}

/// A PostgreSQL pool; it opens one connection first, so a wrong URL fails at start-up.
async fn pg_pool(
    url: &str,
    cfg: &DatabaseConfig,
    max_connections: u32,
    application_name: &str,
) -> Result<PgPool, DbErr> {
    let mut options = PgConnectOptions::from_str(url)
        .map_err(bad_url)?
        .application_name(application_name);
    if cfg.pool_mode == PoolMode::Transaction {
        // Statements on this path carry their values in the SQL text (session tokens, hashes,
        // prompts): sqlx must not log them (it logs slow statements at WARN by default).
        options = options.disable_statement_logging();
    }
    // sqlx's health check on acquire is a lone Sync: a round trip to the database before
    // every statement (SeaORM takes a connection per statement), on top of the one sqlx
    // makes when it takes the connection back. Behind a transaction-mode pooler it is skipped
    // (the pooler checks its own server connections). On a direct connection it is made only
    // for a connection idle for `DATABASE_PING_AFTER_IDLE_MS` (500 ms), long enough to have
    // been cut meanwhile. One used more recently is trusted: were it cut in that half second,
    // its statement fails as it would had the cut come just after a ping. HikariCP skips its
    // own check for connections used in the last 500 ms (`aliveBypassWindowMs`).
    let mut pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(0)
        .acquire_timeout(cfg.connect_timeout)
        .idle_timeout(cfg.idle_timeout)
        .test_before_acquire(false);
    if cfg.pool_mode == PoolMode::Direct {
        let ping_after_idle = cfg.ping_after_idle;
        pool = pool.before_acquire(move |conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= ping_after_idle {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        });
    }
    pool.connect_with(options)
        .await
        .map_err(|e| DbErr::Conn(RuntimeErr::SqlxError(e.into())))
}

async fn open_sqlite(
    url: &str,
    cfg: &DatabaseConfig,
    max_connections: u32,
) -> Result<DatabaseConnection, DbErr> {
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
        .map_err(|e| DbErr::Conn(RuntimeErr::SqlxError(e.into())))?;
    Ok(SqlxSqliteConnector::from_sqlx_sqlite_pool(pool))
}
