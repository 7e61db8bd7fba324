//! Prometheus metrics, one registry per server (several servers in one test process do not mix
//! their figures). Names follow Prometheus conventions: base units (`_seconds`, micro-cents as
//! integers), `_total` counters, and labels from bounded sets only (model, operation type,
//! status, error code, refusal reason), never user ids or prompts. Token and cost counters move
//! when a `token_usage` row is committed by this process, so they agree exactly with the table.
//!
//! Exposed by `GET /metrics` in the Prometheus text format (0.0.4), on the main listener or, with
//! `METRICS_ADDR`, on a listener of its own. A leaf module: it imports nothing of the server.

use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Latency buckets in seconds: 1 ms to about 65 s, doubling.
fn latency_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.001, 2.0, 17).expect("valid buckets")
}

/// The server's metrics.
pub struct Metrics {
    /// Off (no `METRICS_ADDR`): nothing is recorded, so an unscraped server pays nothing.
    enabled: bool,
    registry: Registry,
    graphql_requests: IntCounterVec,
    graphql_duration: HistogramVec,
    upstream_calls: IntCounterVec,
    ttft: HistogramVec,
    call_duration: HistogramVec,
    tokens: IntCounterVec,
    cost: IntCounterVec,
    refusals: IntCounterVec,
    websocket_connections: IntGauge,
    websocket_operations: IntGauge,
    calls_in_flight: IntGauge,
    db_connections: IntGaugeVec,
    hash_queue: IntGauge,
}

/// What a finished call adds (from its committed usage row and its log).
#[derive(Clone, Copy, Debug)]
pub struct FinishedCall<'a> {
    pub model: &'a str,
    /// `ok`, `error` or `filtered`.
    pub status: &'a str,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost_microcents: i64,
    /// From sending the request to the first token, when one came.
    pub ttft: Option<Duration>,
    /// From sending the request to the end, when this process ran the call.
    pub duration: Option<Duration>,
}

/// Figures read when scraped (they describe the present, not a history).
#[derive(Clone, Copy, Debug, Default)]
pub struct Snapshot {
    pub websocket_connections: usize,
    pub websocket_operations: usize,
    pub calls_in_flight: usize,
    pub db_connections_idle: usize,
    pub db_connections_in_use: usize,
    pub hash_queue: usize,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("a valid counter");
    registry
        .register(Box::new(c.clone()))
        .expect("registered once");
    c
}

fn histogram(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(latency_buckets()),
        labels,
    )
    .expect("a valid histogram");
    registry
        .register(Box::new(h.clone()))
        .expect("registered once");
    h
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("a valid gauge");
    registry
        .register(Box::new(g.clone()))
        .expect("registered once");
    g
}

