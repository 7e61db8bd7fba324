//! Instrumenting GraphQL operations: [`Recorder`] counts and times each one, by operation type
//! and outcome (`OK`, or the first error's `extensions.code`), into the server's Prometheus
//! metrics (over HTTP an operation is one request; over WebSocket, a stream from `subscribe` to
//! its end); [`Traced`] gives exported traces their GraphQL spans.

use std::sync::Arc;
use std::time::Instant;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory};
use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, OperationType};
use async_graphql::{Response, ServerResult};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;

use crate::metrics::Metrics;

/// Records one operation into the metrics: made by the document limits (`super::limits`) once
/// they parsed the document, so metrics add no schema extension (each extension costs a boxed
/// future per resolved field).
pub struct Recorder {
    metrics: Arc<Metrics>,
    /// The operation's type (`unknown` when its document did not parse).
    operation: &'static str,
}

fn type_name(ty: OperationType) -> &'static str {
    match ty {
        OperationType::Query => "query",
        OperationType::Mutation => "mutation",
        OperationType::Subscription => "subscription",
    }
}

/// The type of the operation a document runs: its only one, or the one all of its operations
/// share.
fn operation_of(doc: &ExecutableDocument) -> &'static str {
    match &doc.operations {
        DocumentOperations::Single(op) => type_name(op.node.ty),
        DocumentOperations::Multiple(ops) => {
            let mut types = ops.values().map(|op| type_name(op.node.ty));
            match types.next() {
                Some(first) if types.all(|t| t == first) => first,
                _ => "unknown",
            }
        }
    }
}

/// `OK`, or the first error's code; a code is a label, so only codes of our own form count
/// (anything else is `OTHER`).
fn outcome(response: &Response) -> String {
    let Some(e) = response.errors.first() else {
        return "OK".into();
    };
    let code = e
        .extensions
        .as_ref()
        .and_then(|x| x.get("code"))
        .map(|v| v.to_string().trim_matches('"').to_owned())
        .unwrap_or_default();
    let ours = !code.is_empty()
        && code.len() <= 40
        && code.bytes().all(|b| b.is_ascii_uppercase() || b == b'_');
    if ours { code } else { "OTHER".into() }
}

/// Records a WebSocket operation when its stream ends (however it ends).
struct StreamRecord {
    metrics: Arc<Metrics>,
    operation: &'static str,
    started: Instant,
    outcome: Option<String>,
}

impl Drop for StreamRecord {
    fn drop(&mut self) {
        let outcome = self.outcome.take().unwrap_or_else(|| "OK".into());
        self.metrics
            .graphql_request(self.operation, &outcome, self.started.elapsed());
    }
}

impl Recorder {
    /// For an operation of `doc` (`None`: it did not parse).
    pub fn new(metrics: Arc<Metrics>, doc: Option<&ExecutableDocument>) -> Self {
        Self {
            metrics,
            operation: doc.map_or("unknown", operation_of),
        }
    }

    /// An operation over HTTP answered, `started` then.
    pub fn answered(&self, response: &Response, started: Instant) {
        self.metrics
            .graphql_request(self.operation, &outcome(response), started.elapsed());
    }

    /// An operation over WebSocket: recorded when its stream ends.
    pub fn stream<'s>(&self, stream: BoxStream<'s, Response>) -> BoxStream<'s, Response> {
        let mut record = StreamRecord {
            metrics: self.metrics.clone(),
            operation: self.operation,
            started: Instant::now(),
            outcome: None,
        };
        stream
            .map(move |response| {
                if record.outcome.is_none() && !response.errors.is_empty() {
                    record.outcome = Some(outcome(&response));
                }
                response
            })
            .boxed()
    }
}

/// Spans for exported traces (registered only when `crate::telemetry::exporting()`):
/// `graphql.execute` per operation and `graphql.resolve` per root field, so that a trace shows
/// which field a database statement or an upstream call belongs to. Nested fields get none
/// (a page of 100 logs would otherwise be hundreds of spans).
pub struct Traced;

impl ExtensionFactory for Traced {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Traced)
    }
}

#[async_trait::async_trait]
impl Extension for Traced {
    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: async_graphql::extensions::NextExecute<'_>,
    ) -> Response {
        use tracing::Instrument;
        let span = tracing::info_span!(
            "graphql.execute",
            graphql.operation.name = operation_name.unwrap_or("")
        );
        next.run(ctx, operation_name).instrument(span).await
    }

    async fn resolve(
        &self,
        ctx: &ExtensionContext<'_>,
        info: async_graphql::extensions::ResolveInfo<'_>,
        next: async_graphql::extensions::NextResolve<'_>,
    ) -> ServerResult<Option<async_graphql::Value>> {
        use tracing::Instrument;
        if info.path_node.parent.is_some() {
            return next.run(ctx, info).await;
        }
        let span = tracing::info_span!("graphql.resolve", graphql.field = info.name);
        next.run(ctx, info).instrument(span).await
    }
}
