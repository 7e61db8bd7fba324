//! Monthly token budgets: a used-up budget refuses calls before any row or upstream call, and
//! concurrent calls, on one server or on two replicas, never overshoot it by more than one call.

use std::sync::atomic::Ordering;

use entity::prelude::*;
use sea_orm::EntityTrait;
use serde_json::json;
use tests::{
    assert_books_balance, assert_rows_balance, error_code, spawn_app, spawn_app_on_with_env,
    spawn_app_with_env,
};

use super::{COMPLETE, prompt_tokens, set_budget, stream};

#[tokio::test]
async fn a_used_up_budget_refuses_calls_without_rows_or_upstream_calls() {
    let app = spawn_app().await;
    let user = app.sign_up("ada@example.com").await;
    let first = app
        .gql(
            Some(&user.token),
            COMPLETE,
            json!({ "i": { "prompt": "one @@tokens=8" } }),
        )
        .await;
    let used = first["data"]["complete"]["promptTokens"].as_i64().unwrap() + 8;
    set_budget(&app, &user.email, used).await;
    let body = app
        .gql(
            Some(&user.token),
            COMPLETE,
            json!({ "i": { "prompt": "two" } }),
        )
        .await;
    assert_eq!(error_code(&body), Some("BUDGET_EXCEEDED"), "{body}");
    let (_, payloads, error) = stream(&app, &user, json!({ "prompt": "three" })).await;
    assert!(payloads.is_empty());
    assert!(error.unwrap().to_string().contains("BUDGET_EXCEEDED"));
    assert_books_balance(&app, &user.id, 1).await;
    // 0 means unlimited.
    set_budget(&app, &user.email, 0).await;
    let body = app
        .gql(
            Some(&user.token),
            COMPLETE,
            json!({ "i": { "prompt": "four" } }),
        )
        .await;
    assert_eq!(body["data"]["complete"]["status"], "OK", "{body}");
    app.shutdown().await;
}

#[tokio::test]
async fn twenty_concurrent_calls_against_a_budget_that_fits_five() {
    let app = spawn_app().await;
    let user = app.sign_up("ada@example.com").await;
    let prompt = "race @@tokens=10 @@pace_ms=5";
    let size = prompt_tokens(prompt) + 10; // each call's reservation, and what it uses
    set_budget(&app, &user.email, 5 * size).await;
    let input = json!({ "prompt": prompt, "maxTokens": 10 });
    let results =
        futures_util::future::join_all((0..20).map(|_| stream(&app, &user, input.clone()))).await;
    let mut ok = 0;
    let mut refused = 0;
    for (deltas, events, error) in &results {
        match error {
            None => {
                ok += 1;
                let log = &events.last().unwrap()["data"]["completionStream"]["log"];
                assert_eq!(log["completion"].as_str(), Some(deltas.as_str()));
                assert_eq!(deltas, &upstream::answer(prompt, 10));
            }
            Some(e) => {
                assert_eq!(
                    e["errors"][0]["extensions"]["code"], "BUDGET_EXCEEDED",
                    "{e}"
                );
                assert!(events.is_empty());
                refused += 1;
            }
        }
    }
    assert_eq!((ok, refused), (5, 15));
    let used: i64 = TokenUsage::find()
        .all(&app.db)
        .await
        .unwrap()
        .iter()
        .map(|u| i64::from(u.prompt_tokens + u.completion_tokens))
        .sum();
    assert!(used <= 5 * size + size, "overshoot beyond one call: {used}");
    assert_books_balance(&app, &user.id, 5).await;
    app.shutdown().await;
}

#[tokio::test]
async fn one_budget_holds_across_two_replicas() {
    let a = spawn_app_with_env(&[("INSTANCE_ID", "replica-a")]).await;
    let b = spawn_app_on_with_env(a.database.clone(), &[("INSTANCE_ID", "replica-b")]).await;
    let user = a.sign_up("ada@example.com").await;
    let prompt = "race @@tokens=10 @@pace_ms=5";
    let size = prompt_tokens(prompt) + 10;
    set_budget(&a, &user.email, 4 * size).await;
    let input = json!({ "prompt": prompt, "maxTokens": 10 });
    // Sixteen calls at once, half on each replica, with the session made on A.
    let results = futures_util::future::join_all((0..16).map(|i| {
        let app = if i % 2 == 0 { &a } else { &b };
        stream(app, &user, input.clone())
    }))
    .await;
    let ok = results.iter().filter(|(_, _, e)| e.is_none()).count();
    for (_, _, error) in &results {
        if let Some(e) = error {
            assert_eq!(
                e["errors"][0]["extensions"]["code"], "BUDGET_EXCEEDED",
                "{e}"
            );
        }
    }
    assert_eq!(
        ok, 4,
        "the budget fits four calls, whichever replica serves them"
    );
    assert_rows_balance(&a, &user.id, 4).await;
    let upstream_calls = [&a, &b].map(|app| app.upstream.stats.requests.load(Ordering::SeqCst));
    assert_eq!(upstream_calls.iter().sum::<u64>(), 4, "{upstream_calls:?}");
    b.shutdown().await;
    a.shutdown().await;
}
