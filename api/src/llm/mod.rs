//! The upstream client: any OpenAI-compatible chat completions endpoint, through async-openai.
//! It knows nothing of the database: the call pipeline (`crate::calls`) logs and meters.
//!
//! Chunks are read (see `LlmClient`) into types that accept what OpenAI-compatible servers
//! actually send: any `finish_reason` string (or "", or none), missing fields, and
//! `{"error": …}` events in the middle of a stream. No retries: every HTTP request to the
//! upstream is one logged, metered call (a client may retry, and that is a new call).

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use async_openai::config::{Config, OpenAIConfig};
use async_openai::error::{ApiError, ApiErrorResponse, OpenAIError, StreamError, WrappedError};
use futures_util::Stream;
use reqwest::header::{HeaderMap, HeaderValue};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::Instrument;

use crate::config::UpstreamConfig;

/// One SSE chunk of a streamed chat completion, as lenient as the servers that send it.
#[derive(Debug, Default, Deserialize)]
pub struct Chunk {
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
    #[serde(default)]
    pub usage: Option<Usage>,
    /// Some servers report a failure mid-stream as an event with an `error` object.
    #[serde(default)]
    pub error: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ChunkChoice {
    #[serde(default)]
    pub delta: Delta,
    /// Any string: `stop`, `length`, `content_filter`, `tool_calls`, "", or what a server invents.
    #[serde(default)]
    pub finish_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Delta {
    #[serde(default)]
    pub content: Option<String>,
    /// Reasoning text some servers stream before the answer (vLLM, DeepSeek: `reasoning_content`;
    /// others: `reasoning`). Not part of the completion, but proof the model is working.
    #[serde(default)]
    pub reasoning_content: Option<String>,
    #[serde(default)]
    pub reasoning: Option<String>,
}

/// Token usage as the upstream reports it.
#[derive(Clone, Copy, Debug, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: i64,
    #[serde(default)]
    pub completion_tokens: i64,
}

pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<Chunk, OpenAIError>> + Send>>;

/// Who wrote a chat message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One message of a chat request.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

/// What one call asks of the upstream.
#[derive(Clone, Debug)]
pub struct UpstreamRequest {
    pub model: String,
    /// The system prompt and earlier turns of a conversation, if any, then the prompt.
    pub messages: Vec<Message>,
    pub max_tokens: u32,
    pub temperature: Option<f64>,
}

/// The largest SSE event an upstream may send (its data and its unfinished line): a chunk is
/// rarely over a few KiB. Past it the call fails rather than buffer without end.
const MAX_EVENT_BYTES: usize = 1 << 20;

/// Reads of the response body one poll of `Events` makes at most.
const READS_PER_POLL: usize = 32;

/// The most of an error response's body that is read (it goes to the server log, shortened).
const MAX_ERROR_BODY: usize = 64 << 10;

/// A client for the configured upstream.
///
/// async-openai provides the configuration (the endpoint's URL and query, the `Authorization`,
/// organisation and project headers) and the error type. The request is sent, and its SSE
/// stream read, here, in the task that drives the call: async-openai's streaming spawns a task
/// per call that relays each chunk through a channel, one more task hop per token, which showed
/// in profiles of many concurrent streams (see `docs/performance.md`, "Wave 2, fifth round").
/// Events are read with async-openai's rules (`[DONE]` ends the stream, `keepalive` events are
/// skipped) by a parser of this module's own (see `Sse`).
#[derive(Clone)]
pub struct LlmClient {
    http: reqwest::Client,
    /// `{base}/chat/completions`, with the configuration's query.
    url: reqwest::Url,
    headers: HeaderMap,
    /// Where calls go (for logs and `models`).
    pub base_url: String,
}

/// Why an upstream client cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    /// (The URL is not shown: it may carry credentials.)
    #[error("the upstream URL with /chat/completions cannot be parsed")]
    Url,
}

