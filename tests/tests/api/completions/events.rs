//! A stream's delta events are sent from a template of the operation's first event, executed
//! once (the WebSocket transport's `DeltaLane`): whatever the selection asks (aliases,
//! fragments, `__typename`, `@skip`), each event must be what executing it would give; the
//! operation named among several gets it; unsubscribing stops the call; and an operation the
//! lane does not fit (two streams at once) still gets every delta. (The legacy protocol's
//! streams: `ws_protocol`.)

use std::sync::atomic::Ordering;

use serde_json::{Value, json};
use tests::ws::GqlWs;
use tests::{assert_books_balance, spawn_app};

const SHAPED: &str = "subscription($i: CompletionInput!, $skip: Boolean!) {
  completionStream(input: $i) {
    __typename
    a: delta
    ...Rest
    b: delta @skip(if: $skip)
    done
    log { status }
  }
}
fragment Rest on CompletionEvent { id: logId delta }";

fn keys(event: &Value) -> Vec<String> {
    event.as_object().unwrap().keys().cloned().collect()
}

#[tokio::test]
async fn each_delta_event_is_the_selection_executed() {
    let app = spawn_app().await;
    let user = app.sign_up("ada@example.com").await;
    let mut ws = GqlWs::connect(&app, Some(&user.token)).await;
    for (id, skip) in [("1", false), ("2", true)] {
        let prompt = format!("shapes {id} @@tokens=9");
        ws.subscribe(
            id,
            SHAPED,
            json!({ "i": { "prompt": prompt }, "skip": skip }),
        )
        .await;
        let (payloads, error) = ws.collect(id).await;
        assert!(error.is_none(), "{error:?}");
        let events: Vec<&Value> = payloads
            .iter()
            .map(|p| {
                assert!(p.get("errors").is_none(), "{p}");
                &p["data"]["completionStream"]
            })
            .collect();
        let (last, deltas) = events.split_last().unwrap();
        assert_eq!(last["done"], true);
        assert_eq!(last["log"]["status"], "OK");
        assert!(!deltas.is_empty());
        let mut text = String::new();
        for event in deltas {
            // The same fields in the same order as the last event, which async-graphql
            // executed in full.
            assert_eq!(keys(event), keys(last), "{event}");
            assert_eq!(event["__typename"], "CompletionEvent");
            assert_eq!(event["id"], last["id"]);
            assert_eq!(event["done"], false);
            assert_eq!(event["log"], Value::Null);
            assert_eq!(event["a"], event["delta"]);
            if skip {
                assert!(event.get("b").is_none(), "{event}");
            } else {
                assert_eq!(event["b"], event["delta"]);
            }
            text.push_str(event["delta"].as_str().unwrap());
        }
        assert_eq!(text, upstream::answer(&prompt, 9));
        assert_eq!(last["delta"], "");
    }
    assert_books_balance(&app, &user.id, 2).await;
    app.shutdown().await;
}

#[tokio::test]
async fn two_streams_in_one_operation_each_arrive_whole() {
    let app = spawn_app().await;
    let user = app.sign_up("ada@example.com").await;
    let mut ws = GqlWs::connect(&app, Some(&user.token)).await;
    ws.subscribe(
        "1",
        "subscription($i: CompletionInput!, $j: CompletionInput!) {
          x: completionStream(input: $i) { delta done }
          y: completionStream(input: $j) { delta done }
        }",
        json!({ "i": { "prompt": "first @@tokens=7" }, "j": { "prompt": "second @@tokens=5" } }),
    )
    .await;
    let (payloads, error) = ws.collect("1").await;
    assert!(error.is_none(), "{error:?}");
    let text = |field: &str| -> (String, usize) {
        let events: Vec<&Value> = payloads
            .iter()
            .filter_map(|p| p["data"].get(field))
            .collect();
        assert_eq!(events.last().unwrap()["done"], true, "{payloads:?}");
        let done = events.iter().filter(|e| e["done"] == true).count();
        (
            events.iter().filter_map(|e| e["delta"].as_str()).collect(),
            done,
        )
    };
    assert_eq!(text("x"), (upstream::answer("first @@tokens=7", 7), 1));
    assert_eq!(text("y"), (upstream::answer("second @@tokens=5", 5), 1));
    assert_books_balance(&app, &user.id, 2).await;
    app.shutdown().await;
}

#[tokio::test]
async fn the_operation_named_among_several_streams_from_its_template() {
    let app = spawn_app().await;
    let user = app.sign_up("ada@example.com").await;
    let mut ws = GqlWs::connect(&app, Some(&user.token)).await;
    let prompt = "named @@tokens=6";
    ws.send(json!({ "id": "1", "type": "subscribe", "payload": {
        "query": "query Q { __typename } subscription S($i: CompletionInput!) { completionStream(input: $i) { t: __typename delta } }",
        "operationName": "S",
        "variables": { "i": { "prompt": prompt } },
    } }))
    .await;
    let (payloads, error) = ws.collect("1").await;
    assert!(error.is_none(), "{error:?}");
    let text: String = payloads
        .iter()
        .map(|p| {
            let event = &p["data"]["completionStream"];
            assert_eq!(event["t"], "CompletionEvent", "{p}");
            event["delta"].as_str().unwrap()
        })
        .collect();
    assert_eq!(text, upstream::answer(prompt, 6));
    assert_books_balance(&app, &user.id, 1).await;
    app.shutdown().await;
}

#[tokio::test]
async fn unsubscribing_stops_the_call_while_the_socket_stays() {
    let app = spawn_app().await;
    let user = app.sign_up("ada@example.com").await;
    let mut ws = GqlWs::connect(&app, Some(&user.token)).await;
    ws.subscribe(
        "1",
        "subscription($i: CompletionInput!) { completionStream(input: $i) { delta } }",
        json!({ "i": { "prompt": "long @@tokens=400 @@pace_ms=20" } }),
    )
    .await;
    let first = ws.next().await.unwrap();
    assert_eq!(first["type"], "next", "{first}");
    ws.send(json!({ "type": "complete", "id": "1" })).await;
    // The call's deltas stop with the operation: the upstream request is dropped (long before
    // its 400 tokens) and the call is finalised and metered, with the socket still open.
    app.upstream
        .stats
        .wait_until(|s| s.abandoned.load(Ordering::SeqCst) == 1)
        .await;
    app.app_calls().wait_idle().await;
    assert_books_balance(&app, &user.id, 1).await;
    ws.send(json!({ "type": "ping" })).await;
    loop {
        let m = ws.next().await.expect("the socket stays open");
        match m["type"].as_str() {
            Some("next") => assert_eq!(m["id"], "1"),
            Some("pong") => break,
            _ => panic!("unexpected after complete: {m}"),
        }
    }
    app.shutdown().await;
}
