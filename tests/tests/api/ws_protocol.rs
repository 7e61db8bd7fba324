//! graphql-transport-ws to the letter of graphql-ws's PROTOCOL.md, driven by a raw socket: each
//! misbehaviour gets the protocol's close code and reason, validation failures the `error`
//! message; the limits (initialisation timeout, operations per socket, sockets per user and
//! per network, keepalive) and live sessions. The graphql-ws npm client's view of the same is
//! `tests/tests/graphql_ws_conformance.rs`.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tests::ws::GqlWs;
use tests::{TestApp, assert_books_balance, spawn_app, spawn_app_with_env};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::completions::STREAM;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A raw socket on `/graphql` speaking `protocol` (none when empty); Err: the HTTP status.
async fn raw(app: &TestApp, protocol: &str) -> Result<Ws, u16> {
    let mut req = format!("ws://{}/graphql", app.addr)
        .into_client_request()
        .unwrap();
    if !protocol.is_empty() {
        req.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_str(protocol).unwrap(),
        );
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => Err(res.status().as_u16()),
        Err(e) => panic!("websocket: {e}"),
    }
}

async fn send(ws: &mut Ws, message: Value) {
    send_text(ws, &message.to_string()).await;
}

async fn send_text(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
}

/// The next text message, as JSON; Err: the close frame (code, reason) that came instead.
async fn next(ws: &mut Ws) -> Result<Value, (u16, String)> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(&t).unwrap()),
            Some(Ok(Message::Close(Some(f)))) => {
                return Err((u16::from(f.code), f.reason.to_string()));
            }
            Some(Ok(Message::Close(None))) | None | Some(Err(_)) => {
                return Err((0, "closed without a close frame".into()));
            }
            Some(Ok(_)) => continue,
        }
    }
}

/// Read until the server closes: its code and reason.
async fn closed(ws: &mut Ws) -> (u16, String) {
    loop {
        if let Err(close) = next(ws).await {
            return close;
        }
    }
}

async fn init(ws: &mut Ws, token: Option<&str>) {
    let payload = token.map_or(
        json!({}),
        |t| json!({ "authorization": format!("Bearer {t}") }),
    );
    send(ws, json!({ "type": "connection_init", "payload": payload })).await;
    assert_eq!(next(ws).await.unwrap()["type"], "connection_ack");
}

#[allow(clippy::needless_pass_by_value)] // called with json! literals
fn subscribe(id: &str, query: &str, variables: Value) -> Value {
    json!({ "id": id, "type": "subscribe", "payload": { "query": query, "variables": variables } })
}

/// A stream that runs for a while (tokens paced by the local upstream).
fn long_stream(id: &str) -> Value {
    subscribe(
        id,
        STREAM,
        json!({ "i": { "prompt": "a long answer @@tokens=400 @@pace_ms=20" } }),
    )
}

fn close(code: u16, reason: &str) -> (u16, String) {
    (code, reason.to_owned())
}

#[tokio::test]
async fn subscribe_before_connection_ack_closes_4401() {
    let app = spawn_app().await;
    let mut ws = raw(&app, "graphql-transport-ws").await.unwrap();
    send(&mut ws, subscribe("1", "{ __typename }", json!({}))).await;
    assert_eq!(closed(&mut ws).await, close(4401, "Unauthorized"));
    app.shutdown().await;
}

