//! Usage aggregates against hand-computed sums (windows on and off midnight, by model and by
//! day), and this month's usage against the profile's.

use chrono::{DateTime, Duration, TimeZone, Utc};
use entity::token_usage;
use sea_orm::{ActiveModelTrait, Set};
use serde_json::json;
use tests::{TestApp, error_code, spawn_app};
use uuid::Uuid;

/// A metered call at `at`, inserted directly.
async fn usage_at(
    app: &TestApp,
    user_id: &str,
    at: DateTime<Utc>,
    model: &str,
    p: i32,
    c: i32,
    cost: i64,
) {
    token_usage::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user_id.to_owned()),
        model: Set(model.to_owned()),
        prompt_tokens: Set(p),
        completion_tokens: Set(c),
        cost_microcents: Set(cost),
        created_at: Set(at),
    }
    .insert(&app.db)
    .await
    .unwrap();
}

const USAGE: &str = "query($from: DateTime, $to: DateTime) { usage(from: $from, to: $to) {
  from to calls promptTokens completionTokens costMicrocents
  byModel { model calls promptTokens completionTokens costMicrocents }
  byDay { day calls promptTokens completionTokens costMicrocents } } }";

#[tokio::test]
async fn usage_aggregates_match_hand_computed_sums() {
    let app = spawn_app().await;
    let ada = app.sign_up("ada@example.com").await;
    let bob = app.sign_up("bob@example.com").await;
    let d = |day: u32, h: u32| Utc.with_ymd_and_hms(2026, 3, day, h, 0, 0).unwrap();
    // In the window [March 1, April 1): two days, two models; edges of the window included/excluded.
    usage_at(&app, &ada.id, d(1, 0), "gpt-4o-mini", 100, 10, 2_100).await; // first instant: in
    usage_at(&app, &ada.id, d(1, 23), "gpt-4o", 5, 7, 7_012).await;
    usage_at(
        &app,
        &ada.id,
        d(31, 23),
        "gpt-4o-mini",
        1_000_000,
        2_000_000,
        135_000_000,
    )
    .await;
    usage_at(
        &app,
        &ada.id,
        d(31, 23) + Duration::minutes(59) + Duration::seconds(59),
        "gpt-4o-mini",
        1,
        1,
        75,
    )
    .await;
    usage_at(
        &app,
        &ada.id,
        Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0).unwrap(),
        "gpt-4o",
        9,
        9,
        9,
    )
    .await; // out
    usage_at(
        &app,
        &ada.id,
        Utc.with_ymd_and_hms(2026, 2, 28, 23, 59, 59).unwrap(),
        "gpt-4o",
        9,
        9,
        9,
    )
    .await; // out
    usage_at(&app, &bob.id, d(2, 12), "gpt-4o", 50, 50, 50).await; // someone else's

    let body = app
        .gql(
            Some(&ada.token),
            USAGE,
            json!({ "from": "2026-03-01T00:00:00Z", "to": "2026-04-01T00:00:00Z" }),
        )
        .await;
    let u = &body["data"]["usage"];
    assert_eq!(u["calls"], 4, "{body}");
    assert_eq!(u["promptTokens"], (100 + 5 + 1_000_000 + 1).to_string());
    assert_eq!(u["completionTokens"], (10 + 7 + 2_000_000 + 1).to_string());
    assert_eq!(
        u["costMicrocents"],
        (2_100 + 7_012 + 135_000_000 + 75).to_string()
    );
    assert_eq!(
        u["byModel"],
        json!([
            { "model": "gpt-4o", "calls": 1, "promptTokens": "5", "completionTokens": "7", "costMicrocents": "7012" },
            { "model": "gpt-4o-mini", "calls": 3, "promptTokens": "1000101", "completionTokens": "2000011", "costMicrocents": "135002175" },
        ])
    );
    assert_eq!(
        u["byDay"],
        json!([
            { "day": "2026-03-01", "calls": 2, "promptTokens": "105", "completionTokens": "17", "costMicrocents": "9112" },
            { "day": "2026-03-31", "calls": 2, "promptTokens": "1000001", "completionTokens": "2000001", "costMicrocents": "135000075" },
        ])
    );

    // Windows that do not start or end at midnight: whole days come from the daily rollup,
    // the partial first and last day from the rows themselves.
    let calls_in = |from: &str, to: &str| {
        let vars = json!({ "from": from, "to": to });
        let app = &app;
        let token = ada.token.clone();
        async move {
            let body = app.gql(Some(&token), USAGE, vars).await;
            let u = &body["data"]["usage"];
            let by_day: i64 = u["byDay"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["calls"].as_i64().unwrap())
                .sum();
            let by_model: i64 = u["byModel"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["calls"].as_i64().unwrap())
                .sum();
            assert_eq!(
                (by_day, by_model),
                (u["calls"].as_i64().unwrap(), u["calls"].as_i64().unwrap()),
                "{body}"
            );
            (
                u["calls"].as_i64().unwrap(),
                u["promptTokens"].as_str().unwrap().to_owned(),
            )
        }
    };
    // Mar 1 12:00 .. Mar 31 23:30: the 23:00 rows of both days, not 00:00 or 23:59:59.
    assert_eq!(
        calls_in("2026-03-01T12:00:00Z", "2026-03-31T23:30:00Z").await,
        (2, "1000005".into())
    );
    // Within one day.
    assert_eq!(
        calls_in("2026-03-01T00:00:00Z", "2026-03-01T12:00:00Z").await,
        (1, "100".into())
    );
    assert_eq!(
        calls_in("2026-03-01T00:00:01Z", "2026-03-01T22:59:59Z").await,
        (0, "0".into())
    );
    // Across midnight with no whole day: Feb 28 23:59:59 and Mar 1 00:00.
    assert_eq!(
        calls_in("2026-02-28T23:00:00Z", "2026-03-01T01:00:00Z").await,
        (2, "109".into())
    );
    // Whole days only, then a window ending exactly at midnight.
    assert_eq!(
        calls_in("2026-03-02T00:00:00Z", "2026-03-31T00:00:00Z").await,
        (0, "0".into())
    );
    assert_eq!(
        calls_in("2026-03-31T00:00:00Z", "2026-04-01T00:00:00Z").await,
        (2, "1000001".into())
    );

    // Bad windows.
    for vars in [
        json!({ "from": "2026-04-01T00:00:00Z", "to": "2026-03-01T00:00:00Z" }),
        json!({ "from": "2024-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z" }),
    ] {
        assert_eq!(
            error_code(&app.gql(Some(&ada.token), USAGE, vars).await),
            Some("BAD_USER_INPUT")
        );
    }
    app.shutdown().await;
}

