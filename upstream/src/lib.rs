//! A real, local, OpenAI-compatible upstream: `POST /v1/chat/completions` (streaming over SSE
//! or not) and `GET /v1/models`, generating deterministic text and reporting usage counted with
//! the model's tokenizer, as OpenAI does.
//!
//! A request can ask for behaviour with directives anywhere in its last user message:
//!
//! | directive | effect |
//! |---|---|
//! | `@@tokens=N` | generate N tokens (default: the server's `default_tokens`), capped by `max_tokens` (then `finish_reason` is `length`) |
//! | `@@pace_ms=N` | wait N ms between tokens (default: the server's `pace`) |
//! | `@@first_token_ms=N` | wait N ms before the first token |
//! | `@@fail=429` / `@@fail=500` | answer with that HTTP error instead |
//! | `@@cut_after=N` | drop the connection after N tokens |
//! | `@@error_after=N` | send an SSE error event after N tokens and end the stream |
//! | `@@nul` | with `@@error_after`: a U+0000 in a delta before the error event and in its message |
//! | `@@stall_after=N` | send nothing more after N tokens, keeping the connection open |
//! | `@@endless_after=N` | after N tokens, start an event and never end it (bytes as fast as they are read) |
//! | `@@finish=X` | finish with `finish_reason` X (`content_filter`, `length`, an unknown value; `empty` sends "") |
//! | `@@reasoning=N` | send N tokens of `reasoning_content` before the answer |
//! | `@@endless_reasoning` | send `reasoning_content` without end, 64 KiB per chunk |
//! | `@@ignore_max_tokens` | generate `@@tokens` whatever `max_tokens` says (a misbehaving upstream) |
//! | `@@no_usage` | send no usage chunk even when `stream_options.include_usage` asks for one |
//! | `@@trace=ID` | record when the request arrived and when each token was sent ([`Stats::take_trace`]) |
//! | `@@record=ID` | record the request's messages and `max_tokens` as received ([`Stats::take_received`]) |
//!
//! Every token is one token of the model's tokenizer, so the deltas, the usage the server
//! reports and a local count of the text all agree.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// Server-wide defaults.
#[derive(Clone, Debug)]
pub struct UpstreamConfig {
    /// Delay between tokens.
    pub pace: Duration,
    /// Tokens generated when the request names no count.
    pub default_tokens: usize,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            pace: Duration::from_millis(20),
            default_tokens: 24,
        }
    }
}

/// What the server has seen, for tests and benchmarks to check against.
#[derive(Debug, Default)]
pub struct Stats {
    /// Chat completion requests received.
    pub requests: AtomicU64,
    /// Streams that ran to their end.
    pub finished: AtomicU64,
    /// Streams whose client went away before the end.
    pub abandoned: AtomicU64,
    /// Content tokens written to clients.
    pub tokens_sent: AtomicU64,
    changed: Notify,
    /// Timings of streams whose prompt carries `@@trace=ID` (for the benchmark harness).
    traces: std::sync::Mutex<std::collections::HashMap<String, StreamTrace>>,
    /// Requests whose prompt carries `@@record=ID`, as received.
    received: std::sync::Mutex<std::collections::HashMap<String, Received>>,
}

/// A chat request as the upstream received it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Received {
    pub model: String,
    /// `(role, text)` of every message, in order.
    pub messages: Vec<(String, String)>,
    /// `max_completion_tokens`, else `max_tokens`.
    pub max_tokens: Option<usize>,
    /// The request's `x-request-id` header.
    pub request_id: Option<String>,
    /// Its `authorization`, `openai-organization` and `openai-project` headers.
    pub authorization: Option<String>,
    pub organization: Option<String>,
    pub project: Option<String>,
    /// The path and query it was sent to.
    pub target: String,
}

/// When a traced stream's request arrived and when each content token was handed to the
/// response body.
#[derive(Clone, Debug, Default)]
pub struct StreamTrace {
    pub received: Option<std::time::Instant>,
    pub tokens: Vec<std::time::Instant>,
}

impl Stats {
    /// Wait until `done(self)` holds (checked at every change). Panics after 30 s: a test
    /// waiting for something that never happens fails with a message instead of hanging.
    pub async fn wait_until(&self, done: impl Fn(&Stats) -> bool) {
        const LIMIT: std::time::Duration = std::time::Duration::from_secs(30);
        let waited = tokio::time::timeout(LIMIT, async {
            loop {
                let changed = self.changed.notified();
                if done(self) {
                    return;
                }
                changed.await;
            }
        })
        .await;
        assert!(
            waited.is_ok(),
            "the upstream's counters did not reach the state waited for within {LIMIT:?}"
        );
    }

