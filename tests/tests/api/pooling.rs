//! The request pool's access path: correct values, nothing session-level, and real API traffic
//! in parallel without a database error. Run behind PgBouncer with `TEST_PGBOUNCER` (the CI
//! does, with 1.18 and with 1.24 + `max_prepared_statements`); see the `tests` crate docs.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use entity::prelude::*;
use entity::{call_reservations, prompt_logs};
use futures_util::future::join_all;
use sea_orm::sea_query::{Expr, Query, Value};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{Value as Json, json};
use tests::ws::GqlWs;
use tests::{TestApp, TestBackend, TestDatabase, TestUser, backend, spawn_app, spawn_app_on};

/// `SELECT <value>` on the request pool, read back as `T`.
async fn round_trip<T>(app: &TestApp, value: impl Into<Value>) -> T
where
    T: sea_orm::TryGetable,
{
    let value = value.into();
    // One statement text per kind of value: sqlx's statement cache is keyed by the text
    // alone, so `SELECT $1` prepared for a string would be reused for an integer.
    let kind = format!("{value:?}");
    let kind = kind.split('(').next().unwrap_or_default().to_owned();
    let select = Query::select()
        .expr_as(
            Expr::val(value),
            sea_orm::sea_query::Alias::new(format!("v_{kind}")),
        )
        .to_owned();
    let row = app
        .db
        .query_one(&select)
        .await
        .unwrap_or_else(|e| panic!("SELECT a value: {e}"))
        .expect("a row");
    row.try_get_by_index::<T>(0).expect("decode the value")
}

#[tokio::test]
async fn awkward_values_survive_the_request_pool_unchanged() {
    let app = spawn_app().await;
    for text in [
        "a",
        "",
        "it's",
        "''",
        "back\\slash \\' \\\\",
        "E'not an escape'",
        "$1 $2 $$ $tag$ dollar $tag$",
        "-- not a comment",
        "/* not a comment */ */ /*",
        "\"quoted\" identifier",
        "; DROP TABLE \"user\"; --",
        "naïve 日本語 👩‍💻 \u{202e}rtl",
        "line\nbreak\r\ttab",
    ] {
        let back: String = round_trip(&app, text).await;
        assert_eq!(back, text);
    }
    for n in [0i64, -1, i64::MIN, i64::MAX] {
        assert_eq!(round_trip::<i64>(&app, n).await, n);
    }
    for n in [0i32, -5, i32::MIN, i32::MAX] {
        assert_eq!(round_trip::<i32>(&app, n).await, n);
    }
    for f in [0.1f64, -2.5e-300, 1.7976931348623157e308, 5e-324] {
        assert_eq!(round_trip::<f64>(&app, f).await, f);
    }
    assert!(round_trip::<bool>(&app, true).await);
    assert!(!round_trip::<bool>(&app, false).await);
    assert_eq!(
        round_trip::<Option<String>>(&app, Option::<String>::None).await,
        None
    );
    let id = uuid::Uuid::now_v7();
    assert_eq!(round_trip::<uuid::Uuid>(&app, id).await, id);
    let t = chrono::DateTime::parse_from_rfc3339("2026-11-26T23:59:59.999999Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    assert_eq!(
        round_trip::<chrono::DateTime<chrono::Utc>>(&app, t).await,
        t
    );
    let bytes: Vec<u8> = (0..=255).collect();
    assert_eq!(round_trip::<Vec<u8>>(&app, bytes.clone()).await, bytes);
    let doc = json!({ "q": "it's \\ \"x\" $1", "n": [1, 2.5, null], "u": "日本" });
    assert_eq!(round_trip::<Json>(&app, doc.clone()).await, doc);

    // And through the API: a name with every awkward character is stored as given.
    let name = "O'Brien \\ $1 -- /* \"x\" */ 👩‍💻";
    let body = app
        .gql(
            None,
            "mutation($i: SignUpInput!) { signUp(input: $i) { user { name } } }",
            json!({ "i": { "email": "ob@example.com", "password": "correct horse battery staple", "name": name } }),
        )
        .await;
    assert_eq!(body["data"]["signUp"]["user"]["name"], name, "{body}");
    if backend() == TestBackend::Postgres {
        // PostgreSQL stores no NUL in text, prepared or not: a clear error, not a cut string.
        let select = Query::select().expr(Expr::val("a\0b")).to_owned();
        assert!(app.db.query_one(&select).await.is_err());
    }
    app.shutdown().await;
}

