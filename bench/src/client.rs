//! Clients of the server under test: GraphQL over HTTP and over graphql-transport-ws.

use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// GraphQL over HTTP.
#[derive(Clone)]
pub struct Http {
    pub client: reqwest::Client,
    pub url: String,
}

impl Http {
    pub fn new(addr: std::net::SocketAddr) -> Http {
        Http {
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(1024)
                .build()
                .expect("an HTTP client"),
            url: format!("http://{addr}/graphql"),
        }
    }

    /// POST an operation; the JSON body, or an error for a transport failure, a non-200
    /// status or a GraphQL error.
    pub async fn gql(
        &self,
        token: Option<&str>,
        query: &str,
        variables: Value,
    ) -> Result<Value, String> {
        let mut req = self
            .client
            .post(&self.url)
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.map_err(|e| format!("HTTP: {e}"))?;
        let status = res.status();
        let body: Value = res.json().await.map_err(|e| format!("body: {e}"))?;
        if status != 200 || body.get("errors").is_some() {
            return Err(format!("{status}: {body}"));
        }
        Ok(body)
    }

    pub async fn sign_up(&self, email: &str, password: &str) -> Result<(String, String), String> {
        let body = self
            .gql(
                None,
                "mutation($i: SignUpInput!) { signUp(input: $i) { token user { id } } }",
                json!({ "i": { "email": email, "password": password, "name": "Bench" } }),
            )
            .await?;
        let p = &body["data"]["signUp"];
        Ok((
            p["token"].as_str().unwrap_or_default().to_owned(),
            p["user"]["id"].as_str().unwrap_or_default().to_owned(),
        ))
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One authenticated graphql-transport-ws connection.
pub struct Ws {
    socket: Socket,
}

/// A streamed completion as the client saw it.
pub struct Received {
    /// Each `next` payload's delta with the time it arrived.
    pub deltas: Vec<(Instant, String)>,
    /// The final event (`done: true`), if it came.
    pub last: Option<Value>,
    /// An `error` message or a payload with `errors`.
    pub error: Option<String>,
}

impl Ws {
    pub async fn connect(addr: std::net::SocketAddr, token: &str) -> Result<Ws, String> {
        let mut req = format!("ws://{addr}/graphql")
            .into_client_request()
            .map_err(|e| e.to_string())?;
        req.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_static("graphql-transport-ws"),
        );
        // A small read buffer: tungstenite zero-fills all of it before every read (see the
        // server's `READ_BUFFER_SIZE`), and this client reads once per token.
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(4 * 1024);
        let (socket, _) = tokio_tungstenite::connect_async_with_config(req, Some(config), false)
            .await
            .map_err(|e| format!("WebSocket connect: {e}"))?;
        let mut ws = Ws { socket };
        ws.send(json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } }))
            .await?;
        match ws.next().await {
            Some(m) if m["type"] == "connection_ack" => Ok(ws),
            other => Err(format!("no connection_ack: {other:?}")),
        }
    }

    async fn send(&mut self, message: Value) -> Result<(), String> {
        self.socket
            .send(Message::text(message.to_string()))
            .await
            .map_err(|e| format!("send: {e}"))
    }

    async fn next(&mut self) -> Option<Value> {
        loop {
            match self.socket.next().await? {
                Ok(Message::Text(t)) => {
                    let m: Value = serde_json::from_str(&t).ok()?;
                    if m["type"] == "ping" {
                        self.send(json!({ "type": "pong" })).await.ok()?;
                        continue;
                    }
                    return Some(m);
                }
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Subscribe to `completionStream` and read it to its end.
    pub async fn stream(&mut self, input: Value) -> Result<Received, String> {
        const STREAM: &str = "subscription($i: CompletionInput!) { completionStream(input: $i) { delta done log { id status completion completionTokens } } }";
        self.send(json!({ "id": "1", "type": "subscribe", "payload": { "query": STREAM, "variables": { "i": input } } }))
            .await?;
        let mut received = Received {
            deltas: Vec::new(),
            last: None,
            error: None,
        };
        while let Some(m) = self.next().await {
            let at = Instant::now();
            match m["type"].as_str() {
                Some("next") => {
                    let payload = &m["payload"];
                    if payload.get("errors").is_some() {
                        received.error = Some(payload["errors"].to_string());
                        continue;
                    }
                    let event = &payload["data"]["completionStream"];
                    if let Some(delta) = event["delta"].as_str()
                        && !delta.is_empty()
                    {
                        received.deltas.push((at, delta.to_owned()));
                    }
                    if event["done"] == true {
                        received.last = Some(event.clone());
                    }
                }
                Some("complete") => return Ok(received),
                Some("error") => {
                    received.error = Some(m.to_string());
                    return Ok(received);
                }
                _ => {}
            }
        }
        Err("the connection closed before the stream completed".into())
    }

    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}
