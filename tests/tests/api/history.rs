//! The read side: the history feed (keyset pagination, isolation, cursors, filters), usage
//! aggregates against hand-computed sums, DataLoader batching, and the request limits.

use std::sync::atomic::Ordering;

use chrono::{DateTime, Duration, TimeZone, Utc};
use entity::prompt_logs::{self, CallStatus};
use entity::token_usage;
use sea_orm::{ActiveModelTrait, Set};
use serde_json::{Value, json};
use tests::{TestApp, TestUser, error_code, spawn_app, spawn_app_with};
use uuid::Uuid;

const PAGE: &str =
    "query($first: Int, $after: String, $last: Int, $before: String, $filter: HistoryFilter) {
  history(first: $first, after: $after, last: $last, before: $before, filter: $filter) {
    edges { cursor node { id model status } }
    nodes { id }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}";

/// A final log at `at`, inserted directly (as the pipeline would have left it).
async fn log_at(
    app: &TestApp,
    user_id: &str,
    at: DateTime<Utc>,
    model: &str,
    status: CallStatus,
) -> prompt_logs::Model {
    prompt_logs::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user_id.to_owned()),
        model: Set(model.to_owned()),
        prompt: Set("p".into()),
        completion: Set(Some("c".into())),
        prompt_tokens: Set(1),
        completion_tokens: Set(1),
        latency_ms: Set(Some(1)),
        status: Set(status),
        metadata: Set(None),
        created_at: Set(at),
    }
    .insert(&app.db)
    .await
    .unwrap()
}

/// 25 logs on 5 timestamps (5 ties each); returns their ids newest first, ties by id descending.
async fn seed_feed(app: &TestApp, user_id: &str) -> Vec<String> {
    let base = Utc.with_ymd_and_hms(2026, 11, 2, 12, 0, 0).unwrap();
    let mut logs = Vec::new();
    for i in 0..25 {
        let at = base + Duration::milliseconds(i64::from(i / 5) * 1500);
        let (model, status) = if i % 3 == 0 {
            ("gpt-4o", CallStatus::Error)
        } else {
            ("gpt-4o-mini", CallStatus::Ok)
        };
        logs.push(log_at(app, user_id, at, model, status).await);
    }
    logs.sort_by_key(|l| std::cmp::Reverse((l.created_at, l.id)));
    logs.iter().map(|l| l.id.to_string()).collect()
}

async fn page(app: &TestApp, user: &TestUser, vars: Value) -> Value {
    app.gql(Some(&user.token), PAGE, vars).await
}

fn ids(body: &Value) -> Vec<String> {
    body["data"]["history"]["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|e| e["node"]["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn pages_are_exact_in_both_directions_with_tied_timestamps() {
    let app = spawn_app().await;
    let user = app.sign_up("ada@example.com").await;
    let expected = seed_feed(&app, &user.id).await;

    // Forward, 7 at a time: every log once, in order.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let body = page(&app, &user, json!({ "first": 7, "after": after })).await;
        let info = &body["data"]["history"]["pageInfo"];
        assert_eq!(info["hasPreviousPage"], pages > 0, "page {pages}: {info}");
        let got = ids(&body);
        let nodes: Vec<&str> = body["data"]["history"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["id"].as_str().unwrap())
            .collect();
        assert_eq!(
            nodes,
            got.iter().map(String::as_str).collect::<Vec<_>>(),
            "nodes mirror edges"
        );
        seen.extend(got);
        pages += 1;
        if info["hasNextPage"] == false {
            break;
        }
        after = Some(info["endCursor"].as_str().unwrap().to_owned());
    }
    assert_eq!(seen, expected);
    assert_eq!(pages, 4);

    // Backward from the end, 7 at a time: the same logs, in the same order.
    let mut back: Vec<String> = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let body = page(&app, &user, json!({ "last": 7, "before": before })).await;
        let info = &body["data"]["history"]["pageInfo"];
        let mut got = ids(&body);
        got.extend(back);
        back = got;
        if info["hasPreviousPage"] == false {
            break;
        }
        assert_eq!(info["hasNextPage"], before.is_some());
        before = Some(info["startCursor"].as_str().unwrap().to_owned());
    }
    assert_eq!(back, expected);

    // Boundaries: a page that ends exactly at the last log, an empty page, the default size.
    let body = page(&app, &user, json!({ "first": 25 })).await;
    assert_eq!(ids(&body), expected);
    assert_eq!(body["data"]["history"]["pageInfo"]["hasNextPage"], false);
    let body = page(&app, &user, json!({ "first": 0 })).await;
    assert!(ids(&body).is_empty());
    let body = page(&app, &user, json!({})).await;
    assert_eq!(ids(&body), expected[..20]);
    // After the 5th log (inside a group of ties), the next page starts exactly at the 6th.
    let fifth =
        page(&app, &user, json!({ "first": 5 })).await["data"]["history"]["pageInfo"]["endCursor"]
            .clone();
    let body = page(&app, &user, json!({ "first": 3, "after": fifth })).await;
    assert_eq!(ids(&body), expected[5..8]);
    app.shutdown().await;
}

