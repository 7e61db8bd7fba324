//! An attacker's requests, each refused quickly with the right code, with nothing written and
//! nothing sent upstream for it, while the server goes on answering.

use std::sync::atomic::Ordering;

use entity::prelude::*;
use entity::prompt_logs;
use sea_orm::{EntityTrait, PaginatorTrait};
use serde_json::{Value, json};
use tests::ws::GqlWs;
use tests::{TestApp, error_code, spawn_app, spawn_app_with, spawn_app_with_env};

const COMPLETE: &str =
    "mutation($i: CompletionInput!) { complete(input: $i) { id status completion metadata } }";

fn message(body: &Value) -> &str {
    body["errors"][0]["message"].as_str().unwrap_or("")
}

async fn query(app: &TestApp, token: Option<&str>, q: &str) -> Value {
    app.gql(token, q, json!({})).await
}

#[tokio::test]
async fn documents_over_a_limit_are_refused_before_anything_runs() {
    let app = spawn_app().await;
    let user = app.sign_up("ada@example.com").await;

    // 2,000 aliased signIns in one request: refused as a document, no resolver (no hash) runs.
    let many: String = (0..2000)
        .map(|i| format!("s{i}: signIn(input: {{email: \"ada@example.com\", password: \"wrong-password\"}}) {{ token }} "))
        .collect();
    let body = query(&app, None, &format!("mutation {{ {many} }}")).await;
    assert_eq!(
        error_code(&body),
        Some("GRAPHQL_VALIDATION_FAILED"),
        "{body}"
    );
    assert!(message(&body).contains("at most 20 root fields"), "{body}");
    // Two are already one too many: each costs a password hash.
    let two = query(&app, None, "mutation { a: signIn(input: {email: \"ada@example.com\", password: \"wrong-password\"}) { token } b: signIn(input: {email: \"ada@example.com\", password: \"wrong-password\"}) { token } }").await;
    assert_eq!(error_code(&two), Some("GRAPHQL_VALIDATION_FAILED"), "{two}");
    assert!(
        message(&two).contains("at most one signIn or signUp"),
        "{two}"
    );
    // The attempts were never counted: the real owner still signs in at once.
    let ok = app
        .gql(
            None,
            "mutation($i: SignInInput!) { signIn(input: $i) { token } }",
            json!({ "i": { "email": user.email, "password": user.password } }),
        )
        .await;
    assert!(ok["data"]["signIn"]["token"].is_string(), "{ok}");

    // 2,000 aliased usage aggregates: refused by the alias limit; 12 by their cost.
    let usage: String = (0..2000)
        .map(|i| format!("u{i}: usage {{ calls }} "))
        .collect();
    let body = query(&app, Some(&user.token), &format!("{{ {usage} }}")).await;
    assert_eq!(
        error_code(&body),
        Some("GRAPHQL_VALIDATION_FAILED"),
        "{body}"
    );
    let usage: String = (0..12)
        .map(|i| format!("u{i}: usage {{ calls }} "))
        .collect();
    let body = query(&app, Some(&user.token), &format!("{{ {usage} }}")).await;
    assert_eq!(
        error_code(&body),
        Some("GRAPHQL_VALIDATION_FAILED"),
        "{body}"
    );
    assert!(message(&body).contains("complex"), "{body}");
    let root: String = (0..21).map(|i| format!("t{i}: __typename ")).collect();
    let body = query(&app, None, &format!("{{ {root} }}")).await;
    assert!(message(&body).contains("at most 20 root fields"), "{body}");

    // Directives piled on one field, a document that does not parse, an unknown operation.
    let body = query(
        &app,
        None,
        &format!("{{ __typename {} }}", "@skip(if: false) ".repeat(6)),
    )
    .await;
    assert_eq!(
        error_code(&body),
        Some("GRAPHQL_VALIDATION_FAILED"),
        "{body}"
    );
    let body = query(&app, None, "{ me { id ").await;
    assert_eq!(error_code(&body), Some("GRAPHQL_PARSE_FAILED"), "{body}");
    let res: Value = app
        .http
        .post(app.url("/graphql"))
        .json(&json!({ "query": "query A { me { id } }", "operationName": "B" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(error_code(&res), Some("GRAPHQL_VALIDATION_FAILED"), "{res}");
    // A value that does not fit its type.
    let res = app
        .gql(
            Some(&user.token),
            "query($n: Int) { history(first: $n) { nodes { id } } }",
            json!({ "n": "many" }),
        )
        .await;
    assert!(error_code(&res).is_some(), "{res}");

    // Meanwhile ordinary requests are served.
    let me = query(&app, Some(&user.token), "{ me { email } }").await;
    assert_eq!(me["data"]["me"]["email"], "ada@example.com");
    assert_eq!(app.upstream.stats.requests.load(Ordering::SeqCst), 0);
    app.shutdown().await;
}

#[tokio::test]
async fn sign_ins_that_cannot_match_are_refused_without_a_hash_and_ips_share_their_64() {
    let app = spawn_app_with_env(&[("TRUST_PROXY", "true"), ("AUTH_RATE_LIMIT_MAX", "3")]).await;
    let sign_in = async |email: &str, password: &str, ip: &str| -> Value {
        app.http
            .post(app.url("/graphql"))
            .header("x-forwarded-for", format!("203.0.113.9, {ip}"))
            .json(&json!({
                "query": "mutation($i: SignInInput!) { signIn(input: $i) { token } }",
                "variables": { "i": { "email": email, "password": password } }
            }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    };
    // Malformed emails and out-of-range passwords: no account has them.
    for (email, password) in [
        ("not an email", "long enough pw"),
        ("ada@example.com", "short"),
    ] {
        let body: Value = sign_in(email, password, "198.51.100.1").await;
        assert_eq!(error_code(&body), Some("INVALID_CREDENTIALS"), "{body}");
    }
    // Three attempts per 10 s per network: an IPv6 client cannot escape by changing the low
    // 64 bits of its address.
    for i in 1..=3 {
        let body: Value = sign_in(
            &format!("u{i}@example.com"),
            "long enough pw",
            &format!("2001:db8:7:7::{i}"),
        )
        .await;
        assert_eq!(error_code(&body), Some("INVALID_CREDENTIALS"), "{body}");
    }
    let body: Value = sign_in("u4@example.com", "long enough pw", "2001:db8:7:7:ffff::4").await;
    assert_eq!(error_code(&body), Some("RATE_LIMITED"), "{body}");
    assert!(
        body["errors"][0]["extensions"]["retryAfter"]
            .as_u64()
            .unwrap()
            >= 1
    );
    app.shutdown().await;
}

#[tokio::test]
async fn one_account_cannot_run_more_than_its_concurrent_calls() {
    // The server's own default (4), not the test harness's.
    let app = spawn_app_with(|v| {
        v.remove("USER_MAX_CONCURRENT_CALLS");
    })
    .await;
    let user = app.sign_up("ada@example.com").await;
    let calls = (0..50).map(|_| {
        app.gql(
            Some(&user.token),
            COMPLETE,
            json!({ "i": { "prompt": "slow @@tokens=10 @@pace_ms=100", "maxTokens": 20 } }),
        )
    });
    let results = futures_util::future::join_all(calls).await;
    let ok = results
        .iter()
        .filter(|b| b["data"]["complete"]["status"] == "OK")
        .count();
    let limited: Vec<&Value> = results
        .iter()
        .filter(|b| error_code(b) == Some("RATE_LIMITED"))
        .collect();
    assert!((1..=4).contains(&ok), "{ok} admitted");
    assert_eq!(ok + limited.len(), 50, "{results:?}");
    assert!(message(limited[0]).contains("at most 4 calls may run at once"));
    assert_eq!(limited[0]["errors"][0]["extensions"]["retryAfter"], 1);
    // Nothing written and nothing sent for the refused ones.
    let logs = PromptLogs::find().count(&app.db).await.unwrap();
    assert_eq!(logs as usize, ok);
    assert_eq!(
        app.upstream.stats.requests.load(Ordering::SeqCst) as usize,
        ok
    );
    app.shutdown().await;
}

#[tokio::test]
async fn calls_per_minute_are_counted_across_the_window_and_overridable_by_the_operator() {
    let app = spawn_app_with_env(&[("USER_CALLS_PER_MINUTE", "3")]).await;
    let user = app.sign_up("ada@example.com").await;
    let call = || {
        app.gql(
            Some(&user.token),
            COMPLETE,
            json!({ "i": { "prompt": "hi @@tokens=2" } }),
        )
    };
    for _ in 0..3 {
        let body = call().await;
        assert_eq!(body["data"]["complete"]["status"], "OK", "{body}");
    }
    let refused = call().await;
    assert_eq!(error_code(&refused), Some("RATE_LIMITED"), "{refused}");
    assert!(message(&refused).contains("at most 3 calls per minute"));
    let retry = refused["errors"][0]["extensions"]["retryAfter"]
        .as_u64()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // The operator lifts the limit for this user (0 = unlimited).
    let config = api::config::Config::from_vars(tests::base_vars(&app.database)).unwrap();
    let said = api::service::admin::set_limits(&config, &user.email, None, Some(0))
        .await
        .unwrap();
    assert!(said.contains("unlimited per minute"), "{said}");
    let body = call().await;
    assert_eq!(body["data"]["complete"]["status"], "OK", "{body}");
    assert_eq!(app.upstream.stats.requests.load(Ordering::SeqCst), 4);
    app.shutdown().await;
}

#[tokio::test]
async fn an_upstream_error_event_carrying_nul_still_ends_the_call() {
    let app = spawn_app().await;
    let user = app.sign_up("ada@example.com").await;
    let mut ws = GqlWs::connect(&app, Some(&user.token)).await;
    ws.subscribe(
        "1",
        "subscription($i: CompletionInput!) { completionStream(input: $i) { delta done } }",
        json!({ "i": { "prompt": "x @@tokens=6 @@error_after=2 @@nul" } }),
    )
    .await;
    let (payloads, _) = ws.collect("1").await;
    let last = payloads.last().expect("the stream ends");
    assert_eq!(
        last["errors"][0]["extensions"]["code"], "UPSTREAM_ERROR",
        "{payloads:?}"
    );
    let log = PromptLogs::find().one(&app.db).await.unwrap().unwrap();
    assert!(!log.in_flight());
    assert_eq!(log.status, prompt_logs::CallStatus::Error);
    assert!(
        log.completion.as_deref().unwrap().ends_with('\u{FFFD}'),
        "{log:?}"
    );
    let meta = log.metadata.unwrap();
    assert_eq!(meta["nul_replaced"], 1);
    // The upstream's own words stay in the server log.
    assert!(!meta["error"].as_str().unwrap().contains("byte"), "{meta}");
    assert_eq!(TokenUsage::find().count(&app.db).await.unwrap(), 1);
    app.shutdown().await;
}

#[tokio::test]
async fn nothing_about_the_upstream_leaks_and_no_date_panics() {
    let app = spawn_app().await;
    let body = query(&app, None, "{ models { id upstream } }").await;
    for m in body["data"]["models"].as_array().unwrap() {
        assert_eq!(m["upstream"], "openai-compatible", "{m}");
    }
    let user = app.sign_up("ada@example.com").await;
    let body = app
        .gql(
            Some(&user.token),
            "query($f: DateTime, $t: DateTime) { usage(from: $f, to: $t) { calls } }",
            json!({ "f": "+262142-12-31T12:00:00Z", "t": "+262142-12-31T13:00:00Z" }),
        )
        .await;
    assert!(error_code(&body).is_some(), "{body}");
    let body = app
        .gql(
            Some(&user.token),
            "query($f: DateTime, $t: DateTime) { usage(from: $f, to: $t) { calls } }",
            json!({ "f": "9999-12-31T00:00:00Z", "t": "9999-12-31T23:59:59Z" }),
        )
        .await;
    assert_eq!(body["data"]["usage"]["calls"], 0, "{body}");
    let body = app
        .gql(
            Some(&user.token),
            COMPLETE,
            json!({ "i": { "prompt": "hi @@fail=429" } }),
        )
        .await;
    assert_eq!(error_code(&body), Some("UPSTREAM_ERROR"));
    assert_eq!(
        message(&body),
        "the upstream is rate limiting this server (HTTP 429)"
    );
    // The server still answers.
    let me = query(&app, Some(&user.token), "{ me { email } }").await;
    assert_eq!(me["data"]["me"]["email"], "ada@example.com");
    app.shutdown().await;
}

/// A call over a WebSocket takes its caller's profile and limits from the session check that
/// precedes it (one statement): they must be as fresh as a read of their own, on a socket opened
/// before they changed.
#[tokio::test]
async fn a_socket_s_calls_see_profile_and_limit_changes_made_after_it_opened() {
    let app = spawn_app_with_env(&[("USER_CALLS_PER_MINUTE", "5")]).await;
    let user = app.sign_up("ada@example.com").await;
    let mut ws = GqlWs::connect(&app, Some(&user.token)).await;
    const STREAM: &str =
        "subscription($i: CompletionInput!) { completionStream(input: $i) { done log { model } } }";
    ws.subscribe("1", STREAM, json!({ "i": { "prompt": "hi @@tokens=2" } }))
        .await;
    let (payloads, error) = ws.collect("1").await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        payloads.last().unwrap()["data"]["completionStream"]["log"]["model"],
        "gpt-4o-mini",
        "{payloads:?}"
    );
    // The default model changes over the same socket, then the next call uses it.
    ws.subscribe(
        "2",
        "mutation { updateProfile(input: { defaultModel: \"gpt-4.1-nano\" }) { defaultModel } }",
        json!({}),
    )
    .await;
    let (payloads, _) = ws.collect("2").await;
    assert_eq!(
        payloads[0]["data"]["updateProfile"]["defaultModel"], "gpt-4.1-nano",
        "{payloads:?}"
    );
    ws.subscribe("3", STREAM, json!({ "i": { "prompt": "hi @@tokens=2" } }))
        .await;
    let (payloads, _) = ws.collect("3").await;
    assert_eq!(
        payloads.last().unwrap()["data"]["completionStream"]["log"]["model"],
        "gpt-4.1-nano",
        "{payloads:?}"
    );
    // The operator lowers this user's limit to the 2 calls already made: the next is refused.
    let config = api::config::Config::from_vars(tests::base_vars(&app.database)).unwrap();
    api::service::admin::set_limits(&config, &user.email, None, Some(2))
        .await
        .unwrap();
    ws.subscribe("4", STREAM, json!({ "i": { "prompt": "hi @@tokens=2" } }))
        .await;
    let (payloads, error) = ws.collect("4").await;
    let refusal = error
        .map(|e| e["payload"][0].clone())
        .or_else(|| payloads.last().map(|p| p["errors"][0].clone()))
        .unwrap_or_default();
    assert_eq!(
        refusal["extensions"]["code"], "RATE_LIMITED",
        "{payloads:?}"
    );
    assert!(
        refusal["message"]
            .as_str()
            .unwrap()
            .contains("at most 2 calls per minute"),
        "{refusal}"
    );
    assert_eq!(app.upstream.stats.requests.load(Ordering::SeqCst), 2);
    app.shutdown().await;
}