const STREAM: &str = "subscription($i: CompletionInput!) { completionStream(input: $i) { delta done log { id status } } }";
const COMPLETE: &str =
    "mutation($i: CompletionInput!) { complete(input: $i) { id status completionTokens } }";
const SIGN_IN: &str = "mutation($i: SignInInput!) { signIn(input: $i) { token } }";
const HISTORY: &str = "query { history(first: 20) { nodes { id status user { id profile { tokensUsedThisMonth } } } pageInfo { hasNextPage } } }";
const USAGE: &str = "query { usage { calls promptTokens completionTokens costMicrocents byModel { model calls } } me { profile { tokensUsedThisMonth } } }";

/// What one client did: requests sent and anything that went wrong.
#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    errors: Mutex<Vec<String>>,
}

impl Tally {
    fn check(&self, what: &str, ok: bool, detail: &dyn std::fmt::Display) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.errors
                .lock()
                .unwrap()
                .push(format!("{what}: {detail}"));
        }
    }
}

/// One round of a client's traffic: sign in, a completion over HTTP, one streamed over a
/// WebSocket, a history page with nested user and profile, and the usage summary. `calls` is
/// how many calls this user has made before the round.
async fn round(app: &TestApp, user: &TestUser, calls: u64, tally: &Tally) {
    let body = app
        .gql(
            None,
            SIGN_IN,
            json!({ "i": { "email": user.email, "password": user.password } }),
        )
        .await;
    tally.check("signIn", body["data"]["signIn"]["token"].is_string(), &body);

    let body = app
        .gql(
            Some(&user.token),
            COMPLETE,
            json!({ "i": { "prompt": "hello" } }),
        )
        .await;
    tally.check(
        "complete",
        body["data"]["complete"]["status"] == "OK",
        &body,
    );

    let mut ws = GqlWs::connect(app, Some(&user.token)).await;
    ws.subscribe(
        "s",
        STREAM,
        json!({ "i": { "prompt": "@@tokens=12 stream" } }),
    )
    .await;
    let (events, error) = ws.collect("s").await;
    let last = events.last().cloned().unwrap_or_default();
    // Deltas waiting together go out as one event: the text is what is checked.
    let text: String = events
        .iter()
        .filter_map(|e| e["data"]["completionStream"]["delta"].as_str())
        .collect();
    tally.check(
        "completionStream",
        error.is_none()
            && events.iter().all(|e| e["errors"].is_null())
            && last["data"]["completionStream"]["done"] == true
            && last["data"]["completionStream"]["log"]["status"] == "OK"
            && text == upstream::answer("@@tokens=12 stream", 12),
        &format!("{events:?} {error:?}"),
    );
    ws.drop_connection().await;

    let body = app.gql(Some(&user.token), HISTORY, json!({})).await;
    let nodes = body["data"]["history"]["nodes"].as_array();
    tally.check(
        "history",
        nodes.is_some_and(|n| {
            n.len() as u64 == calls + 2 && n.iter().all(|l| l["user"]["id"] == user.id.as_str())
        }),
        &body,
    );

    let body = app.gql(Some(&user.token), USAGE, json!({})).await;
    tally.check(
        "usage",
        body["data"]["usage"]["calls"] == calls + 2
            && body["data"]["me"]["profile"]["tokensUsedThisMonth"].is_string(),
        &body,
    );
}

