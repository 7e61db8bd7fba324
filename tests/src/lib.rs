//! Integration-test harness: every test gets its own fresh database and its own server on a
//! random port; nothing is shared between tests but (on PostgreSQL) the server process.
//!
//! Which database: `TEST_BACKEND=sqlite` (the default; nothing to install) or
//! `TEST_BACKEND=postgres`. On PostgreSQL, `TEST_DATABASE_URL` names a server to create the
//! per-test databases on (any database on it, used as the admin connection); without it, the
//! harness starts a throwaway cluster from the installed server binaries (see [`pg_cluster`]).
//! If the asked-for backend cannot be had, tests fail; they never fall back or skip.
//!
//! `TEST_PGBOUNCER=/path/to/pgbouncer` puts a PgBouncer in transaction mode in front of that
//! server (see [`pgbouncer`]): servers under test then get it as `DATABASE_URL`, the server
//! itself as `DATABASE_URL_DIRECT`, and `DATABASE_POOL_MODE=transaction`, as on Neon.
//! `TEST_PGBOUNCER_PREPARED_STATEMENTS=N` sets its `max_prepared_statements` (PgBouncer ≥ 1.21).
//! `TEST_POOL_MODE=direct|transaction` overrides the pool mode servers under test get.
//!
//! A test starts its server with [`spawn_app`], or [`spawn_app_with_env`] for extra environment
//! variables; [`books`] has the assertions that the call pipeline's rows balance.

pub mod books;
mod database;
pub mod pg_cluster;
pub mod pgbouncer;
pub mod ws;

pub use books::{assert_book_entry, assert_books_balance, assert_rows_balance};
pub use database::{TestBackend, TestDatabase, backend, postgres_admin_url};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::OnceLock;

use api::app::Application;
use api::config::Config;
use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// Logs are quiet unless `TEST_LOG` is set (then it is the filter, e.g. `TEST_LOG=debug`).
fn init_logging() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        if let Ok(filter) = std::env::var("TEST_LOG") {
            let filter = if filter.is_empty() || filter == "1" {
                "info".to_owned()
            } else {
                filter
            };
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
    });
}

/// A running server on its own database.
pub struct TestApp {
    pub addr: SocketAddr,
    /// Where `GET /metrics` is served, when the test set `METRICS_ADDR`.
    pub metrics_addr: Option<SocketAddr>,
    /// `http://127.0.0.1:PORT`
    pub base_url: String,
    /// A connection to the same database, for arranging and checking rows directly.
    pub db: api::db::Db,
    pub database: TestDatabase,
    /// The app's OpenAI-compatible upstream: a real local server, its stats inspectable.
    pub upstream: upstream::LocalUpstream,
    calls: std::sync::Arc<api::calls::Calls>,
    statements: std::sync::Arc<std::sync::atomic::AtomicU64>,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestApp {
    /// Return once some session of this test's database waits for a lock (PostgreSQL's
    /// `pg_stat_activity`): the moment a statement under test is blocked, without a sleep.
    pub async fn until_a_session_waits_for_a_lock(&self) {
        let waiting = Statement::from_string(
            DbBackend::Postgres,
            "SELECT count(*)::int8 FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        );
        loop {
            let row = self.db.query_one_raw(waiting.clone()).await;
            let n = row
                .expect("pg_stat_activity")
                .and_then(|r| r.try_get_by_index::<i64>(0).ok())
                .unwrap_or(0);
            if n > 0 {
                return;
            }
            tokio::task::yield_now().await;
        }
    }

    /// Stop accepting, let in-flight requests finish, and wait for the server to exit.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("server task")
                .expect("server exits cleanly");
        }
    }

    /// SQL statements the server has run (its metric counter).
    pub fn statements(&self) -> std::sync::Arc<std::sync::atomic::AtomicU64> {
        self.statements.clone()
    }

