//! A crash (SIGKILL, no graceful stop) while streams run: every call is finalised from its last
//! checkpoint (its relayed text, billed with the model's tokenizer), at the next start of the
//! same replica or by another replica's lease sweep when it never comes back.

use std::collections::HashMap;

use entity::prelude::*;
use entity::prompt_logs::{self, CallStatus};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::json;
use tests::ws::GqlWs;
use tests::{TestDatabase, assert_rows_balance, base_vars, spawn_app_on};

use super::STREAM;

/// Checkpoints every 100 ms; tokens every 20 ms: one interval holds ~5 tokens.
const CHECKPOINT_MS: &str = "100";
/// However loaded the machine, a step of these tests that takes longer has failed.
const PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);
const STREAMS: usize = 6;

/// Start the server as a child process on `database`; its address.
async fn start_child(
    database: &TestDatabase,
    upstream: &str,
    instance: &str,
) -> (tokio::process::Child, std::net::SocketAddr) {
    let mut vars = base_vars(database);
    vars.insert("OPENAI_BASE_URL".into(), upstream.to_owned());
    vars.insert("CALL_CHECKPOINT_MS".into(), CHECKPOINT_MS.into());
    vars.insert("INSTANCE_ID".into(), instance.into());
    let (child, addr, _, _logs) =
        tests::start_server_process(env!("CARGO_BIN_EXE_test-server"), vars).await;
    (child, addr)
}

/// Run streams on a child server, kill it with SIGKILL once each has relayed at least 50
/// tokens; what each client received, by prompt.
async fn crash_while_streaming(instance: &str) -> (TestDatabase, String, HashMap<String, String>) {
    let database = TestDatabase::create().await;
    let upstream = upstream::spawn(upstream::UpstreamConfig {
        pace: std::time::Duration::ZERO,
        default_tokens: 8,
    })
    .await
    .unwrap();
    let (mut child, addr) = start_child(&database, &upstream.base_url(), instance).await;
    // reqwest is built without a default TLS provider (servers install ring; none runs here).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let user = tests::sign_up_at(
        &reqwest::Client::new(),
        &format!("http://{addr}"),
        "crash@example.com",
    )
    .await;
    let (token, user_id) = (user.token, user.id);
    let mut sockets = Vec::new();
    for i in 0..STREAMS {
        let mut ws = GqlWs::connect_to(addr, Some(&token)).await;
        let prompt = format!("crash {i} @@tokens=2000 @@pace_ms=20");
        ws.subscribe(
            "1",
            STREAM,
            json!({ "i": { "prompt": prompt, "maxTokens": 2000 } }),
        )
        .await;
        sockets.push((prompt, ws, String::new(), 0usize));
    }
    tokio::time::timeout(PATIENCE, async {
        for (_, ws, text, deltas) in &mut sockets {
            while *deltas < 30 {
                let m = ws.next().await.expect("a token");
                if let Some(d) = m["payload"]["data"]["completionStream"]["delta"].as_str() {
                    text.push_str(d);
                    *deltas += 1;
                }
            }
        }
    })
    .await
    .expect("every stream relayed 30 tokens");
    child.start_kill().unwrap(); // SIGKILL
    child.wait().await.unwrap();
    // Whatever was already on its way to the clients counts as received.
    let mut received = HashMap::new();
    for (prompt, mut ws, mut text, _) in sockets {
        tokio::time::timeout(PATIENCE, async {
            while let Some(m) = ws.next().await {
                if let Some(d) = m["payload"]["data"]["completionStream"]["delta"].as_str() {
                    text.push_str(d);
                }
            }
        })
        .await
        .expect("the killed server's sockets end");
        received.insert(prompt, text);
    }
    (database, user_id, received)
}

/// Every call finalised as `error` from its checkpoint: the logged completion is a prefix of
/// what the client received, short of it by at most one checkpoint interval of tokens, and
/// billed (prompt plus the logged text, by the model's tokenizer).
async fn assert_recovered(app: &tests::TestApp, user_id: &str, received: &HashMap<String, String>) {
    let logs = PromptLogs::find()
        .filter(prompt_logs::Column::UserId.eq(user_id))
        .all(&app.db)
        .await
        .unwrap();
    assert_eq!(logs.len(), STREAMS);
    for log in &logs {
        let got = &received[&log.prompt];
        let logged = log.completion.as_deref().expect("finalised");
        assert_eq!(log.status, CallStatus::Error);
        // The checkpoint holds what the server relayed: the upstream's answer up to some token,
        // a prefix of it (it may hold a token the client had not read yet, or miss the last
        // interval's).
        let answer = upstream::answer(&log.prompt, 2000);
        assert!(answer.starts_with(logged), "the log holds relayed text");
        let got_tokens = tokenizer::count_text(&log.model, got) as i64;
        let logged_tokens = i64::from(log.completion_tokens);
        assert_eq!(
            logged_tokens,
            tokenizer::count_text(&log.model, logged) as i64
        );
        // 30 tokens took at least 600 ms, so checkpoints ran; at 20 ms a token a 100 ms
        // interval holds ~5 tokens (four times that allowed for a loaded machine).
        assert!(
            logged_tokens > 0 && (got_tokens - logged_tokens).abs() <= 20,
            "{}: billed {logged_tokens} tokens, the client received {got_tokens}",
            log.prompt
        );
        let meta = log.metadata.as_ref().unwrap();
        assert_eq!(meta["usage_source"], "checkpoint", "{meta}");
        assert_eq!(meta["recovered_from_checkpoint"], true);
        assert!(log.prompt_tokens > 0);
    }
    assert_rows_balance(app, user_id, STREAMS as u64).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_finalises_its_streams_from_checkpoints_when_it_restarts() {
    let (database, user_id, received) = crash_while_streaming("replica-a").await;
    // The same replica starts again (same INSTANCE_ID): its start-up recovery finalises them.
    let app = spawn_app_on(database, |vars| {
        vars.insert("INSTANCE_ID".into(), "replica-a".into());
    })
    .await;
    assert_recovered(&app, &user_id, &received).await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_replica_finalises_a_dead_replicas_streams_from_checkpoints() {
    let (database, user_id, received) = crash_while_streaming("replica-dead").await;
    let app = spawn_app_on(database, |vars| {
        vars.insert("INSTANCE_ID".into(), "replica-b".into());
    })
    .await;
    // Replica B leaves the dead replica's calls alone while their leases hold...
    assert_eq!(app.app_calls().recover().await.unwrap(), 0);
    // ...and finalises them in its sweep once they lapsed (as the lease length passing would).
    entity::call_reservations::Entity::update_many()
        .col_expr(
            entity::call_reservations::Column::HeartbeatAt,
            sea_orm::sea_query::Expr::value(chrono::Utc::now() - chrono::Duration::hours(1)),
        )
        .exec(&app.db)
        .await
        .unwrap();
    assert_eq!(app.app_calls().recover().await.unwrap(), STREAMS);
    assert_recovered(&app, &user_id, &received).await;
    app.shutdown().await;
}
