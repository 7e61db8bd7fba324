//! `GET /metrics`: the Prometheus exposition, on the `METRICS_ADDR` listener only.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use super::websocket::{Holder, Sockets};
use crate::metrics::{CONTENT_TYPE, Snapshot};
use crate::state::AppState;

/// The metrics listener's routes.
pub fn routes(state: AppState, sockets: Arc<Sockets>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state((state, sockets))
}

async fn metrics(State((state, sockets)): State<(AppState, Arc<Sockets>)>) -> impl IntoResponse {
    let (idle, in_use) = state.db.pool_status();
    let text = state.metrics.render(Snapshot {
        websocket_connections: sockets.held_by(&Holder::Process),
        websocket_operations: sockets.operations(),
        calls_in_flight: state.calls.running(),
        db_connections_idle: idle,
        db_connections_in_use: in_use,
        hash_queue: state.auth.hasher.waiting(),
    });
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], text)
}