    /// Take the timings recorded for `@@trace=id` (once the stream has ended).
    pub fn take_trace(&self, id: &str) -> Option<StreamTrace> {
        self.traces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
    }

    /// Take the request recorded for `@@record=id`.
    pub fn take_received(&self, id: &str) -> Option<Received> {
        self.received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
    }

    fn bump(&self, counter: &AtomicU64, by: u64) {
        counter.fetch_add(by, Ordering::SeqCst);
        self.changed.notify_waiters();
    }
}

#[derive(Clone)]
struct AppState {
    config: UpstreamConfig,
    stats: Arc<Stats>,
}

/// The router, for embedding.
pub fn router(config: UpstreamConfig, stats: Arc<Stats>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .with_state(AppState { config, stats })
}

/// A running local upstream.
pub struct LocalUpstream {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
}

impl LocalUpstream {
    /// `http://ADDR/v1`, what `OPENAI_BASE_URL` should be.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }
}

/// Serve on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    config: UpstreamConfig,
    stats: Arc<Stats>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(config, stats))
        .with_graceful_shutdown(shutdown)
        .await
}

/// A listener on `addr` whose accept queue holds a burst: tokio's `bind` asks for 128, and 500
/// streams opened at once overflowed it (SYNs dropped, retried a second later). The server's
/// own listener is made the same way (`api::transport::listen`).
pub fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Start on a free loopback port, in the background, for as long as the runtime lives.
pub async fn spawn(config: UpstreamConfig) -> std::io::Result<LocalUpstream> {
    let listener = listen(([127, 0, 0, 1], 0).into())?;
    let addr = listener.local_addr()?;
    let stats = Arc::new(Stats::default());
    let serving = stats.clone();
    tokio::spawn(async move {
        if let Err(e) = serve(listener, config, serving, std::future::pending()).await {
            tracing::error!("local upstream stopped: {e}");
        }
    });
    Ok(LocalUpstream { addr, stats })
}

#[derive(Deserialize)]
struct ChatRequest {
    model: String,
    messages: Vec<ChatMessage>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    max_tokens: Option<usize>,
    max_completion_tokens: Option<usize>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Deserialize)]
struct ChatMessage {
    role: String,
    #[serde(default)]
    content: Value,
}

impl ChatMessage {
    /// Text content: a string, or the text parts of a content array.
    fn text(&self) -> String {
        match &self.content {
            Value::String(s) => s.clone(),
            Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect(),
            _ => String::new(),
        }
    }
}

/// What a request asked for.
#[derive(Debug, Default, PartialEq)]
struct Directives {
    tokens: Option<usize>,
    pace_ms: Option<u64>,
    first_token_ms: Option<u64>,
    fail: Option<u16>,
    cut_after: Option<usize>,
    error_after: Option<usize>,
    nul: bool,
    stall_after: Option<usize>,
    endless_after: Option<usize>,
    ignore_max_tokens: bool,
    reasoning: Option<usize>,
    endless_reasoning: bool,
    finish: Option<String>,
    no_usage: bool,
    trace: Option<String>,
    record: Option<String>,
}

fn directives(text: &str) -> Directives {
    let mut d = Directives::default();
    for word in text.split_whitespace().filter_map(|w| w.strip_prefix("@@")) {
        let (key, value) = word.split_once('=').unwrap_or((word, ""));
        match key {
            "tokens" => d.tokens = value.parse().ok(),
            "pace_ms" => d.pace_ms = value.parse().ok(),
            "first_token_ms" => d.first_token_ms = value.parse().ok(),
            "fail" => d.fail = value.parse().ok(),
            "cut_after" => d.cut_after = value.parse().ok(),
            "error_after" => d.error_after = value.parse().ok(),
            "stall_after" => d.stall_after = value.parse().ok(),
            "endless_after" => d.endless_after = value.parse().ok(),
            "finish" => {
                d.finish = Some(if value == "empty" {
                    String::new()
                } else {
                    value.to_owned()
                })
            }
            "no_usage" => d.no_usage = true,
            "ignore_max_tokens" => d.ignore_max_tokens = true,
            "reasoning" => d.reasoning = value.parse().ok(),
            "endless_reasoning" => d.endless_reasoning = true,
            "nul" => d.nul = true,
            "trace" => d.trace = Some(value.to_owned()),
            "record" => d.record = Some(value.to_owned()),
            _ => {}
        }
    }
    d
}