/// Counters only ever grow: negative figures (which a stored row never has) count as zero.
fn non_negative(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl Metrics {
    /// Metrics that record (`enabled`) or ignore what they are told.
    pub fn new(enabled: bool) -> Self {
        let r = Registry::new();
        let db_connections = IntGaugeVec::new(
            Opts::new(
                "aiwrapper_db_pool_connections",
                "Connections of the request pool, by state (idle, in_use).",
            ),
            &["state"],
        )
        .expect("a valid gauge");
        r.register(Box::new(db_connections.clone()))
            .expect("registered once");
        Metrics {
            enabled,
            graphql_requests: counter(
                &r,
                "aiwrapper_graphql_requests_total",
                "GraphQL operations, by operation type and outcome (OK or the first error's code).",
                &["operation", "code"],
            ),
            graphql_duration: histogram(
                &r,
                "aiwrapper_graphql_request_duration_seconds",
                "Time to answer a GraphQL operation (subscriptions: until the stream ends).",
                &["operation"],
            ),
            upstream_calls: counter(
                &r,
                "aiwrapper_upstream_calls_total",
                "Upstream LLM calls finalised, by model and status (ok, error, filtered).",
                &["model", "status"],
            ),
            ttft: histogram(
                &r,
                "aiwrapper_upstream_time_to_first_token_seconds",
                "From sending a call upstream to its first token, by model.",
                &["model"],
            ),
            call_duration: histogram(
                &r,
                "aiwrapper_upstream_call_duration_seconds",
                "From sending a call upstream to its end, by model.",
                &["model"],
            ),
            tokens: counter(
                &r,
                "aiwrapper_tokens_total",
                "Tokens metered (token_usage rows written by this process), by model and kind (prompt, completion).",
                &["model", "kind"],
            ),
            cost: counter(
                &r,
                "aiwrapper_cost_microcents_total",
                "Cost metered in micro-cents (10^-8 USD; token_usage rows written by this process), by model.",
                &["model"],
            ),
            refusals: counter(
                &r,
                "aiwrapper_call_refusals_total",
                "Calls refused before anything was written or sent, by reason (budget, concurrency, rate, validation, conversation_busy).",
                &["reason"],
            ),
            websocket_connections: gauge(
                &r,
                "aiwrapper_websocket_connections",
                "WebSocket connections open.",
            ),
            websocket_operations: gauge(
                &r,
                "aiwrapper_websocket_operations",
                "Operations running on WebSocket connections.",
            ),
            calls_in_flight: gauge(
                &r,
                "aiwrapper_calls_in_flight",
                "Upstream calls this process runs now (each holds a lease).",
            ),
            hash_queue: gauge(
                &r,
                "aiwrapper_password_hash_queue",
                "Password hashes waiting for a hashing thread.",
            ),
            db_connections,
            registry: r,
        }
    }

    /// Whether anything is recorded.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// A GraphQL operation answered.
    pub fn graphql_request(&self, operation: &str, code: &str, took: Duration) {
        if !self.enabled {
            return;
        }
        self.graphql_requests
            .with_label_values(&[operation, code])
            .inc();
        self.graphql_duration
            .with_label_values(&[operation])
            .observe(took.as_secs_f64());
    }

    /// A call's usage row was committed.
    pub fn call_finished(&self, call: FinishedCall<'_>) {
        if !self.enabled {
            return;
        }
        self.upstream_calls
            .with_label_values(&[call.model, call.status])
            .inc();
        self.tokens
            .with_label_values(&[call.model, "prompt"])
            .inc_by(non_negative(call.prompt_tokens));
        self.tokens
            .with_label_values(&[call.model, "completion"])
            .inc_by(non_negative(call.completion_tokens));
        self.cost
            .with_label_values(&[call.model])
            .inc_by(non_negative(call.cost_microcents));
        if let Some(t) = call.ttft {
            self.ttft
                .with_label_values(&[call.model])
                .observe(t.as_secs_f64());
        }
        if let Some(d) = call.duration {
            self.call_duration
                .with_label_values(&[call.model])
                .observe(d.as_secs_f64());
        }
    }

    /// A call refused before anything was written or sent.
    pub fn call_refused(&self, reason: &str) {
        if !self.enabled {
            return;
        }
        self.refusals.with_label_values(&[reason]).inc();
    }

    /// The exposition, in the Prometheus text format, with the present figures.
    pub fn render(&self, now: Snapshot) -> String {
        let set = |g: &IntGauge, n: usize| g.set(i64::try_from(n).unwrap_or(i64::MAX));
        set(&self.websocket_connections, now.websocket_connections);
        set(&self.websocket_operations, now.websocket_operations);
        set(&self.calls_in_flight, now.calls_in_flight);
        set(&self.hash_queue, now.hash_queue);
        set(
            &self.db_connections.with_label_values(&["idle"]),
            now.db_connections_idle,
        );
        set(
            &self.db_connections.with_label_values(&["in_use"]),
            now.db_connections_in_use,
        );
        let mut out = Vec::new();
        // Encoding gathered families into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The exposition's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_exactly_and_the_exposition_names_them() {
        let m = Metrics::new(true);
        for (p, c, cost) in [(10, 5, 450), (7, 0, 105)] {
            m.call_finished(FinishedCall {
                model: "gpt-4o-mini",
                status: "ok",
                prompt_tokens: p,
                completion_tokens: c,
                cost_microcents: cost,
                ttft: Some(Duration::from_millis(12)),
                duration: Some(Duration::from_millis(40)),
            });
        }
        m.call_refused("budget");
        m.graphql_request("query", "OK", Duration::from_millis(2));
        let text = m.render(Snapshot {
            calls_in_flight: 3,
            ..Snapshot::default()
        });
        for line in [
            "aiwrapper_tokens_total{kind=\"prompt\",model=\"gpt-4o-mini\"} 17",
            "aiwrapper_tokens_total{kind=\"completion\",model=\"gpt-4o-mini\"} 5",
            "aiwrapper_cost_microcents_total{model=\"gpt-4o-mini\"} 555",
            "aiwrapper_upstream_calls_total{model=\"gpt-4o-mini\",status=\"ok\"} 2",
            "aiwrapper_call_refusals_total{reason=\"budget\"} 1",
            "aiwrapper_graphql_requests_total{code=\"OK\",operation=\"query\"} 1",
            "aiwrapper_calls_in_flight 3",
            "aiwrapper_upstream_time_to_first_token_seconds_count{model=\"gpt-4o-mini\"} 2",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        // Off, nothing moves.
        let off = Metrics::new(false);
        off.call_refused("budget");
        assert!(
            !off.render(Snapshot::default())
                .contains("aiwrapper_call_refusals_total{")
        );
    }
}