impl LlmClient {
    pub fn new(cfg: &UpstreamConfig, base_url: &str) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .tcp_nodelay(true)
            .build()?;
        // Everything from this server's configuration, which checked each value (async-openai
        // would read the environment itself, and its `headers()` panics on a value that cannot
        // be a header).
        let openai = OpenAIConfig::new()
            .with_api_base(base_url.trim_end_matches('/'))
            .with_api_key(cfg.api_key.as_ref().map_or("", |k| k.expose()))
            .with_org_id(cfg.organization.clone().unwrap_or_default())
            .with_project_id(cfg.project.clone().unwrap_or_default());
        let mut url =
            reqwest::Url::parse(&openai.url("/chat/completions")).map_err(|_| ClientError::Url)?;
        let query = openai.query();
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let mut headers = openai.headers();
        if let Some(auth) = headers.get_mut(reqwest::header::AUTHORIZATION) {
            auth.set_sensitive(true);
        }
        headers.insert(
            reqwest::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Ok(Self {
            http,
            url,
            headers,
            base_url: base_url.to_owned(),
        })
    }

    /// Start a streamed chat completion; the stream yields chunks as the upstream sends them.
    pub async fn stream(&self, req: &UpstreamRequest) -> Result<ChunkStream, OpenAIError> {
        let mut body = json!({
            "model": req.model,
            "messages": req.messages,
            "stream": true,
            "stream_options": { "include_usage": true },
        });
        // OpenAI's reasoning models take only max_completion_tokens; compatible servers (vLLM,
        // Ollama, llama.cpp) and the other models take max_tokens.
        let limit = if is_reasoning_model(&req.model) {
            "max_completion_tokens"
        } else {
            "max_tokens"
        };
        body[limit] = json!(req.max_tokens);
        if let Some(t) = req.temperature {
            body["temperature"] = json!(t);
        }
        let mut request = self
            .http
            .post(self.url.clone())
            .headers(self.headers.clone())
            .body(body.to_string());
        // The call's request id, so that the call can be found in the provider's logs.
        if let Some(id) =
            crate::request_id::current().and_then(|id| HeaderValue::from_str(&id).ok())
        {
            request = request.header(crate::request_id::HEADER, id);
        }
        let span = if crate::telemetry::exporting() {
            tracing::info_span!("upstream.request", otel.kind = "client")
        } else {
            tracing::Span::none()
        };
        let response = request
            .send()
            .instrument(span)
            .await
            .map_err(OpenAIError::Reqwest)?;
        if !response.status().is_success() {
            return Err(error_response(response).await);
        }
        Ok(Box::pin(Events::new(response.bytes_stream())))
    }
}

/// The error an upstream's refusal becomes, with its status (async-openai made a body that is
/// not OpenAI's error object a JSON error, and the status was lost).
async fn error_response(mut response: reqwest::Response) -> OpenAIError {
    let status = response.status();
    let mut bytes = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_ERROR_BODY - bytes.len();
                bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if bytes.len() == MAX_ERROR_BODY {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => return OpenAIError::Reqwest(e),
        }
    }
    // OpenAI's `{"error": {...}}`; anything else (a server error's text, a proxy's HTML page)
    // is the message as it came, so that the status still says what happened.
    let api_error = match serde_json::from_slice::<WrappedError>(&bytes) {
        Ok(wrapped) if !status.is_server_error() => wrapped.error,
        _ => ApiError {
            message: String::from_utf8_lossy(&bytes).into_owned(),
            r#type: None,
            param: None,
            code: None,
            misalignment: None,
        },
    };
    OpenAIError::ApiError(ApiErrorResponse {
        status_code: status,
        api_error,
    })
}

type Body = futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>;

/// The chunks of an SSE response body, read in the caller's task.
struct Events {
    body: Body,
    sse: Sse,
    done: bool,
}

impl Events {
    fn new(body: impl Stream<Item = reqwest::Result<bytes::Bytes>> + Send + 'static) -> Self {
        Self {
            body: Box::pin(body),
            sse: Sse::default(),
            done: false,
        }
    }

