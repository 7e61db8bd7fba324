//! The upstream client: any OpenAI-compatible chat completions endpoint, through async-openai.
//! It knows nothing of the database: the call pipeline (`crate::calls`) logs and meters.
//!
//! Chunks are read with async-openai's bring-your-own-types streaming, into types that accept
//! what OpenAI-compatible servers actually send: any `finish_reason` string (or "", or none),
//! missing fields, and `{"error": …}` events in the middle of a stream. No retries: every HTTP
//! request to the upstream is one logged, metered call (a client may retry, and that is a new
//! call).

use std::future::Future;
use std::pin::Pin;

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::middleware::HttpRequestFactory;
use futures_util::Stream;
use serde::Deserialize;
use serde_json::{Value, json};

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

/// The HTTP transport of upstream calls: reqwest, plus the call's request id as `x-request-id`
/// (see `crate::request_id`) so that a call can be found in the provider's logs.
#[derive(Clone)]
struct WithRequestId(reqwest::Client);

impl tower::Service<HttpRequestFactory> for WithRequestId {
    type Response = reqwest::Response;
    type Error = OpenAIError;
    type Future =
        Pin<Box<dyn Future<Output = Result<reqwest::Response, OpenAIError>> + Send + 'static>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: HttpRequestFactory) -> Self::Future {
        let client = self.0.clone();
        let id = crate::request_id::current();
        let span = if crate::telemetry::exporting() {
            tracing::info_span!("upstream.request", otel.kind = "client")
        } else {
            tracing::Span::none()
        };
        Box::pin(tracing::Instrument::instrument(
            async move {
                let mut request = request.build().await?;
                if let Some(value) =
                    id.and_then(|id| reqwest::header::HeaderValue::from_str(&id).ok())
                {
                    request
                        .headers_mut()
                        .insert(crate::request_id::HEADER, value);
                }
                client.execute(request).await.map_err(OpenAIError::Reqwest)
            },
            span,
        ))
    }
}

/// A client for the configured upstream.
#[derive(Clone)]
pub struct LlmClient {
    client: Client<OpenAIConfig>,
    /// Where calls go (for logs and `models`).
    pub base_url: String,
}

impl LlmClient {
    pub fn new(cfg: &UpstreamConfig, base_url: &str) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .tcp_nodelay(true)
            .build()?;
        let mut openai = OpenAIConfig::new().with_api_base(base_url.trim_end_matches('/'));
        if let Some(key) = &cfg.api_key {
            openai = openai.with_api_key(key.expose());
        }
        let client = Client::with_config(openai).with_http_service(WithRequestId(http));
        Ok(Self {
            client,
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
        let stream = self
            .client
            .chat()
            .create_stream_byot::<Value, Chunk>(body)
            .await?;
        Ok(Box::pin(stream))
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
        OpenAIError::StreamError(_) => "the upstream stream broke off".into(),
        OpenAIError::JSONDeserialize(_, _) => {
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
