//! Several servers on one database: replicas share sessions and leave each other's live calls
//! alone, lapsed leases and calls left by a crash are finalised, and a lease sweep never takes a
//! live call for stranded.

use entity::prelude::*;
use entity::prompt_logs::CallStatus;
use sea_orm::{EntityTrait, PaginatorTrait};
use serde_json::json;
use tests::ws::GqlWs;
use tests::{
    assert_books_balance, spawn_app, spawn_app_on, spawn_app_on_with_env, spawn_app_with_env,
};

use super::STREAM;

#[tokio::test]
async fn two_replicas_share_sessions_and_calls_without_stepping_on_each_other() {
    let a = spawn_app_with_env(&[("INSTANCE_ID", "replica-a")]).await;
    let user = a.sign_up("ada@example.com").await;
    let mut ws = GqlWs::connect(&a, Some(&user.token)).await;
    let prompt = "slow @@tokens=40 @@pace_ms=10";
    ws.subscribe("1", STREAM, json!({ "i": { "prompt": prompt } }))
        .await;
    let first = ws.next().await.unwrap();
    assert!(
        first["payload"]["data"]["completionStream"]["delta"].is_string(),
        "{first}"
    );

    // A second replica starts on the same database while the call runs on the first.
    let b = spawn_app_on_with_env(a.database.clone(), &[("INSTANCE_ID", "replica-b")]).await;
    // The session made on A works on B.
    let me = b
        .gql(Some(&user.token), "{ me { email } }", json!({}))
        .await;
    assert_eq!(me["data"]["me"]["email"], "ada@example.com");
    // B left A's running call alone: it finishes normally on A.
    let (payloads, error) = ws.collect("1").await;
    assert!(error.is_none());
    let last = &payloads.last().unwrap()["data"]["completionStream"];
    assert_eq!(last["log"]["status"], "OK", "{last}");
    assert_eq!(
        last["log"]["completion"].as_str().unwrap(),
        upstream::answer(prompt, 40)
    );
    assert_books_balance(&a, &user.id, 1).await;
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test]
async fn calls_left_in_flight_by_a_crash_are_finalised_at_the_next_start() {
    let first = spawn_app().await;
    let user = first.sign_up("ada@example.com").await;
    let log = crate::fixtures::log_in_flight(&first.db, &user.id).await;
    let database = first.database.clone();
    first.shutdown().await;

    let second = spawn_app_on(database, |_| {}).await;
    let recovered = PromptLogs::find_by_id(log.id)
        .one(&second.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(recovered.status, CallStatus::Error);
    assert_eq!(recovered.completion.as_deref(), Some(""));
    let meta = recovered.metadata.unwrap();
    assert!(
        meta["error"].as_str().unwrap().contains("interrupted"),
        "{meta}"
    );
    assert_eq!(meta["usage_source"], "estimate");
    assert_eq!(TokenUsage::find().count(&second.db).await.unwrap(), 1);
    second.shutdown().await;
}

#[tokio::test]
async fn a_replica_finalises_lapsed_calls_and_leaves_live_ones_alone() {
    let first = spawn_app().await;
    let user = first.sign_up("ada@example.com").await;
    let lapsed = crate::fixtures::log_in_flight(&first.db, &user.id).await;
    crate::fixtures::lease(
        &first.db,
        &lapsed,
        "replica-that-died",
        chrono::Duration::minutes(10),
    )
    .await;
    let live = crate::fixtures::log_in_flight(&first.db, &user.id).await;
    crate::fixtures::lease(
        &first.db,
        &live,
        "replica-still-running",
        chrono::Duration::seconds(1),
    )
    .await;
    let database = first.database.clone();
    first.shutdown().await;

    let second = spawn_app_on_with_env(database, &[("INSTANCE_ID", "replica-starting")]).await;
    let get = |id| PromptLogs::find_by_id(id).one(&second.db);
    let lapsed = get(lapsed.id).await.unwrap().unwrap();
    assert_eq!(lapsed.status, CallStatus::Error);
    assert!(!lapsed.in_flight(), "the dead replica's call is finalised");
    assert!(
        get(live.id).await.unwrap().unwrap().in_flight(),
        "a live replica's call is not touched"
    );
    assert_eq!(TokenUsage::find().count(&second.db).await.unwrap(), 1);
    second.shutdown().await;
}

#[tokio::test]
async fn a_call_admitted_while_a_lease_sweep_runs_is_not_taken_for_stranded() {
    // Found by the benchmark: at 1,000 concurrent streams, a sweep that snapshotted the running
    // calls just before a call's admission committed finalised that live call as interrupted.
    let app = spawn_app_with_env(&[("INSTANCE_ID", "me")]).await;
    let user = app.sign_up("ada@example.com").await;
    let lease_time = std::time::Duration::from_secs(60);
    let none = std::collections::HashSet::new();
    let cutoff = api::time::now_micros();
    let log = crate::fixtures::log_in_flight(&app.db, &user.id).await;
    crate::fixtures::lease(&app.db, &log, "me", chrono::Duration::zero()).await;
    // Created after the sweep's snapshot: not judged, although the snapshot lacks it.
    let stranded = api::calls::store::stranded(&app.db, "me", lease_time, &none, cutoff)
        .await
        .unwrap();
    assert!(stranded.is_empty(), "{stranded:?}");
    // A later sweep that still does not see it running (its process's earlier life) does.
    let later = log.created_at + chrono::Duration::microseconds(1);
    let stranded = api::calls::store::stranded(&app.db, "me", lease_time, &none, later)
        .await
        .unwrap();
    assert_eq!(
        stranded.iter().map(|(l, _)| l.id).collect::<Vec<_>>(),
        [log.id]
    );
    // And one that sees it running leaves it alone.
    let running = std::collections::HashSet::from([log.id]);
    let stranded = api::calls::store::stranded(&app.db, "me", lease_time, &running, later)
        .await
        .unwrap();
    assert!(stranded.is_empty());
    app.shutdown().await;
}

#[tokio::test]
async fn streams_running_through_many_lease_sweeps_all_finish() {
    // Sweeps every second while calls keep being admitted for about three seconds: each call
    // starts once the one before it has relayed two tokens (about 100 ms).
    let app = spawn_app_with_env(&[("CALL_LEASE_SECS", "3")]).await;
    let user = app.sign_up("ada@example.com").await;
    let prompt = "sweep @@tokens=30 @@pace_ms=50";
    const CALLS: usize = 30;
    // Call i waits on gates[i] (none for the first) and opens gates[i + 1] through starts[i].
    let mut gates = vec![None];
    let mut starts = Vec::new();
    for _ in 1..CALLS {
        let (start, gate) = tokio::sync::oneshot::channel::<()>();
        starts.push(Some(start));
        gates.push(Some(gate));
    }
    starts.push(None);
    let results =
        futures_util::future::join_all(gates.into_iter().zip(starts).map(|(gate, next)| {
            let app = &app;
            let user = &user;
            async move {
                if let Some(gate) = gate {
                    gate.await.unwrap();
                }
                let mut ws = GqlWs::connect(app, Some(&user.token)).await;
                ws.subscribe("1", STREAM, json!({ "i": { "prompt": prompt } }))
                    .await;
                let mut text = String::new();
                let mut next = next;
                while let Some(m) = ws.next().await {
                    match m["type"].as_str() {
                        Some("next") => {
                            if let Some(d) =
                                m["payload"]["data"]["completionStream"]["delta"].as_str()
                            {
                                text.push_str(d);
                            }
                            if text.split_whitespace().count() >= 2
                                && let Some(n) = next.take()
                            {
                                let _ = n.send(());
                            }
                            assert!(m["payload"]["errors"].is_null(), "{m}");
                        }
                        Some("complete") => break,
                        _ => panic!("{m}"),
                    }
                }
                text
            }
        }))
        .await;
    for text in &results {
        assert_eq!(text, &upstream::answer(prompt, 30));
    }
    assert_books_balance(&app, &user.id, CALLS as u64).await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_replica_keeps_the_leases_of_calls_that_stream_and_of_calls_that_wait_fresh() {
    // Leases of 3 s, so each replica sweeps every second. One call relays a token every 100 ms
    // (its checkpoints renew its lease), the other relays nothing for 4 s (only the sweep
    // renews it): another replica sweeping meanwhile must take neither for stranded.
    let lease = [("CALL_LEASE_SECS", "3"), ("INSTANCE_ID", "replica-a")];
    let a = spawn_app_with_env(&lease).await;
    let user = a.sign_up("ada@example.com").await;
    let streaming = "lease streaming @@tokens=40 @@pace_ms=100";
    let waiting = "lease waiting @@first_token_ms=4000 @@tokens=2";
    let mut sockets = Vec::new();
    for prompt in [streaming, waiting] {
        let mut ws = GqlWs::connect(&a, Some(&user.token)).await;
        ws.subscribe("1", STREAM, json!({ "i": { "prompt": prompt } }))
            .await;
        sockets.push((prompt, ws));
    }
    let b = spawn_app_on_with_env(
        a.database.clone(),
        &[("CALL_LEASE_SECS", "3"), ("INSTANCE_ID", "replica-b")],
    )
    .await;
    for (prompt, ws) in &mut sockets {
        let (payloads, error) = ws.collect("1").await;
        assert!(error.is_none(), "{error:?}");
        let last = &payloads.last().unwrap()["data"]["completionStream"];
        assert_eq!(last["log"]["status"], "OK", "{prompt}: {last}");
        let tokens = if *prompt == streaming { 40 } else { 2 };
        assert_eq!(
            last["log"]["completion"].as_str().unwrap(),
            upstream::answer(prompt, tokens)
        );
    }
    assert_books_balance(&a, &user.id, 2).await;
    b.shutdown().await;
    a.shutdown().await;
}