    fn broke_off(&mut self, why: String) -> Poll<Option<Result<Chunk, OpenAIError>>> {
        self.done = true;
        Poll::Ready(Some(Err(OpenAIError::StreamError(Box::new(
            StreamError::EventStream(why),
        )))))
    }
}

impl Stream for Events {
    type Item = Result<Chunk, OpenAIError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let mut reads = 0;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            if let Some((event, data)) = this.sse.next_event() {
                if data == b"[DONE]" {
                    this.done = true;
                    return Poll::Ready(None);
                }
                if event == b"keepalive" {
                    continue;
                }
                return Poll::Ready(Some(serde_json::from_slice::<Chunk>(data).map_err(|e| {
                    OpenAIError::JSONDeserialize(e, String::from_utf8_lossy(data).into_owned())
                })));
            }
            // Every complete line is read: what is held belongs to one event.
            if this.sse.pending() > MAX_EVENT_BYTES {
                return this.broke_off(format!("an event longer than {MAX_EVENT_BYTES} bytes"));
            }
            if reads == READS_PER_POLL {
                // Reads that brought no chunk (comments, keep-alives): the task lets others run
                // before it reads on.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            reads += 1;
            match ready!(this.body.as_mut().poll_next(cx)) {
                Some(Ok(bytes)) => this.sse.push(&bytes),
                Some(Err(e)) => return this.broke_off(e.to_string()),
                // An event the stream ended in the middle of is dropped, as the SSE spec says.
                None => {
                    this.done = true;
                    return Poll::Ready(None);
                }
            }
        }
    }
}

/// An SSE parser (the WHATWG event-stream format) for what a chat completion sends: `data`
/// and `event` fields, comments, and lines ending in LF, CRLF or CR. `id` and `retry` are
/// read past (nothing reconnects). It works on bytes and keeps its place: each byte is looked
/// at once and each line copied at most once.
///
/// Written here rather than taken from eventsource-stream (what async-openai uses) because
/// that parser copies the rest of its buffer after every line and scans an unfinished line
/// again on every read: 256 KiB of comment lines in one read took it 0.4 s (a test build), so
/// a hostile upstream could hold a core with a small stream.
#[derive(Default)]
struct Sse {
    buf: Vec<u8>,
    /// Where the next line starts in `buf`.
    line: usize,
    /// Where the search for the end of that line resumes.
    scanned: usize,
    /// The line before ended with CR: an LF starting this one belongs to it.
    after_cr: bool,
    /// The stream's first bytes were looked at (for a byte order mark).
    started: bool,
    /// The event being read: its `data` lines (each followed by LF) and its type.
    data: Vec<u8>,
    event: Vec<u8>,
    /// The last event dispatched, as (type, data), lent out by `next_event`.
    ready: (Vec<u8>, Vec<u8>),
}

impl Sse {
    fn push(&mut self, bytes: &[u8]) {
        if self.line > 0 {
            // Only the unfinished line is kept.
            self.buf.drain(..self.line);
            self.scanned -= self.line;
            self.line = 0;
        }
        self.buf.extend_from_slice(bytes);
        if !self.started && self.buf.len() >= 3 {
            self.started = true;
            if self.buf.starts_with(b"\xEF\xBB\xBF") {
                self.buf.drain(..3);
                self.scanned = 0;
            }
        }
    }

    /// Bytes held for the event being read: its data so far and its unfinished line.
    fn pending(&self) -> usize {
        self.data.len() + self.buf.len() - self.line
    }