/// Statements this server's request pool sent, from the PostgreSQL server's own log (the
/// harness's cluster logs `database|application|` on every line).
fn pool_statements(database: &TestDatabase) -> Vec<String> {
    let app_prefix = format!("{}|", api::db::POOL_APPLICATION_NAME);
    tests::pg_cluster::server_log(&database.name)
        .into_iter()
        .filter_map(|l| l.strip_prefix(&app_prefix).map(str::to_owned))
        .collect()
}

/// Wait until everything logged before now is in the harness's copy of the server log: run a
/// marker statement and wait for its line (log lines reach the pipe in the order they are
/// written, and ours were written before the marker ran).
async fn flush_server_log(app: &TestApp) {
    let marker = format!("log-marker-{}", uuid::Uuid::new_v4().simple());
    let direct = app.direct().await;
    direct
        .execute_unprepared(&format!("DO $$ BEGIN RAISE LOG '{marker}'; END $$"))
        .await
        .unwrap();
    direct.close().await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !tests::pg_cluster::server_log(&app.database.name)
        .iter()
        .any(|l| l.contains(&marker))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the marker never reached the server log"
        );
        tokio::task::yield_now().await;
    }
}

/// A statement that leaves state on the server connection beyond its transaction, which a
/// transaction-mode pooler would hand to another client.
fn session_level(statement: &str) -> bool {
    let s = statement.trim_start().to_ascii_uppercase();
    let word = |w: &str| {
        s.strip_prefix(w).is_some_and(|rest| {
            rest.is_empty() || !rest.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        })
    };
    [
        "LISTEN",
        "UNLISTEN",
        "PREPARE",
        "EXECUTE",
        "DEALLOCATE",
        "DECLARE",
        "FETCH",
        "MOVE",
        "CLOSE",
        "LOAD",
        "DISCARD",
        "RESET",
    ]
    .iter()
    .any(|w| word(w))
        || (word("SET") && !(s.starts_with("SET LOCAL") || s.starts_with("SET TRANSACTION")))
        || s.contains("CREATE TEMP")
        || s.contains("PG_ADVISORY_LOCK")
        || s.contains("PG_TRY_ADVISORY_LOCK")
        || s.contains("PG_ADVISORY_UNLOCK")
        || s.contains("SET_CONFIG(")
        || s.contains("WITH HOLD")
}

#[test]
fn session_level_statements_are_recognised() {
    for s in [
        "LISTEN calls",
        "set search_path = x",
        "SET SESSION statement_timeout = 0",
        "select pg_advisory_lock(1)",
        "SELECT pg_try_advisory_lock(1)",
        "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
        "PREPARE p AS SELECT 1",
        "CREATE TEMP TABLE t (x int)",
        "SELECT set_config('a.b', 'c', false)",
        "DISCARD ALL",
    ] {
        assert!(session_level(s), "{s}");
    }
    for s in [
        "SET LOCAL statement_timeout = 0",
        "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        "SELECT pg_advisory_xact_lock(1)",
        "SELECT \"settings\" FROM x",
        "BEGIN",
        "COMMIT",
        "SELECT 1",
        "INSERT INTO \"prompt_logs\" (\"id\") VALUES (CAST(E'x' AS uuid))",
    ] {
        assert!(!session_level(s), "{s}");
    }
}

