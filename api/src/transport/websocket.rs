//! `/graphql` over WebSocket: `graphql-transport-ws` and legacy `graphql-ws`. Upgrades from an
//! untrusted `Origin` are refused; the connection authenticates from the upgrade's cookie or from
//! `connection_init`'s `{"authorization": "Bearer TOKEN"}`.

use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql::{Data, ErrorExtensions};
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::extract::FromRequestParts;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};

use crate::auth::{AuthVia, RequestAuth, bearer_token};
use crate::error::AppError;
use crate::graphql::{AppSchema, OverWebSocket, request_data};
use crate::state::AppState;

/// Per-read buffer of a WebSocket connection (see [`upgrade`]).
const READ_BUFFER_SIZE: usize = 4 * 1024;

/// Accept a WebSocket upgrade on `/graphql`.
pub async fn upgrade(
    state: AppState,
    schema: AppSchema,
    auth: RequestAuth,
    mut parts: Parts,
) -> Response {
    if !state.auth.origin_allowed(&parts.headers) {
        return AppError::Forbidden("WebSocket from an untrusted origin refused".into())
            .into_response();
    }
    let protocol = match GraphQLProtocol::from_request_parts(&mut parts, &state).await {
        Ok(p) => p,
        Err(rejection) => return rejection.into_response(),
    };
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
        Ok(u) => u,
        Err(rejection) => return rejection.into_response(),
    };
    let max = state.config.graphql.max_body_bytes;
    upgrade
        .max_message_size(max)
        // tungstenite zero-fills its whole read buffer before every read attempt, and the
        // connection's read side is polled each time an event goes out: with the default 128 KiB
        // that memset was a third of the server's CPU at 500 streams (perf, see
        // docs/performance.md; snapview/tungstenite-rs#547). Client messages here are small;
        // larger ones (up to `max`) are read in several chunks.
        .read_buffer_size(READ_BUFFER_SIZE)
        .max_frame_size(max)
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| {
            let mut data = request_data(&state, auth.viewer, auth.client, None);
            data.insert(OverWebSocket);
            GraphQLWebSocket::new(socket, schema, protocol)
                .with_data(data)
                .on_connection_init(move |payload| connection_init(state, payload))
                .serve()
        })
        .into_response()
}

/// `connection_init` may carry `{"authorization": "Bearer TOKEN"}`; a token that does not
/// resolve to a live session refuses the connection.
async fn connection_init(
    state: AppState,
    payload: serde_json::Value,
) -> async_graphql::Result<Data> {
    let mut data = Data::default();
    let value = payload
        .get("authorization")
        .or_else(|| payload.get("Authorization"))
        .and_then(|v| v.as_str());
    if let Some(value) = value {
        let Some(token) = bearer_token(value) else {
            return Err(AppError::Unauthenticated.extend());
        };
        match state.auth.viewer(&state.db, token, AuthVia::Bearer).await {
            Ok(Some((viewer, _))) => data.insert(viewer),
            Ok(None) => return Err(AppError::Unauthenticated.extend()),
            Err(e) => return Err(e.extend()),
        }
    }
    Ok(data)
}
