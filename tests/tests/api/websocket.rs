//! WebSocket connections: origin check on the upgrade, authentication from the upgrade's cookie
//! or from `connection_init`, both subprotocols, and a socket whose session ended cannot call.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tests::ws::GqlWs;
use tests::{TestApp, assert_books_balance, spawn_app, spawn_app_with_env};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::completions::STREAM;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn app() -> TestApp {
    spawn_app_with_env(&[("BETTER_AUTH_URL", "http://app.localhost:4000")]).await
}

async fn connect(app: &TestApp, protocol: &str, headers: &[(&str, String)]) -> Result<Ws, u16> {
    let mut req = format!("ws://{}/graphql", app.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_str(protocol).unwrap(),
    );
    for (name, value) in headers {
        let name =
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap();
        req.headers_mut()
            .insert(name, HeaderValue::from_str(value).unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => Err(res.status().as_u16()),
        Err(e) => panic!("websocket: {e}"),
    }
}

async fn next_json(ws: &mut Ws) -> Option<Value> {
    loop {
        match ws.next().await? {
            Ok(Message::Text(t)) => return Some(serde_json::from_str(&t).unwrap()),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

/// graphql-transport-ws: init, run `{ me { email } }`, return what `me` was.
async fn me_over_ws(ws: &mut Ws, init_payload: Value) -> Result<Value, String> {
    ws.send(Message::text(
        json!({ "type": "connection_init", "payload": init_payload }).to_string(),
    ))
    .await
    .unwrap();
    match next_json(ws).await {
        Some(m) if m["type"] == "connection_ack" => {}
        other => return Err(format!("no ack: {other:?}")),
    }
    ws.send(Message::text(
        json!({ "id": "1", "type": "subscribe", "payload": { "query": "{ me { email } }" } })
            .to_string(),
    ))
    .await
    .unwrap();
    let m = next_json(ws).await.ok_or("closed")?;
    assert_eq!(m["type"], "next", "{m}");
    Ok(m["payload"]["data"]["me"].clone())
}

#[tokio::test]
async fn connection_init_bearer_authenticates() {
    let app = app().await;
    let u = app.sign_up("ada@example.com").await;
    let mut ws = connect(&app, "graphql-transport-ws", &[]).await.unwrap();
    let me = me_over_ws(
        &mut ws,
        json!({ "authorization": format!("Bearer {}", u.token) }),
    )
    .await
    .unwrap();
    assert_eq!(me["email"], "ada@example.com");

    let mut anonymous = connect(&app, "graphql-transport-ws", &[]).await.unwrap();
    assert!(
        me_over_ws(&mut anonymous, json!({}))
            .await
            .unwrap()
            .is_null()
    );

    let mut bad = connect(&app, "graphql-transport-ws", &[]).await.unwrap();
    assert!(
        me_over_ws(&mut bad, json!({ "authorization": "Bearer not-a-session" }))
            .await
            .is_err()
    );
    app.shutdown().await;
}

#[tokio::test]
async fn the_upgrade_requests_cookie_authenticates() {
    let app = app().await;
    let u = app.sign_up("ada@example.com").await;
    let cookie = format!(
        "better-auth.session_token={}",
        tests::signed_cookie_value(&u.token)
    );
    let mut ws = connect(
        &app,
        "graphql-transport-ws",
        &[
            ("cookie", cookie.clone()),
            ("origin", "http://app.localhost:4000".into()),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        me_over_ws(&mut ws, json!({})).await.unwrap()["email"],
        "ada@example.com"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn upgrades_from_untrusted_origins_are_refused() {
    let app = app().await;
    let refused = connect(
        &app,
        "graphql-transport-ws",
        &[("origin", "https://evil.example".into())],
    )
    .await;
    assert_eq!(refused.err(), Some(403));
    assert!(
        connect(
            &app,
            "graphql-transport-ws",
            &[("origin", "http://app.localhost:4000".into())]
        )
        .await
        .is_ok()
    );
    app.shutdown().await;
}

#[tokio::test]
async fn the_legacy_graphql_ws_protocol_works_too() {
    let app = app().await;
    let u = app.sign_up("ada@example.com").await;
    let mut ws = connect(&app, "graphql-ws", &[]).await.unwrap();
    ws.send(Message::text(
        json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {}", u.token) } }).to_string(),
    ))
    .await
    .unwrap();
    assert_eq!(next_json(&mut ws).await.unwrap()["type"], "connection_ack");
    ws.send(Message::text(
        json!({ "id": "1", "type": "start", "payload": { "query": "{ me { email } }" } })
            .to_string(),
    ))
    .await
    .unwrap();
    let m = loop {
        let m = next_json(&mut ws).await.unwrap();
        if m["type"] != "ka" {
            break m;
        }
    };
    assert_eq!(m["type"], "data", "{m}");
    assert_eq!(m["payload"]["data"]["me"]["email"], "ada@example.com");
    app.shutdown().await;
}

#[tokio::test]
async fn a_websocket_cannot_call_after_its_session_ended() {
    let app = spawn_app().await;
    let user = app.sign_up("ada@example.com").await;
    let mut ws = GqlWs::connect(&app, Some(&user.token)).await;
    let mut idle = GqlWs::connect(&app, Some(&user.token)).await;
    // Signed out elsewhere (the same session, over HTTP): this server's sockets of that
    // session close at once, 4403.
    let out = app
        .gql(Some(&user.token), "mutation { signOut }", json!({}))
        .await;
    assert_eq!(out["data"]["signOut"], true);
    ws.subscribe("1", STREAM, json!({ "i": { "prompt": "still there?" } }))
        .await;
    // Either the operation is refused UNAUTHENTICATED before the close, or the close came
    // first; no call is made either way.
    let mut refused = None;
    let close = loop {
        match ws.next().await {
            Some(m) if m["type"] == "error" => refused = Some(m),
            Some(m) => panic!("unexpected message after sign-out: {m}"),
            None => break ws.closed().await,
        }
    };
    if let Some(m) = refused {
        assert_eq!(
            m["payload"][0]["extensions"]["code"], "UNAUTHENTICATED",
            "{m}"
        );
    }
    assert_eq!(idle.closed().await, Some((4403, "Forbidden".to_owned())));
    assert_books_balance(&app, &user.id, 0).await;
    drop(close);
    app.shutdown().await;
}