    /// The next complete event as (type, data), if the bytes so far hold one.
    fn next_event(&mut self) -> Option<(&[u8], &[u8])> {
        loop {
            if !self.started {
                // Fewer than three bytes yet: one may still be a byte order mark.
                return None;
            }
            if self.after_cr && self.line < self.buf.len() {
                self.after_cr = false;
                if self.buf[self.line] == b'\n' {
                    self.line += 1;
                    self.scanned = self.scanned.max(self.line);
                }
            }
            let end = self.buf[self.scanned..]
                .iter()
                .position(|&b| b == b'\n' || b == b'\r')
                .map(|i| self.scanned + i);
            let Some(end) = end else {
                self.scanned = self.buf.len();
                return None;
            };
            self.after_cr = self.buf[end] == b'\r';
            let start = self.line;
            self.line = end + 1;
            self.scanned = self.line;
            let line = &self.buf[start..end];
            if line.is_empty() {
                if self.data.is_empty() {
                    self.event.clear();
                    continue;
                }
                self.data.pop(); // the LF after the last data line
                self.ready.0.clear();
                self.ready.1.clear();
                std::mem::swap(&mut self.ready.0, &mut self.event);
                std::mem::swap(&mut self.ready.1, &mut self.data);
                return Some((&self.ready.0, &self.ready.1));
            }
            let (field, value) = match line.iter().position(|&b| b == b':') {
                Some(0) => continue, // a comment
                Some(i) => {
                    let value = &line[i + 1..];
                    (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
                }
                None => (line, &[][..]),
            };
            match field {
                b"data" => {
                    self.data.extend_from_slice(value);
                    self.data.push(b'\n');
                }
                b"event" => {
                    self.event.clear();
                    self.event.extend_from_slice(value);
                }
                _ => {}
            }
        }
    }
}

/// Where the upstream is and whether it is the built-in one.
#[derive(Clone, Debug)]
pub struct UpstreamInfo {
    pub base_url: String,
    /// True for the built-in local upstream (deterministic test tokens, not a model).
    pub local: bool,
}

/// The upstream's description for the start-up log: its URL without credentials, query or
/// fragment (`user:pass@`, `?api-key=` stay out of logs).
pub fn describe_upstream(info: &UpstreamInfo) -> String {
    if info.local {
        return format!(
            "built-in local upstream at {} (deterministic test tokens, not a real model; set OPENAI_BASE_URL)",
            info.base_url
        );
    }
    match url::Url::parse(&info.base_url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "(unparsable URL)".into(),
    }
}

/// What clients are told of the upstream (`models`): a provider name, never its address.
pub fn provider_name(info: &UpstreamInfo) -> &'static str {
    if info.local {
        return "local";
    }
    let host = url::Url::parse(&info.base_url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase));
    match host.as_deref() {
        Some(h) if h == "openai.com" || h.ends_with(".openai.com") => "openai",
        Some(h) if h.ends_with(".openai.azure.com") => "azure-openai",
        _ => "openai-compatible",
    }
}

/// A short, client-safe description of an upstream failure: by kind and status only. The
/// upstream's own message (OpenAI's 401 names a masked key, its 429 the organisation) goes to
/// the server log, never to clients or log rows.
pub fn describe(e: &OpenAIError) -> String {
    match e {
        OpenAIError::ApiError(api) => {
            let detail: String = api.api_error.message.chars().take(300).collect();
            let status = api.status_code.as_u16();
            tracing::warn!(status, detail = %detail.escape_debug(), "the upstream refused a request");
            let what = match status {
                401 | 403 => "refused this server's credentials",
                404 => "does not know the model",
                429 => "is rate limiting this server",
                400..=499 => "refused the request",
                _ => "failed",
            };
            format!("the upstream {what} (HTTP {status})")
        }
        OpenAIError::Reqwest(r) if r.is_connect() => "could not connect to the upstream".into(),
        OpenAIError::Reqwest(r) if r.is_timeout() => "the upstream timed out".into(),
        OpenAIError::Reqwest(_) => "the connection to the upstream failed".into(),
        OpenAIError::StreamError(e) => {
            tracing::warn!(detail = %e, "the upstream stream broke off");
            "the upstream stream broke off".into()
        }
        OpenAIError::JSONDeserialize(e, data) => {
            let data: String = data.chars().take(300).collect();
            tracing::warn!(error = %e, data = %data.escape_debug(), "an upstream chunk is not valid JSON");
            "the upstream sent a chunk that is not valid JSON".into()
        }
        other => {
            tracing::warn!(detail = %other.to_string().escape_debug(), "upstream error");
            "the upstream call failed".into()
        }
    }
}

