//! Database connections: the request pool ([`Db`]) and the migration connection.
//!
//! Every statement the server runs on `DATABASE_URL` goes through [`Db`] or a [`Tx`] it began,
//! which pick the access path for `DATABASE_POOL_MODE`:
//!
//! * `direct` (SQLite, or PostgreSQL without a transaction-mode pooler): SeaORM over sqlx,
//!   prepared statements cached per connection (with their LIMIT in the text: [`limit`]).
//! * `transaction` (PgBouncer in transaction mode, Neon's `-pooler`): the simple query protocol
//!   with typed literals ([`inline`]), no statement cache, nothing that outlives a transaction.
//!   Transactions are ordinary `BEGIN`/`COMMIT`, which a transaction-mode pooler keeps on one
//!   server connection from start to end.
//!
//! Session-level work (migrations, DDL) opens its own connection on `DATABASE_URL_DIRECT`.

mod connect;
pub mod inline;
pub mod limit;

pub use connect::{
    DIRECT_APPLICATION_NAME, POOL_APPLICATION_NAME, connect, connect_direct, migrate,
    pending_migrations,
};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sea_orm::sqlx::postgres::PgPool;
use sea_orm::sqlx::{self, AssertSqlSafe, Postgres};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, ExecResult,
    QueryResult, RuntimeErr, Statement, TransactionTrait,
};
use tokio::sync::Mutex;

use crate::config::PoolMode;

/// The request pool: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct Db {
    path: Path,
    statements: Arc<AtomicU64>,
}

#[derive(Clone)]
enum Path {
    Orm(DatabaseConnection),
    Simple(PgPool),
}

/// A transaction begun on a [`Db`]. Dropped without [`Tx::commit`], it rolls back.
pub struct Tx {
    path: TxPath,
    statements: Arc<AtomicU64>,
}

enum TxPath {
    Orm(DatabaseTransaction),
    Simple(Mutex<sqlx::Transaction<'static, Postgres>>),
}

impl Db {
    /// Wrap a SeaORM connection (the `direct` path).
    pub fn orm(connection: DatabaseConnection) -> Db {
        Db {
            path: Path::Orm(connection),
            statements: Arc::default(),
        }
    }

    /// The pool mode this handle runs in.
    pub fn pool_mode(&self) -> PoolMode {
        match self.path {
            Path::Orm(_) => PoolMode::Direct,
            Path::Simple(_) => PoolMode::Transaction,
        }
    }

    /// Statements run through this pool since it opened (a metric; tests count with it).
    pub fn statement_counter(&self) -> Arc<AtomicU64> {
        self.statements.clone()
    }

    /// The same pool, counting its statements apart: background work (lease renewal, the
    /// stranded-call sweep, checkpoints) runs on its own timer and must not show up in the
    /// statements a request is seen to cost.
    pub fn counted_apart(&self) -> Db {
        Db {
            path: self.path.clone(),
            statements: Arc::default(),
        }
    }

    fn count(&self) {
        self.statements.fetch_add(1, Ordering::Relaxed);
    }

    /// Begin a transaction.
    pub async fn begin(&self) -> Result<Tx, DbErr> {
        self.count();
        let path = match &self.path {
            Path::Orm(c) => TxPath::Orm(c.begin().await?),
            Path::Simple(pool) => {
                TxPath::Simple(Mutex::new(pool.begin().await.map_err(acquire_err)?))
            }
        };
        Ok(Tx {
            path,
            statements: self.statements.clone(),
        })
    }

    /// Connections of the pool now: (idle, in use).
    pub fn pool_status(&self) -> (usize, usize) {
        fn of<DB: sqlx::Database>(pool: &sqlx::Pool<DB>) -> (usize, usize) {
            let idle = pool.num_idle();
            (idle, (pool.size() as usize).saturating_sub(idle))
        }
        match &self.path {
            Path::Simple(pool) => of(pool),
            Path::Orm(c) => match c.get_database_backend() {
                sea_orm::DatabaseBackend::Postgres => of(c.get_postgres_connection_pool()),
                sea_orm::DatabaseBackend::Sqlite => of(c.get_sqlite_connection_pool()),
                _ => (0, 0),
            },
        }
    }