/// On PostgreSQL, every statement of real API traffic, as the server logged it: none is
/// session-level, the request pool ran no DDL (migrations went over the direct endpoint),
/// and in transaction mode every one came as a self-contained simple-protocol query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_pool_sends_nothing_session_level() {
    if backend() != TestBackend::Postgres {
        eprintln!("PostgreSQL only (pooling does not apply to SQLite): nothing to check");
        return;
    }
    let database = TestDatabase::create().await;
    // Log every statement on this database (new sessions pick it up; none exists yet).
    let admin = sea_orm::Database::connect(tests::postgres_admin_url())
        .await
        .unwrap();
    admin
        .execute_unprepared(&format!(
            "ALTER DATABASE \"{}\" SET log_statement = 'all'",
            database.name
        ))
        .await
        .unwrap();
    admin.close().await.unwrap();
    let app = spawn_app_on(database, |_| {}).await;
    let transaction_mode = app.db.pool_mode() == api::config::PoolMode::Transaction;
    let user = app.sign_up("pool@example.com").await;
    let tally = Tally::default();
    round(&app, &user, 0, &tally).await;
    let errors = tally.errors.into_inner().unwrap();
    assert!(errors.is_empty(), "{errors:#?}");
    flush_server_log(&app).await;

    let lines = pool_statements(&app.database);
    let statements: Vec<&str> = lines
        .iter()
        .filter_map(|l| {
            l.split_once("LOG:  statement: ")
                .or_else(|| l.split_once("LOG:  execute "))
                .map(|(_, s)| s)
        })
        .collect();
    assert!(
        statements
            .iter()
            .any(|s| s.contains("INSERT INTO \"token_usage\"")),
        "the log shows the call's statements: {lines:#?}"
    );
    assert!(statements.len() >= 20, "{} statements", statements.len());
    let offending: Vec<&&str> = statements.iter().filter(|s| session_level(s)).collect();
    assert!(
        offending.is_empty(),
        "session-level statements on DATABASE_URL: {offending:#?}"
    );
    let ddl: Vec<&&str> = statements
        .iter()
        .filter(|s| {
            let s = s.trim_start().to_ascii_uppercase();
            s.starts_with("CREATE") || s.starts_with("ALTER") || s.starts_with("DROP")
        })
        .collect();
    assert!(ddl.is_empty(), "DDL on DATABASE_URL: {ddl:#?}");
    let errors: Vec<&String> = lines.iter().filter(|l| l.contains("ERROR:")).collect();
    assert!(errors.is_empty(), "database errors: {errors:#?}");
    if transaction_mode {
        let extended: Vec<&String> = lines
            .iter()
            .filter(|l| {
                l.contains("LOG:  execute ")
                    || l.contains("LOG:  parse ")
                    || l.contains("LOG:  bind ")
            })
            .collect();
        assert!(
            extended.is_empty(),
            "extended-protocol statements in transaction mode: {extended:#?}"
        );
    }
    // The migrations ran, and over the direct endpoint's own connection.
    let migrations = tests::pg_cluster::server_log(&app.database.name)
        .into_iter()
        .filter(|l| {
            l.starts_with(&format!("{}|", api::db::DIRECT_APPLICATION_NAME))
                && l.contains("CREATE TABLE")
        })
        .count();
    assert!(
        migrations >= 7,
        "{migrations} CREATE TABLE on the direct endpoint"
    );
    app.shutdown().await;
}