#[tokio::test]
async fn connection_init_with_a_bad_token_closes_4403() {
    let app = spawn_app().await;
    for authorization in ["Bearer not-a-session", "Basic abc", ""] {
        let mut ws = raw(&app, "graphql-transport-ws").await.unwrap();
        send(
            &mut ws,
            json!({ "type": "connection_init", "payload": { "authorization": authorization } }),
        )
        .await;
        assert_eq!(
            closed(&mut ws).await,
            close(4403, "Forbidden"),
            "{authorization:?}"
        );
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_duplicate_operation_id_while_the_first_runs_closes_4409() {
    let app = spawn_app().await;
    let user = app.sign_up("ada@example.com").await;
    let mut ws = raw(&app, "graphql-transport-ws").await.unwrap();
    init(&mut ws, Some(&user.token)).await;
    send(&mut ws, long_stream("dup")).await;
    // The first token proves the first operation runs.
    assert_eq!(next(&mut ws).await.unwrap()["type"], "next");
    send(&mut ws, subscribe("dup", "{ __typename }", json!({}))).await;
    assert_eq!(
        closed(&mut ws).await,
        close(4409, "Subscriber for dup already exists")
    );
    // The stream it ended is metered like any call whose client left.
    app.app_calls().wait_idle().await;
    assert_books_balance(&app, &user.id, 1).await;
    app.shutdown().await;
}

#[tokio::test]
async fn messages_outside_the_protocol_close_4400() {
    let app = spawn_app().await;
    for (what, text) in [
        ("invalid JSON", "{not json".to_owned()),
        (
            "an unknown type",
            json!({ "type": "start", "id": "1" }).to_string(),
        ),
        (
            "a subscribe without id",
            json!({ "type": "subscribe", "payload": { "query": "{ __typename }" } }).to_string(),
        ),
        (
            "a subscribe without query",
            json!({ "type": "subscribe", "id": "1", "payload": {} }).to_string(),
        ),
        (
            "a server message",
            json!({ "type": "next", "id": "1", "payload": {} }).to_string(),
        ),
        ("a non-object", "[1,2]".to_owned()),
    ] {
        let mut ws = raw(&app, "graphql-transport-ws").await.unwrap();
        init(&mut ws, None).await;
        send_text(&mut ws, &text).await;
        assert_eq!(
            closed(&mut ws).await,
            close(4400, "Invalid message received"),
            "{what}"
        );
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_document_that_fails_validation_gets_an_error_message_and_the_socket_stays() {
    let app = spawn_app().await;
    let mut ws = raw(&app, "graphql-transport-ws").await.unwrap();
    init(&mut ws, None).await;
    for (id, query, code) in [
        ("1", "{ nope }", "GRAPHQL_VALIDATION_FAILED"),
        ("2", "{ models { id ", "GRAPHQL_PARSE_FAILED"),
        (
            "3",
            "query A { __typename } query B { __typename }",
            "GRAPHQL_VALIDATION_FAILED",
        ),
    ] {
        send(&mut ws, subscribe(id, query, json!({}))).await;
        let m = next(&mut ws).await.unwrap();
        assert_eq!(m["type"], "error", "{query}: {m}");
        assert_eq!(m["id"], id);
        assert!(
            m["payload"].as_array().is_some_and(|e| !e.is_empty()),
            "{m}"
        );
        assert_eq!(m["payload"][0]["extensions"]["code"], code, "{query}: {m}");
    }
    // No `complete` follows an `error`; the socket still serves (ping → pong, and a query).
    send(&mut ws, json!({ "type": "ping", "payload": { "n": 1 } })).await;
    assert_eq!(
        next(&mut ws).await.unwrap(),
        json!({ "type": "pong", "payload": { "n": 1 } })
    );
    send(&mut ws, subscribe("4", "{ __typename }", json!({}))).await;
    let m = next(&mut ws).await.unwrap();
    assert_eq!(
        (m["type"].as_str(), m["id"].as_str()),
        (Some("next"), Some("4")),
        "{m}"
    );
    assert_eq!(m["payload"]["data"]["__typename"], "Query");
    assert_eq!(
        next(&mut ws).await.unwrap(),
        json!({ "type": "complete", "id": "4" })
    );
    app.shutdown().await;
}

#[tokio::test]
async fn without_connection_init_the_socket_closes_4408() {
    let app = spawn_app_with_env(&[("WS_INIT_TIMEOUT_MS", "200")]).await;
    let mut ws = raw(&app, "graphql-transport-ws").await.unwrap();
    assert_eq!(
        closed(&mut ws).await,
        close(4408, "Connection initialisation timeout")
    );
    // Many idle sockets: each is closed by the timeout, and none is left counted.
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(raw(&app, "graphql-transport-ws").await.unwrap());
    }
    for ws in &mut idle {
        assert_eq!(closed(ws).await.0, 4408);
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_second_connection_init_closes_4429() {
    let app = spawn_app().await;
    let mut ws = raw(&app, "graphql-transport-ws").await.unwrap();
    init(&mut ws, None).await;
    send(&mut ws, json!({ "type": "connection_init" })).await;
    assert_eq!(
        closed(&mut ws).await,
        close(4429, "Too many initialisation requests")
    );
    app.shutdown().await;
}

#[tokio::test]
async fn ping_pong_and_complete_follow_the_protocol() {
    let app = spawn_app().await;
    let user = app.sign_up("ada@example.com").await;
    let mut ws = raw(&app, "graphql-transport-ws").await.unwrap();
    // ping is answered before init too, with its payload.
    send(&mut ws, json!({ "type": "ping" })).await;
    assert_eq!(next(&mut ws).await.unwrap(), json!({ "type": "pong" }));
    init(&mut ws, Some(&user.token)).await;
    // A pong (unsolicited) and a complete for an unknown id are ignored.
    send(&mut ws, json!({ "type": "pong", "payload": { "x": 1 } })).await;
    send(
        &mut ws,
        json!({ "type": "complete", "id": "never-started" }),
    )
    .await;
    send(&mut ws, long_stream("s")).await;
    assert_eq!(next(&mut ws).await.unwrap()["type"], "next");
    // The client's complete stops the operation; the server sends nothing more for it.
    send(&mut ws, json!({ "type": "complete", "id": "s" })).await;
    send(
        &mut ws,
        json!({ "type": "ping", "payload": { "after": "complete" } }),
    )
    .await;
    loop {
        let m = next(&mut ws).await.unwrap();
        match m["type"].as_str() {
            // Tokens already on their way may still arrive, never a complete.
            Some("next") => assert_eq!(m["id"], "s"),
            Some("pong") => {
                assert_eq!(m["payload"]["after"], "complete");
                break;
            }
            _ => panic!("unexpected after complete: {m}"),
        }
    }
    drop(ws);
    app.app_calls().wait_idle().await;
    assert_books_balance(&app, &user.id, 1).await;
    app.shutdown().await;
}

#[tokio::test]
async fn without_an_acceptable_subprotocol_the_socket_closes_4406() {
    let app = spawn_app().await;
    // (A client that offers protocols refuses an answer without one itself.)
    let mut ws = raw(&app, "").await.unwrap();
    assert_eq!(
        closed(&mut ws).await,
        close(4406, "Subprotocol not acceptable")
    );
    app.shutdown().await;
}

#[tokio::test]
async fn operations_per_socket_are_limited() {
    let app = spawn_app_with_env(&[("WS_MAX_OPERATIONS", "2")]).await;
    let user = app.sign_up("ada@example.com").await;
    let mut ws = raw(&app, "graphql-transport-ws").await.unwrap();
    init(&mut ws, Some(&user.token)).await;
    send(&mut ws, long_stream("a")).await;
    send(&mut ws, long_stream("b")).await;
    send(&mut ws, long_stream("c")).await;
    let mut refusal = None;
    let mut running = std::collections::HashSet::new();
    while refusal.is_none() || running.len() < 2 {
        let m = next(&mut ws).await.unwrap();
        match m["type"].as_str() {
            Some("error") => refusal = Some(m),
            Some("next") => {
                running.insert(m["id"].as_str().unwrap().to_owned());
            }
            _ => panic!("unexpected {m}"),
        }
    }
    let refusal = refusal.unwrap();
    assert_eq!(refusal["id"], "c");
    assert_eq!(
        refusal["payload"][0]["extensions"]["code"], "RATE_LIMITED",
        "{refusal}"
    );
    assert!(
        refusal["payload"][0]["message"]
            .as_str()
            .unwrap()
            .contains("at most 2 operations"),
        "{refusal}"
    );
    assert_eq!(running.len(), 2, "a and b run: {running:?}");
    drop(ws);
    // Only the two admitted calls reached the upstream.
    app.app_calls().wait_idle().await;
    assert_books_balance(&app, &user.id, 2).await;
    app.shutdown().await;
}

async fn init_as(app: &TestApp, token: &str) -> Result<Ws, (u16, String)> {
    let mut ws = raw(app, "graphql-transport-ws").await.unwrap();
    send(
        &mut ws,
        json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } }),
    )
    .await;
    match next(&mut ws).await {
        Ok(m) if m["type"] == "connection_ack" => Ok(ws),
        Ok(m) => panic!("unexpected {m}"),
        Err(close) => Err(close),
    }
}

#[tokio::test]
async fn sockets_per_user_are_limited() {
    let app = spawn_app_with_env(&[("WS_MAX_SOCKETS_PER_USER", "2")]).await;
    let user = app.sign_up("ada@example.com").await;
    let other = app.sign_up("bob@example.com").await;
    let _first = init_as(&app, &user.token).await.unwrap();
    let mut second = init_as(&app, &user.token).await.unwrap();
    assert_eq!(
        init_as(&app, &user.token).await.err(),
        Some(close(1013, "too many connections for this user"))
    );
    // Another user is not affected.
    let _bob = init_as(&app, &other.token).await.unwrap();
    // When one goes, the user may open another (once the server has seen it close).
    second.close(None).await.unwrap();
    let _ = closed(&mut second).await;
    loop {
        match init_as(&app, &user.token).await {
            Ok(_) => break,
            Err((1013, _)) => tokio::task::yield_now().await,
            Err(other) => panic!("{other:?}"),
        }
    }
    app.shutdown().await;
}

#[tokio::test]
async fn sockets_per_network_are_limited_before_the_upgrade() {
    let app = spawn_app_with_env(&[("WS_MAX_SOCKETS_PER_IP", "3")]).await;
    // All of these come from 127.0.0.1: three open, signed in or not; the fourth upgrade is
    // refused with 429 before it becomes a socket.
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(raw(&app, "graphql-transport-ws").await.unwrap());
    }
    assert_eq!(raw(&app, "graphql-transport-ws").await.err(), Some(429));
    let res = app
        .http
        .get(app.url("/graphql"))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "RATE_LIMITED",
        "{body}"
    );
    for ws in &mut open {
        init(ws, None).await;
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_session_deleted_elsewhere_closes_its_sockets_4403() {
    let app = spawn_app_with_env(&[("WS_SESSION_CHECK_SECS", "1")]).await;
    let user = app.sign_up("ada@example.com").await;
    let mut ws = GqlWs::connect(&app, Some(&user.token)).await;
    // Another app sharing the database (Better Auth's sign-out) deletes the session row.
    app.exec(&format!(
        "DELETE FROM session WHERE token = '{}'",
        user.token
    ))
    .await
    .unwrap();
    // The next periodic check (at most WS_SESSION_CHECK_SECS away) finds it gone.
    assert_eq!(ws.closed().await, Some((4403, "Forbidden".to_owned())));
    app.shutdown().await;
}

#[tokio::test]
async fn a_running_stream_finishes_after_sign_out_and_then_the_socket_closes() {
    let app = spawn_app().await;
    let user = app.sign_up("ada@example.com").await;
    let mut ws = GqlWs::connect(&app, Some(&user.token)).await;
    ws.subscribe(
        "1",
        STREAM,
        json!({ "i": { "prompt": "finish me @@tokens=30 @@pace_ms=10" } }),
    )
    .await;
    let first = ws.next().await.unwrap();
    assert_eq!(first["type"], "next", "{first}");
    let out = app
        .gql(Some(&user.token), "mutation { signOut }", json!({}))
        .await;
    assert_eq!(out["data"]["signOut"], true);
    let (payloads, error) = ws.collect("1").await;
    assert!(error.is_none(), "{error:?}");
    let last = payloads.last().unwrap();
    assert_eq!(last["data"]["completionStream"]["done"], true, "{last}");
    assert_eq!(ws.closed().await, Some((4403, "Forbidden".to_owned())));
    assert_books_balance(&app, &user.id, 1).await;
    app.shutdown().await;
}

#[tokio::test]
async fn the_server_pings_and_drops_a_silent_peer() {
    let app = spawn_app_with_env(&[("WS_KEEPALIVE_SECS", "1")]).await;
    // A live client sees ping frames (tungstenite answers them).
    let mut ws = raw(&app, "graphql-transport-ws").await.unwrap();
    init(&mut ws, None).await;
    match ws.next().await.unwrap().unwrap() {
        Message::Ping(_) => {}
        other => panic!("unexpected {other:?}"),
    }
    // A peer that completes the upgrade and then never reads or answers is dropped after two
    // silent intervals: its connection reaches end of file.
    let mut tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    tcp.write_all(
        format!(
            "GET /graphql HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n",
            app.addr
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    // Send connection_init (masked, as clients must) so the init timeout is not what ends it.
    let init = br#"{"type":"connection_init"}"#;
    let mut frame = vec![0x81, 0x80 | init.len() as u8, 0, 0, 0, 0];
    frame.extend_from_slice(init);
    tcp.write_all(&frame).await.unwrap();
    let mut sink = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), tcp.read_to_end(&mut sink)).await;
    assert!(read.is_ok(), "the silent peer was never dropped");
    let text = String::from_utf8_lossy(&sink);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    app.shutdown().await;
}

#[tokio::test]
async fn legacy_graphql_ws_keeps_its_own_semantics() {
    let app = spawn_app().await;
    let mut ws = raw(&app, "graphql-ws").await.unwrap();
    send(&mut ws, json!({ "type": "connection_init", "payload": {} })).await;
    assert_eq!(next(&mut ws).await.unwrap()["type"], "connection_ack");
    assert_eq!(next(&mut ws).await.unwrap()["type"], "ka");
    // Validation errors come as data, then complete (as its reference server does).
    send(
        &mut ws,
        json!({ "id": "1", "type": "start", "payload": { "query": "{ nope }" } }),
    )
    .await;
    let m = next(&mut ws).await.unwrap();
    assert_eq!(m["type"], "data", "{m}");
    assert_eq!(
        m["payload"]["errors"][0]["extensions"]["code"],
        "GRAPHQL_VALIDATION_FAILED"
    );
    assert_eq!(
        next(&mut ws).await.unwrap(),
        json!({ "type": "complete", "id": "1" })
    );
    // Bad messages are answered in-band; the socket stays.
    send_text(&mut ws, "{oops").await;
    assert_eq!(next(&mut ws).await.unwrap()["type"], "connection_error");
    send(&mut ws, json!({ "id": "2", "type": "subscribe" })).await;
    let m = next(&mut ws).await.unwrap();
    assert_eq!(
        (m["type"].as_str(), m["id"].as_str()),
        (Some("error"), Some("2")),
        "{m}"
    );
    send(
        &mut ws,
        json!({ "id": "3", "type": "start", "payload": { "query": "{ __typename }" } }),
    )
    .await;
    let m = next(&mut ws).await.unwrap();
    assert_eq!(m["payload"]["data"]["__typename"], "Query", "{m}");
    assert_eq!(
        next(&mut ws).await.unwrap(),
        json!({ "type": "complete", "id": "3" })
    );
    send(&mut ws, json!({ "type": "connection_terminate" })).await;
    assert_eq!(closed(&mut ws).await.0, 1000);
    app.shutdown().await;
}

#[tokio::test]
async fn the_process_holds_at_most_ws_max_sockets() {
    let app = spawn_app_with_env(&[("WS_MAX_SOCKETS", "2")]).await;
    let _a = raw(&app, "graphql-transport-ws").await.unwrap();
    let _b = raw(&app, "graphql-transport-ws").await.unwrap();
    assert_eq!(raw(&app, "graphql-transport-ws").await.err(), Some(429));
    app.shutdown().await;
}

#[tokio::test]
async fn a_server_shutting_down_closes_its_sockets_1001_once_their_operations_end() {
    let app = spawn_app_with_env(&[("SHUTDOWN_GRACE_SECS", "5")]).await;
    let user = app.sign_up("ada@example.com").await;
    let mut idle = GqlWs::connect(&app, Some(&user.token)).await;
    let mut busy = GqlWs::connect(&app, Some(&user.token)).await;
    busy.subscribe(
        "1",
        STREAM,
        json!({ "i": { "prompt": "finish me @@tokens=40 @@pace_ms=10" } }),
    )
    .await;
    assert_eq!(busy.next().await.unwrap()["type"], "next");
    let stopping = tokio::spawn(app.shutdown());
    assert_eq!(
        idle.closed().await,
        Some((1001, "server shutting down".to_owned()))
    );
    // The running stream finishes within the grace period, then its socket closes too.
    let (payloads, error) = busy.collect("1").await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        payloads.last().unwrap()["data"]["completionStream"]["done"],
        true
    );
    assert_eq!(
        busy.closed().await,
        Some((1001, "server shutting down".to_owned()))
    );
    stopping.await.unwrap();
}

#[tokio::test]
async fn sockets_without_sign_in_have_a_cap_of_their_own() {
    let app = spawn_app_with_env(&[("WS_MAX_ANONYMOUS_SOCKETS", "1")]).await;
    let user = app.sign_up("ada@example.com").await;
    let mut anonymous = raw(&app, "graphql-transport-ws").await.unwrap();
    init(&mut anonymous, None).await;
    let mut second = raw(&app, "graphql-transport-ws").await.unwrap();
    send(&mut second, json!({ "type": "connection_init" })).await;
    assert_eq!(
        closed(&mut second).await,
        close(1013, "too many connections without sign-in")
    );
    // Signed-in users are not crowded out.
    let _signed_in = init_as(&app, &user.token).await.unwrap();
    app.shutdown().await;
}

#[tokio::test]
async fn a_legacy_client_gets_a_stream_whole_and_its_end() {
    // The deltas of a `start`ed completionStream are made from its template, as `data`.
    let app = spawn_app().await;
    let user = app.sign_up("ada@example.com").await;
    let mut ws = raw(&app, "graphql-ws").await.unwrap();
    send(
        &mut ws,
        json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {}", user.token) } }),
    )
    .await;
    assert_eq!(next(&mut ws).await.unwrap()["type"], "connection_ack");
    let prompt = "legacy @@tokens=8";
    send(
        &mut ws,
        json!({ "id": "1", "type": "start", "payload": { "query": STREAM, "variables": { "i": { "prompt": prompt } } } }),
    )
    .await;
    let mut text = String::new();
    let last = loop {
        let m = next(&mut ws).await.unwrap();
        match m["type"].as_str() {
            Some("ka") => continue,
            Some("data") => {
                assert_eq!(m["id"], "1", "{m}");
                let event = &m["payload"]["data"]["completionStream"];
                if event["done"] == true {
                    break event.clone();
                }
                text.push_str(event["delta"].as_str().unwrap());
            }
            _ => panic!("unexpected: {m}"),
        }
    };
    assert_eq!(text, upstream::answer(prompt, 8));
    assert_eq!(last["log"]["completion"].as_str().unwrap(), text);
    assert_eq!(
        next(&mut ws).await.unwrap(),
        json!({ "type": "complete", "id": "1" })
    );
    assert_books_balance(&app, &user.id, 1).await;
    app.shutdown().await;
}
