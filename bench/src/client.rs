//! Clients of the server under test: GraphQL over HTTP and over graphql-transport-ws.

use std::time::Instant;

use serde_json::{Value, json};
use tests::ws::GqlWs;

/// GraphQL over HTTP.
#[derive(Clone)]
pub struct Http {
    pub client: reqwest::Client,
    /// Shared: each closed-loop client clones the `Http` per request.
    pub url: std::sync::Arc<str>,
}

impl Http {
    pub fn new(addr: std::net::SocketAddr) -> Http {
        Http {
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(1024)
                .build()
                .expect("an HTTP client"),
            url: format!("http://{addr}/graphql").into(),
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
            .post(&*self.url)
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

/// One authenticated graphql-transport-ws connection (the test suite's client).
pub struct Ws(GqlWs);

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
    /// Connect and initialise with `token` (a failure to connect panics, failing the run).
    pub async fn connect(addr: std::net::SocketAddr, token: &str) -> Result<Ws, String> {
        Ok(Ws(GqlWs::connect_to(addr, Some(token)).await))
    }

    /// Subscribe to `completionStream` and read it to its end, timing each delta on arrival.
    pub async fn stream(&mut self, input: Value) -> Result<Received, String> {
        const STREAM: &str = "subscription($i: CompletionInput!) { completionStream(input: $i) { delta done log { id status completion completionTokens } } }";
        self.0.subscribe("1", STREAM, json!({ "i": input })).await;
        let mut received = Received {
            deltas: Vec::new(),
            last: None,
            error: None,
        };
        while let Some(m) = self.0.next().await {
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

    pub async fn close(self) {
        self.0.drop_connection().await;
    }
}