/// Real API traffic from 32 clients at once (sign-ins, completions over HTTP and streamed
/// over WebSockets, history pages, usage), then every row accounted for. Through a
/// transaction-mode PgBouncer this is the load the pooling issue asks for; the count is printed
/// (`--nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_api_traffic_finishes_without_a_database_error() {
    const CLIENTS: usize = 32;
    const ROUNDS: u64 = 2;
    let app = spawn_app().await;
    let tally = Tally::default();
    let users = join_all((0..CLIENTS).map(|i| {
        let app = &app;
        async move { app.sign_up(&format!("load{i}@example.com")).await }
    }))
    .await;
    // (`sign_up` asserts that each one worked.)
    tally.requests.fetch_add(CLIENTS as u64, Ordering::Relaxed);
    join_all(users.iter().map(|user| async {
        for r in 0..ROUNDS {
            round(&app, user, 2 * r, &tally).await;
        }
    }))
    .await;
    let requests = tally.requests.load(Ordering::Relaxed);
    let errors = tally.errors.into_inner().unwrap();

    let calls = CLIENTS as u64 * ROUNDS * 2;
    let logs = PromptLogs::find().count(&app.db).await.unwrap();
    let usage = TokenUsage::find().count(&app.db).await.unwrap();
    let links = PromptLogUsage::find().count(&app.db).await.unwrap();
    let in_flight = PromptLogs::find()
        .filter(prompt_logs::Column::Completion.is_null())
        .count(&app.db)
        .await
        .unwrap();
    let reservations = call_reservations::Entity::find()
        .count(&app.db)
        .await
        .unwrap();
    let mode = match backend() {
        TestBackend::Sqlite => "SQLite".to_owned(),
        TestBackend::Postgres => format!(
            "PostgreSQL, {:?} pool mode{}",
            app.db.pool_mode(),
            std::env::var("TEST_PGBOUNCER")
                .map(|b| format!(", through {b}"))
                .unwrap_or_default()
        ),
    };
    let db_errors = if backend() == TestBackend::Postgres {
        flush_server_log(&app).await;
        tests::pg_cluster::server_log(&app.database.name)
            .into_iter()
            .filter(|l| l.contains("ERROR:"))
            .collect()
    } else {
        Vec::new()
    };
    eprintln!(
        "load ({mode}): {requests} requests and {calls} upstream calls from {CLIENTS} clients, \
         {} request errors, {} database errors logged by the server",
        errors.len(),
        db_errors.len()
    );
    assert!(errors.is_empty(), "{errors:#?}");
    assert!(db_errors.is_empty(), "{db_errors:#?}");
    assert_eq!(requests, CLIENTS as u64 * (1 + ROUNDS * 5));
    assert_eq!(
        (logs, usage, links),
        (calls, calls, calls),
        "one log and one usage row per call"
    );
    assert_eq!((in_flight, reservations), (0, 0), "nothing left in flight");
    assert_eq!(app.upstream.stats.finished.load(Ordering::SeqCst), calls);
    app.shutdown().await;
}

/// The pooled path's literals are ASCII, so a session in a client-only encoding (SJIS, where a
/// multibyte character's second byte may be `\`) with `backslash_quote = on` cannot misread
/// them. The control shows the setup is a real attack: the same value quoted the old way
/// (UTF-8 text with only `\` and `'` doubled) runs the payload's `DROP TABLE`.
#[tokio::test]
async fn pooled_literals_cannot_be_misread_in_a_client_only_encoding() {
    use sea_orm::sqlx::{self, AssertSqlSafe, Connection};
    if backend() != TestBackend::Postgres {
        eprintln!("PostgreSQL only (the literal renderer serves the PostgreSQL pooled path)");
        return;
    }
    let database = TestDatabase::create().await;
    let mut conn = sqlx::PgConnection::connect(database.direct_url())
        .await
        .expect("connect");
    let exec = |sql: String| sqlx::raw_sql(AssertSqlSafe(sql));
    exec("CREATE TABLE probe (v text); CREATE TABLE sentinel (); CREATE TABLE control ()".into())
        .execute(&mut conn)
        .await
        .unwrap();
    exec("SET client_encoding = 'SJIS'; SET backslash_quote = on".into())
        .execute(&mut conn)
        .await
        .unwrap();
    // U+00C1 is C3 81 in UTF-8; in SJIS, C3 is a character and 81 a lead byte that takes the
    // next byte, the backslash that was to escape the quote.
    let payload = |table: &str| format!("Á\\' AS text)); DROP TABLE {table}; --");

    // The control: the naive quoting, sent as the same kind of simple query.
    let naive = format!(
        "INSERT INTO probe (v) VALUES (CAST(E'{}' AS text))",
        payload("control").replace('\\', "\\\\").replace('\'', "''")
    );
    exec(naive).execute(&mut conn).await.unwrap();

    // The renderer, on the same session.
    let value = payload("sentinel");
    let stmt = sea_orm::Statement::from_sql_and_values(
        sea_orm::DbBackend::Postgres,
        "INSERT INTO probe (v) VALUES ($1)",
        [Value::from(value.clone())],
    );
    let sql = api::db::inline::render(&stmt).expect("render");
    assert!(sql.is_ascii(), "a rendered statement is ASCII: {sql}");
    exec(sql)
        .execute(&mut conn)
        .await
        .expect("the rendered INSERT");
    conn.close().await.ok();

    let check = sea_orm::Database::connect(database.direct_url())
        .await
        .unwrap();
    let exists = |table: &'static str| {
        let check = &check;
        async move {
            check
                .query_one_raw(sea_orm::Statement::from_string(
                    sea_orm::DbBackend::Postgres,
                    format!("SELECT to_regclass('public.{table}') IS NOT NULL AS e"),
                ))
                .await
                .unwrap()
                .unwrap()
                .try_get::<bool>("", "e")
                .unwrap()
        }
    };
    assert!(
        !exists("control").await,
        "the control: naive quoting under SJIS + backslash_quote=on runs the payload's SQL"
    );
    assert!(
        exists("sentinel").await,
        "the renderer's literal was misread"
    );
    let stored: Vec<String> = check
        .query_all_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT v FROM probe",
        ))
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.try_get::<String>("", "v").unwrap())
        .collect();
    assert!(
        stored.contains(&value),
        "the value is stored exactly: {stored:?}"
    );
}

