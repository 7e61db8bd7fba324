//! Completions end to end, through a real graphql-transport-ws client and `complete`, against
//! the local OpenAI-compatible upstream on loopback. For every path: the deltas concatenate to
//! the stored completion, there is exactly one log and one usage row per upstream call, token
//! counts and cost are as expected, and nothing is left in flight.

use std::sync::atomic::Ordering;

use entity::prelude::*;
use entity::prompt_logs::{self, CallStatus};
use entity::{call_reservations, prompt_log_usage, token_usage, usage_daily, usage_monthly};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{Value, json};
use tests::ws::GqlWs;
use tests::{TestApp, TestUser, error_code, spawn_app, spawn_app_with};

const STREAM: &str = "subscription($i: CompletionInput!) { completionStream(input: $i) { logId delta done log { id completion status promptTokens completionTokens costMicrocents inFlight metadata } } }";
const COMPLETE: &str = "mutation($i: CompletionInput!) { complete(input: $i) { id completion status promptTokens completionTokens costMicrocents inFlight latencyMs metadata } }";

/// gpt-4o-mini's list price: 15 and 60 micro-cents per token.
fn mini_cost(prompt: i64, completion: i64) -> i64 {
    (prompt * 15_000_000 + completion * 60_000_000 + 999_999) / 1_000_000
}

fn prompt_tokens(prompt: &str) -> i64 {
    tokenizer::count_chat("gpt-4o-mini", [("user", prompt)]) as i64
}

/// Stream a completion: the concatenated deltas, the events (`next` payloads with data), and
/// the error the stream ended with, if any (a `next` payload with `errors`, or an `error` message).
async fn stream(
    app: &TestApp,
    user: &TestUser,
    input: Value,
) -> (String, Vec<Value>, Option<Value>) {
    let mut ws = GqlWs::connect(app, Some(&user.token)).await;
    ws.subscribe("1", STREAM, json!({ "i": input })).await;
    let (payloads, protocol_error) = ws.collect("1").await;
    let (errors, events): (Vec<Value>, Vec<Value>) =
        payloads.into_iter().partition(|p| p["errors"].is_array());
    assert!(
        errors.len() <= 1,
        "at most one error, at the end: {errors:?}"
    );
    let deltas: String = events
        .iter()
        .filter_map(|p| p["data"]["completionStream"]["delta"].as_str())
        .collect();
    (deltas, events, errors.into_iter().next().or(protocol_error))
}

/// Exactly one log and one linked usage row per upstream call, none in flight, no reservation
/// left, and the monthly rollup equal to the sum of the usage rows.
async fn assert_books_balance(app: &TestApp, user_id: &str, upstream_calls: u64) {
    assert_rows_balance(app, user_id, upstream_calls).await;
    assert_eq!(
        app.upstream.stats.requests.load(Ordering::SeqCst),
        upstream_calls
    );
}

