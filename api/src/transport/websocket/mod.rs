//! `/graphql` over WebSocket: `graphql-transport-ws` to the letter of graphql-ws's PROTOCOL.md,
//! and legacy `graphql-ws` (subscriptions-transport-ws) with its own semantics.
//!
//! async-graphql's own WebSocket server hard-codes other close codes (1002, 1011), has no
//! initialisation timeout, no `error` message and no duplicate-id check, and offers no hook to
//! change that; so the protocol is served here, over the schema's `execute_stream` (what
//! async-graphql's loop does underneath). Upgrades from an untrusted `Origin` are refused; the
//! connection authenticates from the upgrade's cookie or from `connection_init`'s
//! `{"authorization": "Bearer TOKEN"}`, and re-checks that session while it lives.

mod connection;
pub mod messages;
pub mod sockets;

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use futures_util::future::Either;

pub use self::messages::Protocol;
pub use self::sockets::{Holder, Sockets};
use crate::auth::RequestAuth;
use crate::auth::rate_limit::network_key;
use crate::error::AppError;
use crate::graphql::AppSchema;
use crate::graphql::limits::DocumentLimits;
use crate::state::AppState;

/// Per-read buffer of a WebSocket connection (see [`upgrade`]). Each socket keeps it for its
/// life, zero-filled (so resident): 1 KiB rather than 4 took an idle socket from 8.6 to 5.5 KiB
/// of server memory. A `subscribe` is a few hundred bytes; larger messages take several reads.
const READ_BUFFER_SIZE: usize = 1024;

/// Accept a WebSocket upgrade on `/graphql`.
pub async fn upgrade(
    state: AppState,
    schema: AppSchema,
    limits: Arc<DocumentLimits>,
    sockets: Arc<Sockets>,
    auth: RequestAuth,
    mut parts: Parts,
) -> Response {
    // The profile read with the session is this request's; the connection outlives it.
    let auth = RequestAuth {
        profile: None,
        ..auth
    };
    if !state.auth.origin_allowed(&parts.headers) {
        return AppError::Forbidden("WebSocket from an untrusted origin refused".into())
            .into_response();
    }
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
        Ok(u) => u,
        Err(rejection) => return rejection.into_response(),
    };
    let cfg = &state.config.websocket;
    if sockets.is_closing() {
        return AppError::Unavailable("the server is shutting down".into()).into_response();
    }
    let Some(process_slot) = sockets.take(Holder::Process, cfg.max_sockets) else {
        return AppError::CallLimit {
            limit: crate::error::CallLimitKind::Concurrency,
            message: format!(
                "this server holds its maximum of {} WebSocket connections",
                cfg.max_sockets
            ),
            retry_after_secs: 5,
        }
        .into_response();
    };
    // Counted before the upgrade: a flood of sockets from one network costs an HTTP answer.
    let network = network_key(state_ip(&auth));
    let Some(network_slot) = sockets.take(Holder::Network(network), cfg.max_sockets_per_ip) else {
        return AppError::CallLimit {
            limit: crate::error::CallLimitKind::Concurrency,
            message: format!(
                "at most {} WebSocket connections may be open from one network",
                cfg.max_sockets_per_ip
            ),
            retry_after_secs: 5,
        }
        .into_response();
    };
    let user_slot = match &auth.viewer {
        Some(viewer) => {
            match sockets.take(
                Holder::User(viewer.user.id.clone()),
                cfg.max_sockets_per_user,
            ) {
                Some(slot) => Some(slot),
                None => {
                    return AppError::CallLimit {
                        limit: crate::error::CallLimitKind::Concurrency,
                        message: format!(
                            "at most {} WebSocket connections may be open for one user",
                            cfg.max_sockets_per_user
                        ),
                        retry_after_secs: 5,
                    }
                    .into_response();
                }
            }
        }
        None => None,
    };
    let offered: Vec<String> = parts
        .headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .collect();
    let protocol = Protocol::choose(offered.iter().map(String::as_str));
    let max = state.config.graphql.max_body_bytes;
    let mut upgrade = upgrade
        .max_message_size(max)
        // tungstenite zero-fills its whole read buffer before every read attempt, and the
        // connection's read side is polled each time an event goes out: with the default 128 KiB
        // that memset was a third of the server's CPU at 500 streams (perf, see
        // docs/performance.md; snapview/tungstenite-rs#547). Client messages here are small;
        // larger ones (up to `max`) are read in several chunks.
        .read_buffer_size(READ_BUFFER_SIZE)
        .max_frame_size(max);
    if let Some(p) = protocol {
        upgrade = upgrade.protocols([p.name()]);
    }
    let connection = Box::new(connection::Connection::new(
        state,
        schema,
        limits,
        sockets,
        auth,
        [process_slot, network_slot],
        user_slot,
    ));
    // The connection's task goes on under the upgrade request's id.
    let carried = crate::request_id::capture();
    upgrade
        .on_upgrade(move |socket| {
            // (No `async` block around these: it would hold the socket a second time.)
            carried.run(match protocol {
                Some(protocol) => Either::Left(connection.run(socket, protocol)),
                // As graphql-ws's server: the socket opens, then closes with the reason.
                None => {
                    Either::Right(connection.refuse(socket, 4406, "Subprotocol not acceptable"))
                }
            })
        })
        .into_response()
}

fn state_ip(auth: &RequestAuth) -> &str {
    auth.client.ip_address.as_deref().unwrap_or("")
}