    /// The server's call pipeline (to wait for calls to be finalised).
    pub fn app_calls(&self) -> std::sync::Arc<api::calls::Calls> {
        self.calls.clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// A connection of the test's own on the direct endpoint (for migrations and DDL, which
    /// do not belong on a transaction-mode pooler).
    pub async fn direct(&self) -> sea_orm::DatabaseConnection {
        Database::connect(self.database.direct_url())
            .await
            .expect("connect to the direct endpoint")
    }

    /// The backend this app's database is on, as SeaORM names it.
    pub fn db_backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    /// Run one statement written for this backend.
    pub async fn exec(&self, sql: &str) -> Result<sea_orm::ExecResult, sea_orm::DbErr> {
        self.db
            .execute_raw(Statement::from_string(self.db_backend(), sql.to_owned()))
            .await
    }
}

/// A signed-up user, as the tests see them.
#[derive(Clone, Debug)]
pub struct TestUser {
    pub id: String,
    pub email: String,
    pub password: String,
    pub token: String,
}

impl TestApp {
    /// POST a GraphQL operation (no credentials unless `token` is given); the JSON body.
    pub async fn gql(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let mut req = self
            .http
            .post(self.url("/graphql"))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let res = req.send().await.expect("POST /graphql");
        res.json().await.expect("a JSON body")
    }

    /// Sign up a user through the API and return their credentials and token.
    pub async fn sign_up(&self, email: &str) -> TestUser {
        sign_up_at(&self.http, &self.base_url, email).await
    }

    /// A client that keeps cookies, like a browser.
    pub fn browser(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("build the HTTP client")
    }
}

/// Sign up a user on the server at `base_url` (`http://HOST:PORT`): their credentials and token.
pub async fn sign_up_at(http: &reqwest::Client, base_url: &str, email: &str) -> TestUser {
    let password = "correct horse battery staple".to_owned();
    let body: Value = http
        .post(format!("{base_url}/graphql"))
        .json(&json!({
            "query": "mutation($i: SignUpInput!) { signUp(input: $i) { token user { id email } } }",
            "variables": { "i": { "email": email, "password": password, "name": "Test User" } },
        }))
        .send()
        .await
        .expect("POST /graphql")
        .json()
        .await
        .expect("a JSON body");
    let payload = &body["data"]["signUp"];
    assert!(payload.is_object(), "signUp failed: {body}");
    TestUser {
        id: payload["user"]["id"].as_str().unwrap().to_owned(),
        email: payload["user"]["email"].as_str().unwrap().to_owned(),
        password,
        token: payload["token"].as_str().unwrap().to_owned(),
    }
}

/// The session cookie value Better Auth would write for `token` with the test secret:
/// `TOKEN.BASE64(HMAC-SHA256(secret, TOKEN))`, URL-encoded, computed independently of the server.
pub fn signed_cookie_value(token: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(TEST_SECRET.as_bytes()).expect("any key length");
    mac.update(token.as_bytes());
    let sig = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        mac.finalize().into_bytes(),
    );
    format!(
        "{token}.{}",
        sig.replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D")
    )
}

