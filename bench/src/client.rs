//! Clients of the server under test: GraphQL over HTTP and over graphql-transport-ws.

use std::time::Instant;

use serde_json::{Value, json};
use tests::ws::GqlWs;

/// GraphQL over HTTP.
#[derive(Clone)]
pub struct Http {
    pub client: reqwest::Client,
    /// Parsed once: a closed loop of 64 clients otherwise spends a few percent of the harness's
    /// CPU parsing the same URL per request.
    pub url: reqwest::Url,
}

/// A request body, serialised from borrows (no `Value` built per request).
#[derive(serde::Serialize)]
struct Operation<'a> {
    query: &'a str,
    variables: &'a Value,
}

/// A response read into `T`: only the fields a check looks at are kept, the rest is skipped
/// without being built (the harness shares the cores it measures).
#[derive(serde::Deserialize)]
struct Reply<T> {
    data: Option<T>,
    errors: Option<serde::de::IgnoredAny>,
}

impl Http {
    pub fn new(addr: std::net::SocketAddr) -> Http {
        Http {
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(1024)
                .build()
                .expect("an HTTP client"),
            url: format!("http://{addr}/graphql")
                .parse()
                .expect("the server's URL"),
        }
    }

    /// POST an operation; the response's status and body.
    async fn post(
        &self,
        token: Option<&str>,
        query: &str,
        variables: &Value,
    ) -> Result<(reqwest::StatusCode, Vec<u8>), String> {
        let mut req = self
            .client
            .post(self.url.clone())
            .json(&Operation { query, variables });
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.map_err(|e| format!("HTTP: {e}"))?;
        let status = res.status();
        let body = res.bytes().await.map_err(|e| format!("body: {e}"))?;
        Ok((status, body.into()))
    }

    /// POST an operation; the JSON body, or an error for a transport failure, a non-200
    /// status or a GraphQL error.
    pub async fn gql(
        &self,
        token: Option<&str>,
        query: &str,
        variables: Value,
    ) -> Result<Value, String> {
        let (status, body) = self.post(token, query, &variables).await?;
        let body: Value = serde_json::from_slice(&body).map_err(|e| format!("body: {e}"))?;
        if status != 200 || body.get("errors").is_some() {
            return Err(format!("{status}: {body}"));
        }
        Ok(body)
    }

    /// [`Http::gql`] with the response's `data` read into `T`, skipping what `T` leaves out.
    pub async fn gql_data<T: serde::de::DeserializeOwned>(
        &self,
        token: Option<&str>,
        query: &str,
        variables: &Value,
    ) -> Result<T, String> {
        let (status, body) = self.post(token, query, variables).await?;
        let shown = || format!("{status}: {}", String::from_utf8_lossy(&body));
        match serde_json::from_slice::<Reply<T>>(&body) {
            Ok(Reply {
                data: Some(data),
                errors: None,
            }) if status == 200 => Ok(data),
            Ok(_) => Err(shown()),
            Err(e) => Err(format!("{e} in {}", shown())),
        }
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
