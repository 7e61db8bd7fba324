//! Calls that fail: upstream HTTP errors, an error event or a cut connection mid-stream, a
//! client that goes away, first-token and idle timeouts, and the refusals that come before any
//! row or upstream call.

use std::sync::atomic::Ordering;

use entity::prelude::*;
use entity::prompt_log_usage;
use entity::prompt_logs::{self, CallStatus};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::json;
use tests::ws::GqlWs;
use tests::{TestApp, TestUser, assert_books_balance, error_code, spawn_app, spawn_app_with_env};

use super::{COMPLETE, STREAM, mini_cost, only_log, prompt_tokens, stream};

#[tokio::test]
async fn upstream_http_errors_are_logged_unmetered_and_reported() {
    let app = spawn_app().await;
    let user = app.sign_up("ada@example.com").await;
    // 404 comes as text, not OpenAI's error object (as from a proxy): its status still counts.
    for code in [429, 500, 404] {
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
    assert_books_balance(&app, &user.id, 4).await;
    app.shutdown().await;
}

/// Interrupted streams keep what arrived and meter it with the model's tokenizer.
async fn interrupted(app: &TestApp, user: &TestUser, prompt: &str, received: usize, reason: &str) {
    interrupted_with(app, user, json!({ "prompt": prompt }), received, reason).await;
}

async fn interrupted_with(
    app: &TestApp,
    user: &TestUser,
    input: serde_json::Value,
    received: usize,
    reason: &str,
) {
    let prompt = input["prompt"].as_str().unwrap();
    let (deltas, _payloads, error) = stream(app, user, input.clone()).await;
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
async fn an_event_that_never_ends_fails_the_call_instead_of_filling_memory() {
    let app = spawn_app().await;
    let user = app.sign_up("ada@example.com").await;
    // After three tokens the upstream opens an event and sends bytes without end. The server
    // reads at most about `MAX_EVENT_BYTES` of it (without a bound it would buffer until the
    // idle timeout, 30 s, and the reason would be "idle").
    interrupted(
        &app,
        &user,
        "go @@tokens=10 @@pace_ms=5 @@endless_after=3",
        3,
        "broke off",
    )
    .await;
    // The upstream saw its connection dropped, not read to the end.
    app.upstream
        .stats
        .wait_until(|s| s.abandoned.load(Ordering::SeqCst) == 1)
        .await;
    assert_books_balance(&app, &user.id, 1).await;
    app.shutdown().await;
}

#[tokio::test]
async fn an_upstream_that_ignores_max_tokens_is_cut_off_at_what_they_could_decode_to() {
    let app = spawn_app().await;
    let user = app.sign_up("ada@example.com").await;
    // One token decodes to at most 128 bytes in OpenAI's encodings; the server allows 256 per
    // token plus 4 KiB. This upstream sends 2,000 tokens (about 11 KB) for `maxTokens: 1`.
    let prompt = "go @@tokens=2000 @@ignore_max_tokens";
    let allowed = 256 + 4096;
    let kept = (0..2000)
        .take_while(|&k| upstream::answer(prompt, k + 1).len() <= allowed)
        .count();
    assert!(kept > 100 && kept < 2000);
    interrupted_with(
        &app,
        &user,
        json!({ "prompt": prompt, "maxTokens": 1 }),
        kept,
        "more text than max_tokens allows",
    )
    .await;
    // Reasoning has a bound of its own (some models reason outside `max_tokens`): more of it
    // than `maxTokens` is read past (it is not part of the answer), reasoning without end is
    // cut off.
    let prompt = "think @@reasoning=2000 @@tokens=3";
    let (deltas, _, error) = stream(&app, &user, json!({ "prompt": prompt, "maxTokens": 3 })).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(deltas, upstream::answer(prompt, 3));
    interrupted_with(
        &app,
        &user,
        json!({ "prompt": "think @@endless_reasoning", "maxTokens": 1 }),
        0,
        "reasoned past any model's limit",
    )
    .await;
    assert_books_balance(&app, &user.id, 3).await;
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
    let app = spawn_app_with_env(&[
        ("LLM_FIRST_TOKEN_TIMEOUT_MS", "300"),
        ("LLM_IDLE_TIMEOUT_MS", "300"),
    ])
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

/// A database refusal that retrying cannot fix does not hold the call: it is recorded at once
/// as `error`, billed what it consumed, without the text the database refused.
#[tokio::test]
async fn an_outcome_the_database_refuses_is_recorded_as_an_error_at_once() {
    let app = spawn_app().await;
    let user = app.sign_up("ada@example.com").await;
    // A stand-in for any value the database will never take: a trigger refusing a completion
    // of this prompt unless it is empty.
    let direct = app.direct().await;
    let ddl = match app.db_backend() {
        sea_orm::DbBackend::Postgres => vec![
            "CREATE FUNCTION refuse_text() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             RAISE EXCEPTION 'refused by the test' USING ERRCODE = '22023'; END $$",
            "CREATE TRIGGER refuse_text BEFORE UPDATE ON prompt_logs FOR EACH ROW \
             WHEN (NEW.completion <> '' AND OLD.prompt LIKE '%#refuse%') EXECUTE FUNCTION refuse_text()",
        ],
        _ => vec![
            "CREATE TRIGGER refuse_text BEFORE UPDATE ON prompt_logs \
             WHEN NEW.completion <> '' AND OLD.prompt LIKE '%#refuse%' \
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
        ],
    };
    for sql in ddl {
        sea_orm::ConnectionTrait::execute_unprepared(&direct, sql)
            .await
            .unwrap();
    }
    let prompt = "#refuse this @@tokens=3";
    let body = app
        .gql(
            Some(&user.token),
            COMPLETE,
            json!({ "i": { "prompt": prompt } }),
        )
        .await;
    // Reported like any failed call: the log's id and why.
    assert_eq!(error_code(&body), Some("UPSTREAM_ERROR"), "{body}");
    let error = &body["errors"][0];
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("could not be stored"),
        "{body}"
    );
    let log_id = uuid::Uuid::parse_str(error["extensions"]["logId"].as_str().unwrap()).unwrap();
    let log = PromptLogs::find_by_id(log_id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(log.status, CallStatus::Error);
    assert_eq!(log.completion.as_deref(), Some(""));
    assert_eq!(log.metadata.as_ref().unwrap()["unstorable"], true);
    assert_eq!(log.completion_tokens, 3, "billed what it consumed");
    assert_eq!(i64::from(log.prompt_tokens), prompt_tokens(prompt));
    assert_books_balance(&app, &user.id, 1).await;
    app.shutdown().await;
}

/// Failures that retrying can fix are retried: a serialization failure twice, then stored.
/// And retrying is bounded: while it keeps failing, the caller gets an error once
/// `CALL_FINALISE_RETRY_SECS` is up, and the call stays in flight for a lease sweep.
#[tokio::test]
async fn transient_finalisation_failures_are_retried_within_a_bound() {
    if tests::backend() != tests::TestBackend::Postgres {
        eprintln!("PostgreSQL only (a trigger cannot make SQLite report BUSY)");
        return;
    }
    let app = spawn_app_with_env(&[("CALL_FINALISE_RETRY_SECS", "1")]).await;
    let user = app.sign_up("ada@example.com").await;
    let direct = app.direct().await;
    // A sequence counts attempts (nextval survives the rollback the exception causes).
    for sql in [
        "CREATE SEQUENCE attempts",
        "CREATE FUNCTION flaky() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
         IF nextval('attempts') <= 2 OR OLD.prompt LIKE '%#always%' THEN \
         RAISE EXCEPTION 'try again' USING ERRCODE = '40001'; END IF; RETURN NEW; END $$",
        "CREATE TRIGGER flaky BEFORE UPDATE ON prompt_logs FOR EACH ROW \
         WHEN (NEW.completion IS NOT NULL) EXECUTE FUNCTION flaky()",
        "GRANT USAGE ON SEQUENCE attempts TO aiwrapper_runtime",
    ] {
        sea_orm::ConnectionTrait::execute_unprepared(&direct, sql)
            .await
            .unwrap();
    }
    let body = app
        .gql(
            Some(&user.token),
            COMPLETE,
            json!({ "i": { "prompt": "retry me @@tokens=2" } }),
        )
        .await;
    assert_eq!(body["data"]["complete"]["status"], "OK", "{body}");
    let attempts: i64 = sea_orm::ConnectionTrait::query_one_raw(
        &direct,
        sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT last_value FROM attempts",
        ),
    )
    .await
    .unwrap()
    .unwrap()
    .try_get("", "last_value")
    .unwrap();
    assert_eq!(attempts, 3, "two failures, then stored");

    let body = app
        .gql(
            Some(&user.token),
            COMPLETE,
            json!({ "i": { "prompt": "#always @@tokens=2" } }),
        )
        .await;
    assert_eq!(error_code(&body), Some("INTERNAL_SERVER_ERROR"), "{body}");
    let log = PromptLogs::find()
        .filter(prompt_logs::Column::Prompt.eq("#always @@tokens=2"))
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert!(log.completion.is_none(), "left in flight for a lease sweep");
    assert!(
        CallReservations::find_by_id(log.id)
            .one(&app.db)
            .await
            .unwrap()
            .is_some(),
        "its reservation (the lease) is kept"
    );
    // Once the database takes it again, this process's lease sweep records the outcome the
    // call's task handed over: exact, not an estimate.
    sea_orm::ConnectionTrait::execute_unprepared(&direct, "DROP TRIGGER flaky ON prompt_logs")
        .await
        .unwrap();
    app.app_calls().wait_idle().await;
    assert_eq!(app.app_calls().recover().await.unwrap(), 1);
    let log = PromptLogs::find_by_id(log.id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(log.status, CallStatus::Ok);
    assert_eq!(
        log.completion.as_deref(),
        Some(upstream::answer("#always @@tokens=2", 2).as_str())
    );
    assert_eq!(log.completion_tokens, 2);
    tests::assert_books_balance(&app, &user.id, 2).await;
    app.shutdown().await;
}