/// What `@@endless_after` sends, again and again.
static ENDLESS: [u8; 64 << 10] = [b'x'; 64 << 10];

/// Words that are each exactly one token in both the cl100k and o200k encodings.
const WORDS: [&str; 16] = [
    " the", " quick", " brown", " fox", " jumps", " over", " lazy", " dog", " and", " then",
    " runs", " far", " away", " into", " green", " hills",
];

/// The i-th token of the deterministic answer to `prompt`.
fn token(prompt: &str, i: usize) -> &'static str {
    // FNV-1a of the prompt picks where in the word list the answer starts.
    let seed = prompt.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    WORDS[(seed as usize).wrapping_add(i.wrapping_mul(5)) % WORDS.len()]
}

/// The whole deterministic answer of `n` tokens (what the streamed deltas concatenate to).
pub fn answer(prompt: &str, n: usize) -> String {
    (0..n).map(|i| token(prompt, i)).collect()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn models() -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{ "id": "local-upstream", "object": "model", "created": 0, "owned_by": "aiwrapper" }]
    }))
}

async fn chat_completions(
    State(state): State<AppState>,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let received = std::time::Instant::now();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let req: ChatRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({ "error": { "message": format!("invalid request: {e}"), "type": "invalid_request_error" } })),
            )
                .into_response();
        }
    };
    state.stats.bump(&state.stats.requests, 1);
    let prompt = req
        .messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .map(ChatMessage::text)
        .unwrap_or_default();
    let d = directives(&prompt);
    match d.fail {
        Some(429) => {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, "1")],
                Json(json!({ "error": { "message": "Rate limit reached for requests", "type": "requests", "code": "rate_limit_exceeded" } })),
            )
                .into_response();
        }
        Some(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return (
                status,
                "The server had an error while processing your request.",
            )
                .into_response();
        }
        None => {}
    }
    let texts: Vec<(String, String)> = req
        .messages
        .iter()
        .map(|m| (m.role.clone(), m.text()))
        .collect();
    if let Some(id) = &d.record {
        let received = Received {
            model: req.model.clone(),
            messages: texts.clone(),
            max_tokens: req.max_completion_tokens.or(req.max_tokens),
            request_id: header("x-request-id"),
            authorization: header("authorization"),
            organization: header("openai-organization"),
            project: header("openai-project"),
            target: uri.to_string(),
        };
        state
            .stats
            .received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), received);
    }
    let prompt_tokens = tokenizer::count_chat(
        &req.model,
        texts.iter().map(|(r, c)| (r.as_str(), c.as_str())),
    );
    let wanted = d.tokens.unwrap_or(state.config.default_tokens);
    let cap = req
        .max_completion_tokens
        .or(req.max_tokens)
        .filter(|_| !d.ignore_max_tokens)
        .unwrap_or(usize::MAX);
    let n = wanted.min(cap);
    let finish = d.finish.clone().unwrap_or_else(|| {
        if wanted > cap {
            "length".into()
        } else {
            "stop".into()
        }
    });
    let include_usage = req.stream_options.as_ref().is_some_and(|o| o.include_usage) && !d.no_usage;
    let id = format!("chatcmpl-local-{}", unix_now());

    if !req.stream {
        let text = answer(&prompt, n);
        let completion_tokens = tokenizer::count_text(&req.model, &text);
        state.stats.bump(&state.stats.tokens_sent, n as u64);
        state.stats.bump(&state.stats.finished, 1);
        return Json(json!({
            "id": id, "object": "chat.completion", "created": unix_now(), "model": req.model,
            "choices": [{ "index": 0, "message": { "role": "assistant", "content": text }, "finish_reason": finish }],
            "usage": { "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens }
        }))
        .into_response();
    }

    let pace = d.pace_ms.map_or(state.config.pace, Duration::from_millis);
    let stats = state.stats;
    let model = req.model;
    let stream = async_stream::stream! {
        // Counts the stream as abandoned if the client drops it before the end.
        let mut guard = Abandoned { stats: stats.clone(), finished: false };
        let mut trace = d.trace.as_ref().map(|_| StreamTrace { received: Some(received), tokens: Vec::with_capacity(n) });
        let chunk = |delta: Value, finish: Value| -> Result<Bytes, std::io::Error> {
            let body = json!({
                "id": id, "object": "chat.completion.chunk", "created": unix_now(), "model": model,
                "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }]
            });
            Ok(Bytes::from(format!("data: {body}\n\n")))
        };
        yield chunk(json!({ "role": "assistant", "content": "" }), Value::Null);
        if let Some(ms) = d.first_token_ms {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        for i in 0..d.reasoning.unwrap_or(0) {
            // Reasoning first, as vLLM and DeepSeek send it (not part of the answer).
            yield chunk(json!({ "reasoning_content": token(&prompt, i) }), Value::Null);
        }
        if d.endless_reasoning {
            // A model that never stops thinking, 64 KiB at a time.
            let thought = String::from_utf8_lossy(&ENDLESS).into_owned();
            loop {
                yield chunk(json!({ "reasoning_content": thought }), Value::Null);
            }
        }
        for i in 0..n {
            if i > 0 && !pace.is_zero() {
                tokio::time::sleep(pace).await;
            }
            if d.cut_after == Some(i) {
                yield Err(std::io::Error::other("connection cut by @@cut_after"));
                return;
            }
            if d.error_after == Some(i) {
                let mut message = "The model produced an error mid-stream".to_owned();
                if d.nul {
                    yield chunk(json!({ "content": "\u{0}" }), Value::Null);
                    message.push_str(" at byte \u{0}");
                }
                let err = json!({ "error": { "message": message, "type": "server_error", "code": "stream_error" } });
                yield Ok(Bytes::from(format!("data: {err}\n\n")));
                guard.finished = true;
                stats.bump(&stats.finished, 1);
                return;
            }
            if d.stall_after == Some(i) {
                std::future::pending::<()>().await;
            }
            if d.endless_after == Some(i) {
                // A hostile upstream: an event that never ends, as fast as it can be read.
                yield Ok(Bytes::from_static(b"data: {\"choices\":[{\"delta\":{\"content\":\""));
                loop {
                    yield Ok(Bytes::from_static(&ENDLESS));
                }
            }
            if let Some(t) = trace.as_mut() {
                t.tokens.push(std::time::Instant::now());
            }
            yield chunk(json!({ "content": token(&prompt, i) }), Value::Null);
            stats.bump(&stats.tokens_sent, 1);
        }
        yield chunk(json!({}), json!(finish));
        if include_usage {
            let completion_tokens = tokenizer::count_text(&model, &answer(&prompt, n));
            let body = json!({
                "id": id, "object": "chat.completion.chunk", "created": unix_now(), "model": model, "choices": [],
                "usage": { "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens }
            });
            yield Ok(Bytes::from(format!("data: {body}\n\n")));
        }
        yield Ok(Bytes::from_static(b"data: [DONE]\n\n"));
        if let (Some(id), Some(t)) = (d.trace.clone(), trace.take()) {
            stats.traces.lock().unwrap_or_else(|p| p.into_inner()).insert(id, t);
        }
        guard.finished = true;
        stats.bump(&stats.finished, 1);
    };
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .expect("a valid response")
}

struct Abandoned {
    stats: Arc<Stats>,
    finished: bool,
}

impl Drop for Abandoned {
    fn drop(&mut self) {
        if !self.finished {
            self.stats.bump(&self.stats.abandoned, 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_is_one_token_and_answers_add_up() {
        for model in ["gpt-4o-mini", "gpt-4", "gpt-4.1"] {
            for w in WORDS {
                assert_eq!(tokenizer::count_text(model, w), 1, "{model}: {w:?}");
            }
            let text = answer("Say something", 200);
            assert_eq!(tokenizer::count_text(model, &text), 200, "{model}");
        }
    }

    #[test]
    fn answers_are_deterministic_per_prompt() {
        assert_eq!(answer("a", 10), answer("a", 10));
        assert_ne!(answer("a", 10), answer("b", 10));
    }

    #[test]
    fn directives_are_read_from_the_prompt() {
        let d = directives("Hi @@tokens=5 there @@fail=429 @@finish=empty @@no_usage @@bogus");
        assert_eq!(d.tokens, Some(5));
        assert_eq!(d.fail, Some(429));
        assert_eq!(d.finish.as_deref(), Some(""));
        assert!(d.no_usage);
        assert_eq!(directives("plain text"), Directives::default());
    }
}