#[tokio::test]
async fn filters_narrow_the_feed() {
    let app = spawn_app().await;
    let user = app.sign_up("ada@example.com").await;
    seed_feed(&app, &user.id).await;
    let body = page(
        &app,
        &user,
        json!({ "first": 100, "filter": { "model": "gpt-4o" } }),
    )
    .await;
    let edges = body["data"]["history"]["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 9);
    assert!(
        edges
            .iter()
            .all(|e| e["node"]["model"] == "gpt-4o" && e["node"]["status"] == "ERROR")
    );
    let body = page(
        &app,
        &user,
        json!({ "first": 100, "filter": { "status": "OK" } }),
    )
    .await;
    assert_eq!(ids(&body).len(), 16);
    let body = page(
        &app,
        &user,
        json!({ "first": 100, "filter": { "model": "gpt-4o", "status": "OK" } }),
    )
    .await;
    assert!(ids(&body).is_empty());
    app.shutdown().await;
}

#[tokio::test]
async fn users_see_only_their_own_logs_and_cursors() {
    let app = spawn_app().await;
    let ada = app.sign_up("ada@example.com").await;
    let bob = app.sign_up("bob@example.com").await;
    let ada_ids = seed_feed(&app, &ada.id).await;
    let bob_log = log_at(&app, &bob.id, Utc::now(), "gpt-4o-mini", CallStatus::Ok).await;

    let body = page(&app, &bob, json!({ "first": 100 })).await;
    assert_eq!(ids(&body), [bob_log.id.to_string()]);
    let body = page(&app, &ada, json!({ "first": 100 })).await;
    assert_eq!(ids(&body), ada_ids);

    // Ada's cursor is not Bob's to use; forged cursors are refused as cleanly.
    let ada_cursor =
        page(&app, &ada, json!({ "first": 1 })).await["data"]["history"]["pageInfo"]["endCursor"]
            .clone();
    for cursor in [ada_cursor, json!("not-a-cursor"), json!("eyJ4Ijox.AAAA")] {
        let body = page(&app, &bob, json!({ "first": 5, "after": cursor })).await;
        assert_eq!(error_code(&body), Some("BAD_USER_INPUT"), "{body}");
        assert!(body["data"].is_null());
    }
    // Signed out: UNAUTHENTICATED.
    let body = app.gql(None, PAGE, json!({ "first": 1 })).await;
    assert_eq!(error_code(&body), Some("UNAUTHENTICATED"));
    app.shutdown().await;
}

#[tokio::test]
async fn page_sizes_are_capped() {
    let app = spawn_app().await;
    let user = app.sign_up("ada@example.com").await;
    for vars in [
        json!({ "first": 101 }),
        json!({ "last": 101 }),
        json!({ "first": -1 }),
        json!({ "first": 1, "last": 1 }),
        json!({ "first": 1, "before": "x" }),
        json!({ "last": 1, "after": "x" }),
    ] {
        let body = page(&app, &user, vars.clone()).await;
        assert_eq!(error_code(&body), Some("BAD_USER_INPUT"), "{vars}: {body}");
    }
    assert!(page(&app, &user, json!({ "first": 100 })).await["errors"].is_null());
    app.shutdown().await;
}

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

#[tokio::test]
async fn nested_fields_are_batched_a_constant_number_of_statements() {
    let app = spawn_app().await;
    let user = app.sign_up("ada@example.com").await;
    for _ in 0..100 {
        log_at(&app, &user.id, Utc::now(), "gpt-4o-mini", CallStatus::Ok).await;
    }
    let q = "query($n: Int) { history(first: $n) { edges { node { id costMicrocents user { email profile { defaultModel tokensUsedThisMonth } } } } } }";
    let statements = app.statements();
    let mut counts = Vec::new();
    for n in [1, 10, 100] {
        let before = statements.load(Ordering::SeqCst);
        let body = app.gql(Some(&user.token), q, json!({ "n": n })).await;
        assert_eq!(
            body["data"]["history"]["edges"].as_array().map(Vec::len),
            Some(n as usize),
            "{body}"
        );
        counts.push(statements.load(Ordering::SeqCst) - before);
    }
    // Session lookup, the page, and one batched query per nested field; a batch may split in two
    // when rows resolve across the loader's collection window, but never grows with the page.
    assert!(counts.iter().all(|&n| n <= 8), "{counts:?}");
    assert!(
        counts[2] <= counts[0] + 2,
        "statements per page must not grow with its size: {counts:?}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn depth_complexity_and_recursion_are_limited() {
    let app = spawn_app_with(|v| {
        v.insert("GRAPHQL_MAX_DEPTH".into(), "6".into());
        v.insert("GRAPHQL_MAX_COMPLEXITY".into(), "300".into());
        v.insert("GRAPHQL_MAX_RECURSIVE_DEPTH".into(), "20".into());
    })
    .await;
    let user = app.sign_up("ada@example.com").await;
    let deep =
        "{ __schema { types { fields { type { ofType { ofType { ofType { name } } } } } } } }";
    let body = app.gql(Some(&user.token), deep, json!({})).await;
    assert_eq!(
        body["errors"][0]["message"], "Query is nested too deep.",
        "{body}"
    );
    let complex = "{ history(first: 100) { edges { node { id model prompt completion status user { email } } } } }";
    let body = app.gql(Some(&user.token), complex, json!({})).await;
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("complex"),
        "{body}"
    );
    let within = "{ history(first: 10) { edges { node { id model } } } }";
    assert!(app.gql(Some(&user.token), within, json!({})).await["errors"].is_null());
    let nested = format!(
        "{{ {}__typename{} }}",
        "... on Query { ".repeat(40),
        " }".repeat(40)
    );
    let body = app.gql(Some(&user.token), &nested, json!({})).await;
    assert!(body["data"].is_null(), "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("recursion depth"),
        "{body}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn request_bodies_are_bounded() {
    let app = spawn_app_with(|v| {
        v.insert("GRAPHQL_MAX_BODY_BYTES".into(), "4096".into());
    })
    .await;
    let big = json!({ "query": format!("{{ __typename }} # {}", "x".repeat(8192)) });
    let res = app
        .http
        .post(app.url("/graphql"))
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    let small = json!({ "query": "{ __typename }" });
    let res = app
        .http
        .post(app.url("/graphql"))
        .json(&small)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    app.shutdown().await;
}

#[tokio::test]
async fn introspection_and_the_ide_can_be_turned_off() {
    let on = spawn_app().await;
    let res = on
        .http
        .get(on.url("/graphql"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    let page = res.text().await.unwrap();
    assert!(page.contains("GraphiQL"), "the IDE is served by default");
    // Offline: everything the page loads comes from this server.
    assert!(
        !page.contains("http://") && !page.contains("https://") && !page.contains("//unpkg"),
        "{page}"
    );
    for asset in page.split('"').filter(|s| s.starts_with("/graphiql/")) {
        let res = on.http.get(on.url(asset)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{asset}");
        assert!(res.bytes().await.unwrap().len() > 1000, "{asset}");
    }
    assert!(
        on.gql(None, "{ __schema { queryType { name } } }", json!({}))
            .await["errors"]
            .is_null()
    );
    // The introspection query GraphiQL and codegen tools send (graphql-js's TypeRef nests
    // `ofType` nine deep) fits the default limits.
    let type_ref = format!(
        "kind name {}",
        "ofType { kind name ".repeat(9) + &"}".repeat(9)
    );
    let introspection = format!(
        "{{ __schema {{ types {{ fields(includeDeprecated: true) {{ args {{ type {{ {type_ref} }} }} type {{ {type_ref} }} }} }} }} }}"
    );
    let body = on.gql(None, &introspection, json!({})).await;
    assert!(body["errors"].is_null(), "{body}");
    on.shutdown().await;

    let off = spawn_app_with(|v| {
        v.insert("GRAPHQL_INTROSPECTION".into(), "false".into());
        v.insert("GRAPHQL_IDE".into(), "false".into());
    })
    .await;
    let res = off
        .http
        .get(off.url("/graphql"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        406,
        "no IDE: a browser's GET is not something this endpoint can answer"
    );
    let body = off
        .gql(None, "{ __schema { queryType { name } } }", json!({}))
        .await;
    assert!(body["data"]["__schema"].is_null(), "{body}");
    assert!(off.gql(None, "{ models { id } }", json!({})).await["errors"].is_null());
    off.shutdown().await;
}

#[tokio::test]
async fn responses_follow_graphql_over_http() {
    let app = spawn_app().await;
    let post = |accept: &'static str, query: &'static str| {
        let app = &app;
        async move {
            app.http
                .post(app.url("/graphql"))
                .header("accept", accept)
                .json(&json!({ "query": query }))
                .send()
                .await
                .unwrap()
        }
    };
    let res = post("application/graphql-response+json", "{ nope }").await;
    assert_eq!(res.status(), 400);
    assert_eq!(
        res.headers()["content-type"],
        "application/graphql-response+json"
    );
    let body: Value = res.json().await.unwrap();
    assert!(
        body.get("data").is_none() && body["errors"].is_array(),
        "{body}"
    );
    let res = post("application/json", "{ nope }").await;
    assert_eq!(
        (
            res.status().as_u16(),
            res.headers()["content-type"].to_str().unwrap()
        ),
        (200, "application/json")
    );
    let res = post(
        "application/graphql-response+json, application/json;q=0.9",
        "{ __typename }",
    )
    .await;
    assert_eq!(
        res.headers()["content-type"],
        "application/graphql-response+json"
    );
    let res = post("text/xml", "{ __typename }").await;
    assert_eq!(res.status(), 406);
    app.shutdown().await;
}