/// OpenAI's reasoning models (o1, o3, o4 and gpt-5 families): `max_completion_tokens`, no
/// `temperature`.
pub fn is_reasoning_model(model: &str) -> bool {
    let family = model.split(['-', ':']).next().unwrap_or(model);
    matches!(family, "o1" | "o3" | "o4") || model.starts_with("gpt-5")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_and_logs_never_see_credentials_or_internal_hosts() {
        let info = |url: &str| UpstreamInfo {
            base_url: url.into(),
            local: false,
        };
        let secret = info("https://user:pa55@llm.internal.corp:8443/v1?api-key=sk-1#x");
        assert_eq!(provider_name(&secret), "openai-compatible");
        let logged = describe_upstream(&secret);
        assert!(
            !logged.contains("pa55") && !logged.contains("sk-1") && !logged.contains("user"),
            "{logged}"
        );
        assert_eq!(provider_name(&info("https://api.openai.com/v1")), "openai");
        assert_eq!(
            provider_name(&info("https://x.openai.azure.com/openai")),
            "azure-openai"
        );
    }

    #[test]
    fn reasoning_models_are_recognised() {
        for m in ["o1", "o3-mini", "o4-mini", "o3", "gpt-5", "gpt-5-mini"] {
            assert!(is_reasoning_model(m), "{m}");
        }
        for m in ["gpt-4o-mini", "gpt-4.1", "llama3.1:8b", "omni-x"] {
            assert!(!is_reasoning_model(m), "{m}");
        }
    }

    /// The chunks `Events` makes of a body read in these pieces.
    async fn events(reads: Vec<Vec<u8>>) -> Vec<Result<Chunk, OpenAIError>> {
        use futures_util::StreamExt;
        let body = futures_util::stream::iter(reads.into_iter().map(|r| Ok(bytes::Bytes::from(r))));
        Events::new(body).collect().await
    }

    #[tokio::test]
    async fn events_split_across_reads_keepalives_and_done() {
        let text = concat!(
            ": a comment\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\r\n\r\n",
            "event: keepalive\ndata: {}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"b\"},\"finish_reason\":\"stop\"}]}\n\n",
            "data: [DONE]\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"after done\"}}]}\n\n",
        );
        // Every split of the text into two reads gives the same two chunks.
        for at in 0..=text.len() {
            let (a, b) = text.as_bytes().split_at(at);
            let got = events(vec![a.to_vec(), b.to_vec()]).await;
            let contents: Vec<String> = got
                .into_iter()
                .map(|c| c.unwrap().choices[0].delta.content.clone().unwrap())
                .collect();
            assert_eq!(contents, ["a", "b"], "split at {at}");
        }
    }

    /// The events (type, data) `Sse` reads from these pieces.
    fn sse(pieces: &[&[u8]]) -> Vec<(String, String)> {
        let mut sse = Sse::default();
        let mut out = Vec::new();
        for piece in pieces {
            sse.push(piece);
            while let Some((event, data)) = sse.next_event() {
                out.push((
                    String::from_utf8_lossy(event).into_owned(),
                    String::from_utf8_lossy(data).into_owned(),
                ));
            }
        }
        out
    }

    #[test]
    fn reads_without_chunks_let_other_tasks_run() {
        use futures_util::{FutureExt, StreamExt};
        let mut reads: Vec<Vec<u8>> = (0..100).map(|_| b": keep-alive\n".to_vec()).collect();
        reads.push(b"data: {\"choices\":[]}\n\n".to_vec());
        let body = futures_util::stream::iter(reads.into_iter().map(|r| Ok(bytes::Bytes::from(r))));
        let mut events = Events::new(body);
        let mut polls = 0;
        let chunk = loop {
            polls += 1;
            if let Some(item) = events.next().now_or_never() {
                break item;
            }
        };
        assert!(chunk.unwrap().is_ok());
        // 101 reads, at most 32 per poll.
        assert_eq!(polls, 4);
    }

    #[test]
    fn sse_follows_the_event_stream_format() {
        let pair = |e: &str, d: &str| (e.to_owned(), d.to_owned());
        // A byte order mark split across reads; CR, LF and CRLF line ends (a CRLF split too);
        // `data` with and without its space; lines joined with LF; a field without a colon;
        // `id`, `retry` and unknown fields read past; an event with no data is not one.
        let got = sse(&[
            b"\xEF\xBB",
            b"\xBFdata: a\r",
            b"\ndata:b\n\nevent: ping\r\revent: x\nid: 7\nretry: 5\nfoo: bar\ndata\n\r\n",
            b"data: c\r\r: comment\ndata: tail",
        ]);
        assert_eq!(got, [pair("", "a\nb"), pair("x", ""), pair("", "c")]);
        // What follows an event, up to the stream's end, without a blank line is not an event.
        assert_eq!(sse(&[b"data: a\n\ndata: b\n"]), [pair("", "a")]);
        // A BOM anywhere but the start is data.
        assert_eq!(sse(&[b"data: \xEF\xBB\xBF\n\n"]), [pair("", "\u{feff}")]);
    }

    #[tokio::test]
    async fn an_endless_event_fails_at_the_bound_and_bad_json_is_reported() {
        let mut reads = vec![b"data: {\"choices\":[{\"delta\":{\"content\":\"".to_vec()];
        // Twice the bound, in 64 KiB reads: the stream fails before all of it is read.
        reads.extend((0..2 * MAX_EVENT_BYTES / (64 << 10)).map(|_| vec![b'x'; 64 << 10]));
        let got = events(reads).await;
        assert_eq!(got.len(), 1);
        assert!(
            matches!(&got[0], Err(OpenAIError::StreamError(_))),
            "{:?}",
            got[0].as_ref().err()
        );
        // Many small events in one large read are not one large event.
        let one = format!(
            "data: {{\"choices\":[],\"pad\":\"{}\"}}\n\n",
            "x".repeat(1000)
        );
        let count = 2 * MAX_EVENT_BYTES / one.len();
        let got = events(vec![one.repeat(count).into_bytes()]).await;
        assert!(got.len() == count && got.iter().all(Result::is_ok));

        let got = events(vec![b"data: {not json\n\n".to_vec()]).await;
        assert!(
            matches!(&got[..], [Err(OpenAIError::JSONDeserialize(_, data))] if data == "{not json")
        );
    }

    #[test]
    fn chunks_accept_what_compatible_servers_send() {
        let c: Chunk = serde_json::from_str(
            r#"{"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":""}]}"#,
        )
        .unwrap();
        assert_eq!(c.choices[0].delta.content.as_deref(), Some("hi"));
        assert_eq!(c.choices[0].finish_reason.as_deref(), Some(""));
        let c: Chunk =
            serde_json::from_str(r#"{"choices":[{"delta":{},"finish_reason":"eos_token"}]}"#)
                .unwrap();
        assert_eq!(c.choices[0].finish_reason.as_deref(), Some("eos_token"));
        let c: Chunk = serde_json::from_str(
            r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}"#,
        )
        .unwrap();
        assert_eq!(c.usage.unwrap().completion_tokens, 5);
        let c: Chunk =
            serde_json::from_str(r#"{"error":{"message":"boom","type":"server_error"}}"#).unwrap();
        assert!(c.error.is_some() && c.choices.is_empty());
        let c: Chunk = serde_json::from_str(r#"{"id":"x","choices":[{"delta":{"role":"assistant","content":null},"finish_reason":null,"logprobs":null}]}"#).unwrap();
        assert!(c.choices[0].delta.content.is_none());
    }
}
