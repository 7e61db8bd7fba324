//! Logging. `RUST_LOG` selects what is shown (default: info for this server, warnings for the
//! rest); `LOG_FORMAT=json` writes one JSON object per line instead of the human-readable
//! default.
//!
//! Traces: with `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set,
//! spans are exported over OTLP/HTTP (`OTEL_EXPORTER_OTLP_PROTOCOL`: `http/protobuf`, the
//! default, or `http/json`) in batches (`OTEL_BSP_*`), as service `OTEL_SERVICE_NAME` (default
//! `aiwrapper`): `request` (one per HTTP request or WebSocket connection, with `request_id`) →
//! `graphql.execute` → `graphql.resolve` (root fields) → `db` (each statement, by operation,
//! never its text) and `llm_call` → `upstream.request`. Unset, none of these spans is even
//! created beyond the `request` and `llm_call` spans logging already uses.
//!
//! JSON lines have stable field names: `timestamp` (RFC 3339, UTC), `level`, `target`,
//! `message` and the event's own fields at the top level, and `spans`, the spans the event
//! happened in, outermost first, each with its `name` and fields: `request` carries
//! `request_id`, `llm_call` carries `log_id` and `model`. Nothing at `info` carries a password,
//! a token or a prompt.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported (the extra spans are created only then).
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Keeps the trace exporter alive; dropping it flushes the spans not yet sent.
#[must_use = "dropping it stops the trace exporter"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// The OTLP exporter when an endpoint is configured, or why it could not be built.
fn otlp_provider() -> Result<Option<SdkTracerProvider>, String> {
    let configured = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var(v).is_ok_and(|s| !s.trim().is_empty()));
    if !configured {
        return Ok(None);
    }
    // reqwest uses rustls without a built-in crypto provider: ring is the process default.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Endpoint, protocol, headers and timeout from the standard OTEL_EXPORTER_OTLP_* variables.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| format!("the OTLP exporter could not be built: {e}"))?;
    let service = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "aiwrapper".to_owned());
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(service)
                    .build(),
            )
            .build(),
    ))
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    /// `LOG_FORMAT`: `json`, or `text` (the default; anything else falls back to it, with a
    /// warning once logging is up).
    pub fn from_env() -> (LogFormat, Vec<String>) {
        match std::env::var("LOG_FORMAT").ok().as_deref() {
            None | Some("" | "text") => (LogFormat::Text, Vec::new()),
            Some("json") => (LogFormat::Json, Vec::new()),
            Some(other) => (
                LogFormat::Text,
                vec![format!(
                    "LOG_FORMAT={other:?} is not text or json: writing text"
                )],
            ),
        }
    }
}

/// The layer that turns spans into exported traces, when there is an exporter.
fn traces_layer<S>(
    provider: Option<&SdkTracerProvider>,
) -> Option<tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    provider.map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("aiwrapper"))
            .with_tracked_inactivity(false)
    })
}

/// Install the global subscriber (and the trace exporter, when configured); later calls are
/// no-ops (tests call it once per process). Keep the result until the process ends.
pub fn init(default_filter: &str) -> Telemetry {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let (format, mut problems) = LogFormat::from_env();
    let provider = otlp_provider().unwrap_or_else(|why| {
        problems.push(why);
        None
    });
    let fmt = tracing_subscriber::fmt::layer();
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match format {
        LogFormat::Text => registry
            .with(fmt)
            .with(traces_layer(provider.as_ref()))
            .try_init(),
        LogFormat::Json => registry
            .with(
                fmt.json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(true),
            )
            .with(traces_layer(provider.as_ref()))
            .try_init(),
    };
    if installed.is_err() {
        // Another subscriber was there first: nothing of ours is installed.
        return Telemetry { provider: None };
    }
    EXPORTING.store(provider.is_some(), Ordering::Relaxed);
    for problem in problems {
        tracing::warn!("{problem}");
    }
    Telemetry { provider }
}