/// On the direct path a pooled connection is pinged before use only once it has been idle for
/// `DATABASE_PING_AFTER_IDLE_MS`. With 0, a connection cut while idle is replaced before a
/// request uses it. With an hour, a connection used a moment ago is trusted (one round trip
/// less per statement): its cut fails the one request that finds it, and the next request
/// gets a new connection.
#[tokio::test]
async fn a_pooled_connection_is_pinged_only_once_it_has_idled() {
    if backend() != TestBackend::Postgres {
        return;
    }
    for (ping_after_idle_ms, pinged) in [("0", true), ("3600000", false)] {
        // The direct path, with or without the suite's PgBouncer.
        let app = tests::spawn_app_as_owner_with(|vars| {
            vars.insert("DATABASE_MAX_CONNECTIONS".into(), "1".into());
            vars.insert(
                "DATABASE_PING_AFTER_IDLE_MS".into(),
                ping_after_idle_ms.into(),
            );
            // No lease sweep on the pool's one connection while the test cuts it.
            vars.insert("CALL_LEASE_SECS".into(), "86400".into());
        })
        .await;
        let user = app
            .sign_up(&format!("ping-{ping_after_idle_ms}@example.com"))
            .await;
        let me = "{ me { id } }";
        let body = app.gql(Some(&user.token), me, json!({})).await;
        assert_eq!(body["data"]["me"]["id"], user.id.as_str(), "{body}");

        // Cut the pool's one connection from the database's side, as a restart would.
        let admin = app.direct().await;
        let sql = format!(
            "SELECT count(pg_terminate_backend(pid))::int8 AS cut FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = '{}'",
            api::db::POOL_APPLICATION_NAME
        );
        let cut: i64 = admin
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                sql,
            ))
            .await
            .expect("terminate the pool's connection")
            .expect("a row")
            .try_get("", "cut")
            .expect("a count");
        assert_eq!(cut, 1, "the pool of one holds one connection");

        let body = app.gql(Some(&user.token), me, json!({})).await;
        if pinged {
            assert_eq!(body["data"]["me"]["id"], user.id.as_str(), "{body}");
        } else {
            assert_eq!(
                tests::error_code(&body),
                Some("INTERNAL_SERVER_ERROR"),
                "{body}"
            );
            let body = app.gql(Some(&user.token), me, json!({})).await;
            assert_eq!(body["data"]["me"]["id"], user.id.as_str(), "{body}");
        }
        admin.close().await.ok();
        app.shutdown().await;
    }
}
