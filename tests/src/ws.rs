//! A graphql-transport-ws client (the protocol of the `graphql-ws` library) for tests.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::TestApp;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One WebSocket connection speaking graphql-transport-ws.
pub struct GqlWs {
    socket: Socket,
    /// The close frame `next` saw, if it saw one (None inside: closed without a frame).
    close: Option<Option<(u16, String)>>,
}

impl GqlWs {
    /// Connect and initialise, authenticated with `token` in `connection_init` when given.
    pub async fn connect(app: &TestApp, token: Option<&str>) -> GqlWs {
        GqlWs::connect_to(app.addr, token).await
    }

    /// [`GqlWs::connect`] to any server address (the benchmark harness uses it).
    pub async fn connect_to(addr: std::net::SocketAddr, token: Option<&str>) -> GqlWs {
        let mut ws = GqlWs::open(addr).await;
        let payload = token.map_or(
            json!({}),
            |t| json!({ "authorization": format!("Bearer {t}") }),
        );
        ws.send(json!({ "type": "connection_init", "payload": payload }))
            .await;
        let ack = ws.next().await.expect("an answer to connection_init");
        assert_eq!(ack["type"], "connection_ack", "{ack}");
        ws
    }

    /// A socket speaking graphql-transport-ws that has sent nothing yet (no `connection_init`).
    pub async fn open(addr: std::net::SocketAddr) -> GqlWs {
        let mut req = format!("ws://{addr}/graphql")
            .into_client_request()
            .unwrap();
        req.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_static("graphql-transport-ws"),
        );
        // A small read buffer: tungstenite zero-fills all of it before every read (see the
        // server's `READ_BUFFER_SIZE`), and a streaming client reads once per token.
        let config = WebSocketConfig::default().read_buffer_size(4 * 1024);
        let (socket, _) = tokio_tungstenite::connect_async_with_config(req, Some(config), false)
            .await
            .expect("WebSocket connect");
        GqlWs {
            socket,
            close: None,
        }
    }

    pub async fn send(&mut self, message: Value) {
        self.socket
            .send(Message::text(message.to_string()))
            .await
            .expect("send");
    }

    /// The next protocol message (pings are answered and skipped); None when the socket closed.
    pub async fn next(&mut self) -> Option<Value> {
        loop {
            match self.socket.next().await? {
                Ok(Message::Text(t)) => {
                    let m: Value = serde_json::from_str(&t).expect("JSON message");
                    if m["type"] == "ping" {
                        self.send(json!({ "type": "pong" })).await;
                        continue;
                    }
                    return Some(m);
                }
                Ok(Message::Close(frame)) => {
                    self.close = Some(frame.map(|f| (u16::from(f.code), f.reason.to_string())));
                    return None;
                }
                Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    /// Read until the server closes the connection: its close code and reason (None when the
    /// connection ended without a close frame).
    pub async fn closed(&mut self) -> Option<(u16, String)> {
        if let Some(close) = self.close.take() {
            return close;
        }
        loop {
            match self.socket.next().await? {
                Ok(Message::Close(frame)) => {
                    return frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                }
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    /// Start operation `id`.
    pub async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        self.send(json!({ "id": id, "type": "subscribe", "payload": { "query": query, "variables": variables } }))
            .await;
    }

    /// Every `next` payload of operation `id` until it completes, and its `error` message if
    /// it ended with one.
    pub async fn collect(&mut self, id: &str) -> (Vec<Value>, Option<Value>) {
        let mut payloads = Vec::new();
        while let Some(m) = self.next().await {
            if m["id"] != id {
                continue;
            }
            match m["type"].as_str() {
                Some("next") => payloads.push(m["payload"].clone()),
                Some("complete") => return (payloads, None),
                Some("error") => return (payloads, Some(m)),
                _ => {}
            }
        }
        (payloads, None)
    }

    /// Close the connection abruptly (as a browser tab does).
    pub async fn drop_connection(mut self) {
        let _ = self.socket.close(None).await;
    }
}