    /// Check that the database answers.
    pub async fn ping(&self) -> Result<(), DbErr> {
        match &self.path {
            Path::Orm(c) => c.ping().await,
            Path::Simple(pool) => simple_one(pool, "SELECT 1".to_owned()).await.map(|_| ()),
        }
    }

    /// Close every connection of the pool.
    pub async fn close(&self) {
        match &self.path {
            Path::Orm(c) => {
                let _ = c.close_by_ref().await;
            }
            Path::Simple(pool) => pool.close().await,
        }
    }
}

impl Tx {
    fn count(&self) {
        self.statements.fetch_add(1, Ordering::Relaxed);
    }

    /// Commit the transaction.
    pub async fn commit(self) -> Result<(), DbErr> {
        self.count();
        traced("commit", async move {
            match self.path {
                TxPath::Orm(t) => t.commit().await,
                TxPath::Simple(t) => t.into_inner().commit().await.map_err(exec_err),
            }
        })
        .await
    }

    /// Roll the transaction back now (dropping it does so too, on the connection's next use).
    pub async fn rollback(self) -> Result<(), DbErr> {
        self.count();
        traced("rollback", async move {
            match self.path {
                TxPath::Orm(t) => t.rollback().await,
                TxPath::Simple(t) => t.into_inner().rollback().await.map_err(exec_err),
            }
        })
        .await
    }
}

/// Whether the database refused `e`'s statement for its values: a refusal that retrying the same
/// statement cannot fix (a value it cannot store, a constraint). Anything else (the database
/// unreachable, restarting, busy, out of connections or memory, a timeout, a lost race) may go
/// away, so callers that must eventually write retry it.
pub fn is_refusal(e: &DbErr) -> bool {
    match e {
        // The pooled path's renderer refused a value (a NUL, a date out of range).
        DbErr::Exec(RuntimeErr::Internal(_)) | DbErr::Query(RuntimeErr::Internal(_)) => true,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            match e.as_ref() {
                sqlx::Error::Encode(_) => true,
                sqlx::Error::Database(db) => {
                    let code = db.code();
                    let code = code.as_deref().unwrap_or_default();
                    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                        // TOOBIG, CONSTRAINT, MISMATCH, RANGE (with any extended code).
                        code.parse::<u32>()
                            .is_ok_and(|n| matches!(n & 0xff, 18 | 19 | 20 | 25))
                    } else {
                        // PostgreSQL: data exceptions (22), integrity constraints (23), a
                        // value over a program limit (54).
                        code.starts_with("22") || code.starts_with("23") || code.starts_with("54")
                    }
                }
                _ => false,
            }
        }
        _ => false,
    }
}

/// Run one statement (or transaction step) of `op` in a `db` span when traces are exported
/// (`crate::telemetry`); otherwise as it is, at no cost. The span names the operation, never
/// the statement (statements carry user text).
async fn traced<T>(op: &'static str, work: impl std::future::Future<Output = T>) -> T {
    use tracing::Instrument;
    if crate::telemetry::exporting() {
        work.instrument(tracing::info_span!(
            "db",
            otel.kind = "client",
            db.operation = op
        ))
        .await
    } else {
        work.await
    }
}

fn acquire_err(e: sqlx::Error) -> DbErr {
    match e {
        sqlx::Error::PoolTimedOut => {
            DbErr::ConnectionAcquire(sea_orm::error::ConnAcquireErr::Timeout)
        }
        sqlx::Error::PoolClosed => {
            DbErr::ConnectionAcquire(sea_orm::error::ConnAcquireErr::ConnectionClosed)
        }
        e => DbErr::Conn(RuntimeErr::SqlxError(e.into())),
    }
}

fn exec_err(e: sqlx::Error) -> DbErr {
    match e {
        e @ (sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed) => acquire_err(e),
        e => DbErr::Exec(RuntimeErr::SqlxError(e.into())),
    }
}

fn query_err(e: sqlx::Error) -> DbErr {
    match e {
        e @ (sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed) => acquire_err(e),
        e => DbErr::Query(RuntimeErr::SqlxError(e.into())),
    }
}