/// The rows of [`assert_books_balance`], for calls served by several servers (each with its own
/// upstream).
async fn assert_rows_balance(app: &TestApp, user_id: &str, upstream_calls: u64) {
    let logs = PromptLogs::find()
        .filter(prompt_logs::Column::UserId.eq(user_id))
        .all(&app.db)
        .await
        .unwrap();
    let usage = TokenUsage::find()
        .filter(token_usage::Column::UserId.eq(user_id))
        .all(&app.db)
        .await
        .unwrap();
    assert_eq!(
        logs.len() as u64,
        upstream_calls,
        "one log per upstream call"
    );
    assert_eq!(
        usage.len() as u64,
        upstream_calls,
        "one usage row per upstream call"
    );
    assert_eq!(
        PromptLogUsage::find().count(&app.db).await.unwrap(),
        upstream_calls,
        "each usage row linked to its log"
    );
    assert!(
        logs.iter().all(|l| !l.in_flight()),
        "nothing left in flight"
    );
    assert_eq!(
        call_reservations::Entity::find()
            .count(&app.db)
            .await
            .unwrap(),
        0,
        "no reservation left"
    );
    for log in &logs {
        let link = prompt_log_usage::Entity::find_by_id(log.id)
            .one(&app.db)
            .await
            .unwrap()
            .expect("linked");
        let u = usage
            .iter()
            .find(|u| u.id == link.usage_id)
            .expect("the linked usage row");
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens),
            (log.prompt_tokens, log.completion_tokens)
        );
        assert_eq!(u.model, log.model);
    }
    let month = UsageMonthly::find()
        .filter(usage_monthly::Column::UserId.eq(user_id))
        .all(&app.db)
        .await
        .unwrap();
    let rolled: (i64, i64, i64, i64) = month.iter().fold((0, 0, 0, 0), |a, m| {
        (
            a.0 + m.calls,
            a.1 + m.prompt_tokens,
            a.2 + m.completion_tokens,
            a.3 + m.cost_microcents,
        )
    });
    let summed = usage.iter().fold((0, 0, 0, 0), |a, u| {
        (
            a.0 + 1,
            a.1 + i64::from(u.prompt_tokens),
            a.2 + i64::from(u.completion_tokens),
            a.3 + u.cost_microcents,
        )
    });
    assert_eq!(rolled, summed, "the monthly rollup matches the usage rows");
    let daily = UsageDaily::find()
        .filter(usage_daily::Column::UserId.eq(user_id))
        .all(&app.db)
        .await
        .unwrap()
        .iter()
        .fold((0, 0, 0, 0), |a, d| {
            (
                a.0 + d.calls,
                a.1 + d.prompt_tokens,
                a.2 + d.completion_tokens,
                a.3 + d.cost_microcents,
            )
        });
    assert_eq!(daily, summed, "the daily rollup matches the usage rows");
}

async fn only_log(app: &TestApp) -> prompt_logs::Model {
    let mut logs = PromptLogs::find().all(&app.db).await.unwrap();
    assert_eq!(logs.len(), 1);
    logs.pop().unwrap()
}

#[tokio::test]
async fn a_streamed_completion_is_relayed_logged_and_metered() {
    let app = spawn_app().await;
    let user = app.sign_up("ada@example.com").await;
    let prompt = "Tell me a story @@tokens=12";
    let (deltas, payloads, error) =
        stream(&app, &user, json!({ "prompt": prompt, "maxTokens": 50 })).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(deltas, upstream::answer(prompt, 12));
    assert_eq!(payloads.len(), 13, "12 deltas and the final event");
    let log_id = payloads[0]["data"]["completionStream"]["logId"].clone();
    assert!(
        payloads
            .iter()
            .all(|p| p["data"]["completionStream"]["logId"] == log_id),
        "every event carries the log id"
    );
    let last = &payloads[12]["data"]["completionStream"];
    assert_eq!(last["done"], true);
    assert!(
        payloads[..12]
            .iter()
            .all(|p| p["data"]["completionStream"]["done"] == false)
    );
    let log = &last["log"];
    assert_eq!(log["id"], log_id);
    assert_eq!(log["completion"].as_str().unwrap(), deltas);
    assert_eq!(log["status"], "OK");
    assert_eq!(log["inFlight"], false);
    assert_eq!(log["promptTokens"], prompt_tokens(prompt));
    assert_eq!(log["completionTokens"], 12);
    assert_eq!(
        log["costMicrocents"],
        mini_cost(prompt_tokens(prompt), 12).to_string()
    );
    assert_eq!(log["metadata"]["usage_source"], "upstream");
    assert_eq!(log["metadata"]["finish_reason"], "stop");
    assert!(log["metadata"]["ttft_ms"].is_u64());

    let stored = only_log(&app).await;
    assert_eq!(stored.completion.as_deref(), Some(deltas.as_str()));
    assert_book_entry(&app, &user, 1).await;
    app.shutdown().await;
}

async fn assert_book_entry(app: &TestApp, user: &TestUser, calls: u64) {
    assert_books_balance(app, &user.id, calls).await;
    let me = app
        .gql(
            Some(&user.token),
            "{ me { profile { tokensUsedThisMonth } } }",
            json!({}),
        )
        .await;
    let used: i64 = TokenUsage::find()
        .all(&app.db)
        .await
        .unwrap()
        .iter()
        .map(|u| i64::from(u.prompt_tokens + u.completion_tokens))
        .sum();
    assert_eq!(
        me["data"]["me"]["profile"]["tokensUsedThisMonth"],
        used.to_string()
    );
}