#[tokio::test]
async fn this_months_usage_agrees_with_the_profile() {
    let app = spawn_app().await;
    let user = app.sign_up("ada@example.com").await;
    for prompt in [
        "one @@tokens=3",
        "two @@tokens=5 @@no_usage",
        "three @@fail=500",
    ] {
        app.gql(
            Some(&user.token),
            "mutation($i: CompletionInput!) { complete(input: $i) { id } }",
            json!({ "i": { "prompt": prompt } }),
        )
        .await;
    }
    let body = app
        .gql(Some(&user.token), "{ usage { calls promptTokens completionTokens } me { profile { tokensUsedThisMonth } } }", json!({}))
        .await;
    let u = &body["data"]["usage"];
    assert_eq!(u["calls"], 3, "{body}");
    let total: i64 = u["promptTokens"].as_str().unwrap().parse::<i64>().unwrap()
        + u["completionTokens"]
            .as_str()
            .unwrap()
            .parse::<i64>()
            .unwrap();
    assert_eq!(
        body["data"]["me"]["profile"]["tokensUsedThisMonth"],
        total.to_string()
    );
    app.shutdown().await;
}

/// The viewer's profile is read with the session, so a query's meter costs no statement of its
/// own; but only a query over HTTP uses that read. A mutation's payload shows the meter after
/// the call it made, and a WebSocket (whose caller was authenticated when it connected) reads
/// the meter when it asks.
#[tokio::test]
async fn the_meter_read_with_the_session_serves_queries_only() {
    use std::sync::atomic::Ordering;
    use tests::ws::GqlWs;

    const METER: &str = "{ me { profile { defaultModel tokensUsedThisMonth } } }";
    let app = spawn_app().await;
    let user = app.sign_up("ada@example.com").await;
    let mut ws = GqlWs::connect(&app, Some(&user.token)).await;
    async fn meter_over_ws(ws: &mut GqlWs, id: &str) -> serde_json::Value {
        ws.subscribe(id, METER, json!({})).await;
        let (payloads, error) = ws.collect(id).await;
        assert_eq!(error, None);
        payloads[0]["data"]["me"]["profile"]["tokensUsedThisMonth"].clone()
    }
    assert_eq!(meter_over_ws(&mut ws, "before").await, "0");

    // A query: the session's statement brings the profile and the meter.
    let statements = app.statements();
    let before = statements.load(Ordering::SeqCst);
    let body = app.gql(Some(&user.token), METER, json!({})).await;
    assert_eq!(
        body["data"]["me"]["profile"]["tokensUsedThisMonth"], "0",
        "{body}"
    );
    assert_eq!(statements.load(Ordering::SeqCst) - before, 1);

    // A mutation's payload: the meter after its own call (3 + 3 tokens).
    let body = app
        .gql(
            Some(&user.token),
            "mutation($i: CompletionInput!) { complete(input: $i) { user { profile { tokensUsedThisMonth } } } }",
            json!({ "i": { "prompt": "hi @@tokens=3" } }),
        )
        .await;
    let after_call = body["data"]["complete"]["user"]["profile"]["tokensUsedThisMonth"].clone();
    assert!(
        after_call.as_str().and_then(|t| t.parse::<i64>().ok()) > Some(0),
        "{body}"
    );

    // The next query, and the WebSocket connected before the call, agree with it.
    let body = app.gql(Some(&user.token), METER, json!({})).await;
    assert_eq!(
        body["data"]["me"]["profile"]["tokensUsedThisMonth"],
        after_call
    );
    assert_eq!(meter_over_ws(&mut ws, "after").await, after_call);

    // A profile changed by a mutation is read back changed, over HTTP and the socket.
    let body = app
        .gql(
            Some(&user.token),
            "mutation { updateProfile(input: { defaultModel: \"gpt-4o\" }) { defaultModel } }",
            json!({}),
        )
        .await;
    assert_eq!(
        body["data"]["updateProfile"]["defaultModel"], "gpt-4o",
        "{body}"
    );
    let body = app.gql(Some(&user.token), METER, json!({})).await;
    assert_eq!(
        body["data"]["me"]["profile"]["defaultModel"], "gpt-4o",
        "{body}"
    );
    ws.subscribe("model", METER, json!({})).await;
    let (payloads, _) = ws.collect("model").await;
    assert_eq!(
        payloads[0]["data"]["me"]["profile"]["defaultModel"],
        "gpt-4o"
    );
    app.shutdown().await;
}