// The simple path: `sql` (no parameters left: see `inline`) as one simple-protocol `Query`.

async fn simple_all<'c, E>(executor: E, sql: String) -> Result<Vec<QueryResult>, DbErr>
where
    E: sqlx::Executor<'c, Database = Postgres>,
{
    let rows = sqlx::raw_sql(AssertSqlSafe(sql))
        .fetch_all(executor)
        .await
        .map_err(query_err)?;
    Ok(rows.into_iter().map(QueryResult::from).collect())
}

async fn simple_one<'c, E>(executor: E, sql: String) -> Result<Option<QueryResult>, DbErr>
where
    E: sqlx::Executor<'c, Database = Postgres>,
{
    let row = sqlx::raw_sql(AssertSqlSafe(sql))
        .fetch_optional(executor)
        .await
        .map_err(query_err)?;
    Ok(row.map(QueryResult::from))
}

async fn simple_execute<'c, E>(executor: E, sql: String) -> Result<ExecResult, DbErr>
where
    E: sqlx::Executor<'c, Database = Postgres>,
{
    sqlx::raw_sql(AssertSqlSafe(sql))
        .execute(executor)
        .await
        .map(ExecResult::from)
        .map_err(exec_err)
}

#[async_trait::async_trait]
impl ConnectionTrait for Db {
    fn get_database_backend(&self) -> DbBackend {
        match &self.path {
            Path::Orm(c) => c.get_database_backend(),
            Path::Simple(_) => DbBackend::Postgres,
        }
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        self.count();
        traced("execute_raw", async move {
            match &self.path {
                Path::Orm(c) => c.execute_raw(stmt).await,
                Path::Simple(pool) => simple_execute(pool, inline::render(&stmt)?).await,
            }
        })
        .await
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        self.count();
        traced("execute_unprepared", async move {
            match &self.path {
                Path::Orm(c) => c.execute_unprepared(sql).await,
                Path::Simple(pool) => simple_execute(pool, sql.to_owned()).await,
            }
        })
        .await
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        self.count();
        traced("query_one_raw", async move {
            match &self.path {
                Path::Orm(c) => c.query_one_raw(limit::written(stmt)).await,
                Path::Simple(pool) => simple_one(pool, inline::render(&stmt)?).await,
            }
        })
        .await
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        self.count();
        traced("query_all_raw", async move {
            match &self.path {
                Path::Orm(c) => c.query_all_raw(limit::written(stmt)).await,
                Path::Simple(pool) => simple_all(pool, inline::render(&stmt)?).await,
            }
        })
        .await
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for Tx {
    fn get_database_backend(&self) -> DbBackend {
        match &self.path {
            TxPath::Orm(t) => t.get_database_backend(),
            TxPath::Simple(_) => DbBackend::Postgres,
        }
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        self.count();
        traced("execute_raw", async move {
            match &self.path {
                TxPath::Orm(t) => t.execute_raw(stmt).await,
                TxPath::Simple(t) => {
                    let sql = inline::render(&stmt)?;
                    simple_execute(&mut **t.lock().await, sql).await
                }
            }
        })
        .await
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        self.count();
        traced("execute_unprepared", async move {
            match &self.path {
                TxPath::Orm(t) => t.execute_unprepared(sql).await,
                TxPath::Simple(t) => simple_execute(&mut **t.lock().await, sql.to_owned()).await,
            }
        })
        .await
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        self.count();
        traced("query_one_raw", async move {
            match &self.path {
                TxPath::Orm(t) => t.query_one_raw(limit::written(stmt)).await,
                TxPath::Simple(t) => {
                    let sql = inline::render(&stmt)?;
                    simple_one(&mut **t.lock().await, sql).await
                }
            }
        })
        .await
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        self.count();
        traced("query_all_raw", async move {
            match &self.path {
                TxPath::Orm(t) => t.query_all_raw(limit::written(stmt)).await,
                TxPath::Simple(t) => {
                    let sql = inline::render(&stmt)?;
                    simple_all(&mut **t.lock().await, sql).await
                }
            }
        })
        .await
    }
}