#[tokio::test]
async fn complete_returns_the_finalised_log() {
    let app = spawn_app().await;
    let user = app.sign_up("ada@example.com").await;
    let prompt = "Summarise this @@tokens=5";
    let body = app
        .gql(
            Some(&user.token),
            COMPLETE,
            json!({ "i": { "prompt": prompt } }),
        )
        .await;
    let log = &body["data"]["complete"];
    assert_eq!(
        log["completion"].as_str().unwrap(),
        upstream::answer(prompt, 5),
        "{body}"
    );
    assert_eq!(log["status"], "OK");
    assert_eq!(
        (
            log["promptTokens"].as_i64().unwrap(),
            log["completionTokens"].as_i64().unwrap()
        ),
        (prompt_tokens(prompt), 5)
    );
    assert!(log["latencyMs"].is_i64());
    assert_eq!(log["metadata"]["stream"], false);
    assert_book_entry(&app, &user, 1).await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_content_filter_finish_is_logged_as_filtered() {
    let app = spawn_app().await;
    let user = app.sign_up("ada@example.com").await;
    let prompt = "Something spicy @@tokens=3 @@finish=content_filter";
    let (deltas, payloads, error) = stream(&app, &user, json!({ "prompt": prompt })).await;
    assert!(error.is_none());
    let last = &payloads.last().unwrap()["data"]["completionStream"];
    assert_eq!(
        (last["done"].as_bool(), last["log"]["status"].as_str()),
        (Some(true), Some("FILTERED"))
    );
    assert_eq!(only_log(&app).await.status, CallStatus::Filtered);
    assert_eq!(only_log(&app).await.completion.unwrap(), deltas);
    assert_books_balance(&app, &user.id, 1).await;
    app.shutdown().await;
}

#[tokio::test]
async fn unknown_and_empty_finish_reasons_are_tolerated() {
    let app = spawn_app().await;
    let user = app.sign_up("ada@example.com").await;
    for (i, finish) in ["empty", "eos_token"].iter().enumerate() {
        let prompt = format!("p{i} @@tokens=2 @@finish={finish}");
        let body = app
            .gql(
                Some(&user.token),
                COMPLETE,
                json!({ "i": { "prompt": prompt } }),
            )
            .await;
        assert_eq!(body["data"]["complete"]["status"], "OK", "{body}");
    }
    assert_books_balance(&app, &user.id, 2).await;
    app.shutdown().await;
}

#[tokio::test]
async fn upstream_http_errors_are_logged_unmetered_and_reported() {
    let app = spawn_app().await;
    let user = app.sign_up("ada@example.com").await;
    for code in [429, 500] {
        let body = app
            .gql(
                Some(&user.token),
                COMPLETE,
                json!({ "i": { "prompt": format!("hi @@fail={code}") } }),
            )
            .await;
        assert_eq!(error_code(&body), Some("UPSTREAM_ERROR"), "{body}");
        let log_id = body["errors"][0]["extensions"]["logId"]
            .as_str()
            .expect("the log id");
        let log = PromptLogs::find_by_id(uuid::Uuid::parse_str(log_id).unwrap())
            .one(&app.db)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(log.status, CallStatus::Error);
        let meta = log.metadata.unwrap();
        assert!(
            meta["error"].as_str().unwrap().contains(&code.to_string()),
            "{meta}"
        );
        assert_eq!(meta["usage_source"], "none");
        assert_eq!(
            (log.prompt_tokens, log.completion_tokens),
            (0, 0),
            "a refused request consumed nothing"
        );
        assert_eq!(log.completion.as_deref(), Some(""));
    }
    // The streamed path reports it the same way.
    let (deltas, events, error) = stream(&app, &user, json!({ "prompt": "hi @@fail=429" })).await;
    assert!(deltas.is_empty() && events.is_empty());
    let error = error.expect("an error");
    assert_eq!(
        error["errors"][0]["extensions"]["code"], "UPSTREAM_ERROR",
        "{error}"
    );
    assert!(error["errors"][0]["extensions"]["logId"].is_string());
    assert_books_balance(&app, &user.id, 3).await;
    app.shutdown().await;
}

/// Interrupted streams keep what arrived and meter it with the model's tokenizer.
async fn interrupted(app: &TestApp, user: &TestUser, prompt: &str, received: usize, reason: &str) {
    let (deltas, _payloads, error) = stream(app, user, json!({ "prompt": prompt })).await;
    let error = error.expect("the stream ends with an error");
    assert!(error.to_string().contains("UPSTREAM_ERROR"), "{error}");
    assert_eq!(deltas, upstream::answer(prompt, received));
    let log = PromptLogs::find()
        .filter(prompt_logs::Column::Prompt.eq(prompt))
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(log.status, CallStatus::Error);
    assert_eq!(
        log.completion.as_deref(),
        Some(deltas.as_str()),
        "the partial completion is kept"
    );
    assert_eq!(i64::from(log.prompt_tokens), prompt_tokens(prompt));
    assert_eq!(log.completion_tokens as usize, received);
    let meta = log.metadata.unwrap();
    assert_eq!(meta["usage_source"], "local");
    assert!(meta["error"].as_str().unwrap().contains(reason), "{meta}");
    let cost = prompt_log_usage::Entity::find_by_id(log.id)
        .find_also_related(TokenUsage)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap()
        .1
        .unwrap()
        .cost_microcents;
    assert_eq!(cost, mini_cost(prompt_tokens(prompt), received as i64));
}

#[tokio::test]
async fn an_error_event_mid_stream_keeps_and_meters_the_partial_answer() {
    let app = spawn_app().await;
    let user = app.sign_up("ada@example.com").await;
    interrupted(
        &app,
        &user,
        "go @@tokens=10 @@error_after=3",
        3,
        "error event mid-stream",
    )
    .await;
    assert_books_balance(&app, &user.id, 1).await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_cut_connection_keeps_and_meters_the_partial_answer() {
    let app = spawn_app().await;
    let user = app.sign_up("ada@example.com").await;
    // Paced, so the four tokens are on the wire before the cut (bytes still buffered in the
    // upstream when a connection drops are lost, as on a real network).
    interrupted(
        &app,
        &user,
        "go @@tokens=10 @@pace_ms=5 @@cut_after=4",
        4,
        "broke off",
    )
    .await;
    assert_books_balance(&app, &user.id, 1).await;
    app.shutdown().await;
}

#[tokio::test]
async fn without_a_usage_chunk_tokens_are_counted_locally_and_agree() {
    let app = spawn_app().await;
    let user = app.sign_up("ada@example.com").await;
    let mut logs = Vec::new();
    for prompt in ["count me @@tokens=17", "count me @@tokens=17 @@no_usage"] {
        let (deltas, events, error) = stream(&app, &user, json!({ "prompt": prompt })).await;
        assert!(error.is_none(), "{error:?}");
        let log = events.last().unwrap()["data"]["completionStream"]["log"].clone();
        assert_eq!(log["completion"].as_str(), Some(deltas.as_str()));
        assert_eq!(deltas, upstream::answer(prompt, 17));
        logs.push(log);
    }
    let (with, without) = (&logs[0], &logs[1]);
    assert_eq!(with["metadata"]["usage_source"], "upstream");
    assert_eq!(without["metadata"]["usage_source"], "local");
    assert_eq!(without["status"], "OK");
    assert_eq!(without["completionTokens"], 17);
    assert_eq!(without["completionTokens"], with["completionTokens"]);
    // The local count of each prompt is what the upstream reports for it.
    assert_eq!(with["promptTokens"], prompt_tokens("count me @@tokens=17"));
    assert_eq!(
        without["promptTokens"],
        prompt_tokens("count me @@tokens=17 @@no_usage")
    );
    let p = prompt_tokens("count me @@tokens=17 @@no_usage");
    assert_eq!(without["costMicrocents"], mini_cost(p, 17).to_string());
    assert_books_balance(&app, &user.id, 2).await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_client_that_goes_away_aborts_the_upstream_request_and_the_call_is_finalised() {
    let app = spawn_app().await;
    let user = app.sign_up("ada@example.com").await;
    let prompt = "long story @@tokens=500 @@pace_ms=10";
    let mut ws = GqlWs::connect(&app, Some(&user.token)).await;
    ws.subscribe(
        "1",
        STREAM,
        json!({ "i": { "prompt": prompt, "maxTokens": 1000 } }),
    )
    .await;
    let mut received = String::new();
    while received.len() < upstream::answer(prompt, 3).len() {
        let m = ws.next().await.unwrap();
        received.push_str(
            m["payload"]["data"]["completionStream"]["delta"]
                .as_str()
                .unwrap_or(""),
        );
    }
    ws.drop_connection().await;

    // The upstream sees its client go away long before the 500 tokens, and the call is finalised.
    app.upstream
        .stats
        .wait_until(|s| s.abandoned.load(Ordering::SeqCst) == 1)
        .await;
    app.app_calls().wait_idle().await;
    let sent = app.upstream.stats.tokens_sent.load(Ordering::SeqCst);
    assert!(sent < 500, "the upstream kept sending: {sent} tokens");
    let log = only_log(&app).await;
    assert_eq!(log.status, CallStatus::Error);
    let meta = log.metadata.clone().unwrap();
    assert!(
        meta["error"]
            .as_str()
            .unwrap()
            .contains("client disconnected"),
        "{meta}"
    );
    let completion = log.completion.unwrap();
    assert!(
        completion.starts_with(&received),
        "the log holds at least what the client saw"
    );
    assert_eq!(
        completion,
        upstream::answer(prompt, log.completion_tokens as usize),
        "and exactly what was relayed"
    );
    assert!((log.completion_tokens as u64) <= sent);
    assert_books_balance(&app, &user.id, 1).await;
    app.shutdown().await;
}

#[tokio::test]
async fn first_token_and_idle_timeouts_end_the_call() {
    let app = spawn_app_with(|v| {
        v.insert("LLM_FIRST_TOKEN_TIMEOUT_MS".into(), "300".into());
        v.insert("LLM_IDLE_TIMEOUT_MS".into(), "300".into());
    })
    .await;
    let user = app.sign_up("ada@example.com").await;
    let slow = app
        .gql(
            Some(&user.token),
            COMPLETE,
            json!({ "i": { "prompt": "slow @@first_token_ms=10000" } }),
        )
        .await;
    assert_eq!(error_code(&slow), Some("UPSTREAM_ERROR"), "{slow}");
    assert!(
        slow["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("no first token")
    );
    interrupted(&app, &user, "stalls @@tokens=10 @@stall_after=2", 2, "idle").await;
    assert_books_balance(&app, &user.id, 2).await;
    app.shutdown().await;
}

#[tokio::test]
async fn refusals_come_before_any_row_or_upstream_call() {
    let app = spawn_app().await;
    let user = app.sign_up("ada@example.com").await;
    let cases = [
        (
            json!({ "prompt": "hi", "model": "gpt-9-ultra" }),
            "BAD_USER_INPUT",
        ),
        (json!({ "prompt": "   " }), "BAD_USER_INPUT"),
        (json!({ "prompt": "hi", "maxTokens": 0 }), "BAD_USER_INPUT"),
        (
            json!({ "prompt": "hi", "maxTokens": 100_000 }),
            "BAD_USER_INPUT",
        ),
        (
            json!({ "prompt": "hi", "temperature": 3.5 }),
            "BAD_USER_INPUT",
        ),
        (json!({ "prompt": "x".repeat(32_001) }), "BAD_USER_INPUT"),
    ];
    for (input, code) in &cases {
        let body = app
            .gql(Some(&user.token), COMPLETE, json!({ "i": input }))
            .await;
        assert_eq!(error_code(&body), Some(*code), "{input}: {body}");
        let (_, _, error) = stream(&app, &user, input.clone()).await;
        assert!(error.unwrap().to_string().contains(code));
    }
    let anonymous = app
        .gql(None, COMPLETE, json!({ "i": { "prompt": "hi" } }))
        .await;
    assert_eq!(error_code(&anonymous), Some("UNAUTHENTICATED"));
    assert_books_balance(&app, &user.id, 0).await;
    app.shutdown().await;
}

/// Set a budget the way an operator does (the `admin set-budget` command).
pub(crate) async fn set_budget(app: &TestApp, email: &str, budget: i64) {
    let config = api::config::Config::from_vars(tests::base_vars(&app.database)).unwrap();
    let said = api::service::admin::set_budget(&config, email, budget)
        .await
        .unwrap();
    assert!(said.contains(&budget.to_string()), "{said}");
}

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
    let a = spawn_app_with(|v| {
        v.insert("INSTANCE_ID".into(), "replica-a".into());
    })
    .await;
    let b = tests::spawn_app_on(a.database.clone(), |v| {
        v.insert("INSTANCE_ID".into(), "replica-b".into());
    })
    .await;
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

#[tokio::test]
async fn calls_left_in_flight_by_a_crash_are_finalised_at_the_next_start() {
    let first = spawn_app().await;
    let user = first.sign_up("ada@example.com").await;
    let log = crate::fixtures::log_in_flight(&first.db, &user.id).await;
    let database = first.database.clone();
    first.shutdown().await;

    let second = tests::spawn_app_on(database, |_| {}).await;
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

/// A lease row for `log`, owned by `owner`, last renewed `age` ago.
async fn lease(app: &TestApp, log: &prompt_logs::Model, owner: &str, age: chrono::Duration) {
    use sea_orm::ActiveModelTrait;
    call_reservations::ActiveModel {
        log_id: sea_orm::Set(log.id),
        user_id: sea_orm::Set(log.user_id.clone()),
        tokens: sea_orm::Set(100),
        owner: sea_orm::Set(owner.into()),
        heartbeat_at: sea_orm::Set(chrono::Utc::now() - age),
        created_at: sea_orm::Set(log.created_at),
    }
    .insert(&app.db)
    .await
    .unwrap();
}

#[tokio::test]
async fn a_replica_finalises_lapsed_calls_and_leaves_live_ones_alone() {
    let first = spawn_app().await;
    let user = first.sign_up("ada@example.com").await;
    let lapsed = crate::fixtures::log_in_flight(&first.db, &user.id).await;
    lease(
        &first,
        &lapsed,
        "replica-that-died",
        chrono::Duration::minutes(10),
    )
    .await;
    let live = crate::fixtures::log_in_flight(&first.db, &user.id).await;
    lease(
        &first,
        &live,
        "replica-still-running",
        chrono::Duration::seconds(1),
    )
    .await;
    let database = first.database.clone();
    first.shutdown().await;

    let second = tests::spawn_app_on(database, |v| {
        v.insert("INSTANCE_ID".into(), "replica-starting".into());
    })
    .await;
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
    let app = spawn_app_with(|v| {
        v.insert("INSTANCE_ID".into(), "me".into());
    })
    .await;
    let user = app.sign_up("ada@example.com").await;
    let lease_time = std::time::Duration::from_secs(60);
    let none = std::collections::HashSet::new();
    let cutoff = api::time::now_micros();
    let log = crate::fixtures::log_in_flight(&app.db, &user.id).await;
    lease(&app, &log, "me", chrono::Duration::zero()).await;
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
    assert_eq!(stranded.iter().map(|l| l.id).collect::<Vec<_>>(), [log.id]);
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
    let app = spawn_app_with(|v| {
        v.insert("CALL_LEASE_SECS".into(), "3".into());
    })
    .await;
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
async fn two_replicas_share_sessions_and_calls_without_stepping_on_each_other() {
    let a = spawn_app_with(|v| {
        v.insert("INSTANCE_ID".into(), "replica-a".into());
    })
    .await;
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
    let b = tests::spawn_app_on(a.database.clone(), |v| {
        v.insert("INSTANCE_ID".into(), "replica-b".into());
    })
    .await;
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
async fn shutdown_lets_calls_finish_within_the_grace_period_then_finalises_the_rest() {
    let app = spawn_app_with(|v| {
        v.insert("SHUTDOWN_GRACE_SECS".into(), "1".into());
    })
    .await;
    let user = app.sign_up("ada@example.com").await;
    let mut quick = GqlWs::connect(&app, Some(&user.token)).await;
    quick
        .subscribe(
            "q",
            STREAM,
            json!({ "i": { "prompt": "quick @@tokens=20 @@pace_ms=10" } }),
        )
        .await;
    let mut slow = GqlWs::connect(&app, Some(&user.token)).await;
    slow.subscribe(
        "s",
        STREAM,
        json!({ "i": { "prompt": "slow @@tokens=1000 @@pace_ms=10", "maxTokens": 1000 } }),
    )
    .await;
    // Both are running once each has relayed a token.
    for ws in [&mut quick, &mut slow] {
        let first = ws.next().await.unwrap();
        assert!(
            first["payload"]["data"]["completionStream"]["delta"].is_string(),
            "{first}"
        );
    }
    let calls = app.app_calls();
    let database = app.database.clone();
    let user_id = user.id.clone();
    app.shutdown().await; // returns once nothing is in flight
    let db = sea_orm::Database::connect(database.direct_url())
        .await
        .unwrap();
    assert_eq!(calls.running(), 0);
    let logs = PromptLogs::find()
        .filter(prompt_logs::Column::UserId.eq(user_id.as_str()))
        .all(&db)
        .await
        .unwrap();
    let quick_log = logs.iter().find(|l| l.prompt.starts_with("quick")).unwrap();
    let slow_log = logs.iter().find(|l| l.prompt.starts_with("slow")).unwrap();
    assert_eq!(
        quick_log.status,
        CallStatus::Ok,
        "finished within the grace period"
    );
    assert_eq!(slow_log.status, CallStatus::Error);
    assert!(
        slow_log.metadata.as_ref().unwrap()["error"]
            .as_str()
            .unwrap()
            .contains("shutting down")
    );
    assert!(logs.iter().all(|l| !l.in_flight()));
    assert_eq!(TokenUsage::find().count(&db).await.unwrap(), 2);
}

#[tokio::test]
async fn models_lists_the_price_table_and_the_upstream() {
    let app = spawn_app_with(|v| {
        v.insert(
            "MODEL_PRICES".into(),
            r#"{"llama3.1:8b": {"input": 0, "output": 0}, "o3": null}"#.into(),
        );
    })
    .await;
    let body = app.gql(None, "{ models { id inputMicrocentsPerMillion outputMicrocentsPerMillion upstream localUpstream } }", json!({})).await;
    let models = body["data"]["models"].as_array().unwrap();
    let mini = models.iter().find(|m| m["id"] == "gpt-4o-mini").unwrap();
    assert_eq!(mini["inputMicrocentsPerMillion"], "15000000");
    assert_eq!(mini["outputMicrocentsPerMillion"], "60000000");
    assert_eq!(mini["localUpstream"], false);
    // A provider name, never the address (loopback here).
    assert_eq!(mini["upstream"], "openai-compatible");
    assert!(models.iter().any(|m| m["id"] == "llama3.1:8b"));
    assert!(!models.iter().any(|m| m["id"] == "o3"));
    app.shutdown().await;

    // Without OPENAI_BASE_URL the built-in local upstream serves, and says so.
    let local = spawn_app_with(|v| {
        v.remove("OPENAI_BASE_URL");
    })
    .await;
    let body = local
        .gql(None, "{ models { id upstream localUpstream } }", json!({}))
        .await;
    assert_eq!(body["data"]["models"][0]["localUpstream"], true);
    assert_eq!(body["data"]["models"][0]["upstream"], "local");
    let user = local.sign_up("ada@example.com").await;
    let done = local
        .gql(
            Some(&user.token),
            COMPLETE,
            json!({ "i": { "prompt": "hello" } }),
        )
        .await;
    assert_eq!(done["data"]["complete"]["status"], "OK", "{done}");
    local.shutdown().await;
}

#[tokio::test]
async fn a_websocket_cannot_call_after_its_session_ended() {
    let app = spawn_app().await;
    let user = app.sign_up("ada@example.com").await;
    let mut ws = GqlWs::connect(&app, Some(&user.token)).await;
    // Signed out elsewhere (the same session, over HTTP).
    let out = app
        .gql(Some(&user.token), "mutation { signOut }", json!({}))
        .await;
    assert_eq!(out["data"]["signOut"], true);
    ws.subscribe("1", STREAM, json!({ "i": { "prompt": "still there?" } }))
        .await;
    let (payloads, _) = ws.collect("1").await;
    assert_eq!(
        payloads[0]["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{payloads:?}"
    );
    assert_books_balance(&app, &user.id, 0).await;
    app.shutdown().await;
}

#[tokio::test]
async fn reasoning_models_get_max_completion_tokens_and_no_temperature() {
    let app = spawn_app().await;
    let user = app.sign_up("ada@example.com").await;
    let body = app
        .gql(
            Some(&user.token),
            COMPLETE,
            json!({ "i": { "prompt": "think @@tokens=4", "model": "o4-mini", "maxTokens": 3 } }),
        )
        .await;
    // The local upstream honours max_completion_tokens: 3 of the 4 tokens, cut for length.
    assert_eq!(body["data"]["complete"]["completionTokens"], 3, "{body}");
    assert_eq!(
        body["data"]["complete"]["metadata"]["finish_reason"],
        "length"
    );
    let body = app
        .gql(
            Some(&user.token),
            COMPLETE,
            json!({ "i": { "prompt": "think", "model": "o3", "temperature": 0.5 } }),
        )
        .await;
    assert_eq!(error_code(&body), Some("BAD_USER_INPUT"), "{body}");
    assert_books_balance(&app, &user.id, 1).await;
    app.shutdown().await;
}

#[tokio::test]
async fn the_link_between_a_call_and_its_usage_is_append_only_and_goes_with_the_user() {
    let app = spawn_app().await;
    let user = app.sign_up("ada@example.com").await;
    let other = app.sign_up("bob@example.com").await;
    for u in [&user, &other] {
        let body = app
            .gql(
                Some(&u.token),
                COMPLETE,
                json!({ "i": { "prompt": "hi @@tokens=2" } }),
            )
            .await;
        assert_eq!(body["data"]["complete"]["status"], "OK", "{body}");
    }
    for sql in [
        "DELETE FROM prompt_log_usage",
        "UPDATE prompt_log_usage SET usage_id = usage_id",
    ] {
        let err = app.exec(sql).await.expect_err(sql).to_string();
        assert!(err.contains("append-only"), "{sql}: {err}");
    }
    assert_eq!(PromptLogUsage::find().count(&app.db).await.unwrap(), 2);
    // Deleting a user takes every row of theirs, the meter's included, and only theirs.
    User::delete_by_id(user.id.clone())
        .exec(&app.db)
        .await
        .unwrap();
    assert_eq!(PromptLogUsage::find().count(&app.db).await.unwrap(), 1);
    assert_eq!(UsageMonthly::find().count(&app.db).await.unwrap(), 1);
    assert_eq!(PromptLogs::find().count(&app.db).await.unwrap(), 1);
    assert_eq!(TokenUsage::find().count(&app.db).await.unwrap(), 1);
    app.shutdown().await;
}

#[tokio::test]
async fn a_log_is_visible_to_its_owner_only() {
    let app = spawn_app().await;
    let ada = app.sign_up("ada@example.com").await;
    let bob = app.sign_up("bob@example.com").await;
    let body = app
        .gql(
            Some(&ada.token),
            COMPLETE,
            json!({ "i": { "prompt": "mine @@tokens=2" } }),
        )
        .await;
    let id = body["data"]["complete"]["id"].as_str().unwrap();
    let q = "query($id: ID!) { promptLog(id: $id) { id user { email } } }";
    let own = app.gql(Some(&ada.token), q, json!({ "id": id })).await;
    assert_eq!(own["data"]["promptLog"]["user"]["email"], "ada@example.com");
    let other = app.gql(Some(&bob.token), q, json!({ "id": id })).await;
    assert!(
        other["data"]["promptLog"].is_null() && other["errors"].is_null(),
        "{other}"
    );
    let missing = app
        .gql(
            Some(&bob.token),
            q,
            json!({ "id": uuid::Uuid::new_v4().to_string() }),
        )
        .await;
    assert!(missing["data"]["promptLog"].is_null());
    app.shutdown().await;
}