/// The `extensions.code` of the first error in a GraphQL response.
pub fn error_code(body: &Value) -> Option<&str> {
    body["errors"][0]["extensions"]["code"].as_str()
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The `BETTER_AUTH_SECRET` test servers use.
pub const TEST_SECRET: &str = "test-secret-test-secret-test-secret-0123";

/// The variables every test server starts with; tests add or override entries.
pub fn base_vars(database: &TestDatabase) -> HashMap<String, String> {
    let mut vars: HashMap<String, String> = [
        ("HOST", "127.0.0.1"),
        ("PORT", "0"),
        ("DATABASE_URL", database.url.as_str()),
        ("DATABASE_MAX_CONNECTIONS", "5"),
        ("BETTER_AUTH_SECRET", TEST_SECRET),
        // Every test client comes from 127.0.0.1; the throttling test sets its own limit.
        ("AUTH_RATE_LIMIT_MAX", "100000"),
        // One test user often runs many calls at once; the limit tests (abuse.rs) set their own.
        ("USER_MAX_CONCURRENT_CALLS", "0"),
        ("USER_CALLS_PER_MINUTE", "0"),
        // Many sockets per user and from 127.0.0.1; the WebSocket limit tests set their own.
        ("WS_MAX_SOCKETS_PER_USER", "0"),
        ("WS_MAX_SOCKETS_PER_IP", "0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    if let Some(direct) = &database.direct {
        vars.insert("DATABASE_URL_DIRECT".into(), direct.clone());
    }
    if database.pooled {
        vars.insert("DATABASE_POOL_MODE".into(), "transaction".into());
    }
    // To see what the other access path does behind the same pooler.
    if let Ok(mode) = std::env::var("TEST_POOL_MODE") {
        vars.insert("DATABASE_POOL_MODE".into(), mode);
    }
    vars
}

/// A server whose request pool logs in as the role that owns the schema (on PostgreSQL,
/// directly, not through PgBouncer): for tests of what the database refuses even its owner.
pub async fn spawn_app_as_owner() -> TestApp {
    spawn_app_as_owner_with(|_| {}).await
}

/// [`spawn_app_as_owner`], with `customize` applied to its environment afterwards.
pub async fn spawn_app_as_owner_with(
    customize: impl FnOnce(&mut HashMap<String, String>),
) -> TestApp {
    spawn_app_with(|vars| {
        if let Some(direct) = vars.remove("DATABASE_URL_DIRECT") {
            vars.insert("DATABASE_URL".into(), direct);
            vars.remove("DATABASE_POOL_MODE");
        }
        customize(vars);
    })
    .await
}

/// A server with default test configuration on a fresh database.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// A server on a fresh database, with `customize` applied to its environment first.
pub async fn spawn_app_with(customize: impl FnOnce(&mut HashMap<String, String>)) -> TestApp {
    let database = TestDatabase::create().await;
    spawn_app_on(database, customize).await
}

/// A server on a fresh database, with `vars` set in (or overriding) its environment.
pub async fn spawn_app_with_env(vars: &[(&str, &str)]) -> TestApp {
    spawn_app_on_with_env(TestDatabase::create().await, vars).await
}

/// A server on the given database, with `vars` set in (or overriding) its environment.
pub async fn spawn_app_on_with_env(database: TestDatabase, vars: &[(&str, &str)]) -> TestApp {
    spawn_app_on(database, |env| {
        for (key, value) in vars {
            env.insert((*key).to_owned(), (*value).to_owned());
        }
    })
    .await
}

/// A server on the given database.
pub async fn spawn_app_on(
    database: TestDatabase,
    customize: impl FnOnce(&mut HashMap<String, String>),
) -> TestApp {
    init_logging();
    let upstream = upstream::spawn(upstream::UpstreamConfig {
        pace: std::time::Duration::ZERO,
        default_tokens: 8,
    })
    .await
    .expect("start the local upstream");
    let mut vars = base_vars(&database);
    vars.insert("OPENAI_BASE_URL".into(), upstream.base_url());
    customize(&mut vars);
    let config = Config::from_vars(vars).unwrap_or_else(|e| panic!("{e}"));
    let app = Application::build(config)
        .await
        .expect("build the application");
    let addr = app.local_addr();
    let metrics_addr = app.metrics_addr();
    let db = app.state().db.clone();
    let calls = app.state().calls.clone();
    let statements = app.state().statements.clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    TestApp {
        addr,
        metrics_addr,
        base_url: format!("http://{addr}"),
        db,
        database,
        upstream,
        calls,
        statements,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("build the HTTP client"),
        stop: Some(stop),
        server: Some(server),
    }
}

/// The server binary `exe` (the `test-server` binary: pass `env!("CARGO_BIN_EXE_test-server")`)
/// as a child process with exactly `vars` (and `PATH`): killed when dropped, dead when this
/// process dies. Its address once it listens, the stdout lines (its logs) it printed before,
/// and the later ones as they come; the lines are read to the end whether or not anyone
/// receives them.
pub async fn start_server_process(
    exe: &str,
    vars: HashMap<String, String>,
) -> (
    tokio::process::Child,
    SocketAddr,
    Vec<String>,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(exe)
        .env_clear()
        .envs(vars)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start the server process");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let _ = tx.send(line);
        }
    });
    let mut early = Vec::new();
    let addr = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        loop {
            let line = rx.recv().await.expect("the server printed its address");
            if let Some(addr) = line.strip_prefix("LISTENING ") {
                break addr.parse().expect("an address");
            }
            early.push(line);
        }
    })
    .await
    .expect("the server started");
    (child, addr, early, rx)
}

/// What an npm-driven script in `tests/interop` reported.
pub struct NodeRun {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Run `node <script> <url>` in `tests/interop`, which must have `package` installed (`npm ci`
/// there); its output is printed too, so `--nocapture` shows the report.
pub async fn run_interop(script: &str, package: &str, url: String) -> NodeRun {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("interop");
    assert!(
        dir.join("node_modules").join(package).exists(),
        "{package} is not installed: run `npm ci` in {}",
        dir.display()
    );
    let script = script.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .arg(script)
            .arg(url)
            .current_dir(dir)
            .output()
            .expect("run node (Node.js 20 or later must be installed)")
    })
    .await
    .unwrap();
    let run = NodeRun {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    #[allow(clippy::print_stdout)] // the report, for --nocapture
    {
        println!("{}", run.stdout);
    }
    run
}
