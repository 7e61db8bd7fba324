//! How requests reach the schema: `/graphql` over HTTP ([`http`]) and WebSocket ([`websocket`]),
//! the IDE ([`ide`]), health checks ([`health`]), and authentication once per request before
//! any of them runs ([`authenticate`]).

pub mod health;
pub mod http;
pub mod ide;
pub mod metrics;
pub mod websocket;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_cookies::Cookies;

use crate::auth::{AuthVia, RequestAuth};
use crate::error::AppError;
use crate::state::AppState;

/// Connections the kernel may queue before the server accepts them. tokio's `bind` asks for
/// 128 (the standard library's value): 500 WebSocket clients reconnecting at once overflowed it
/// and the SYNs dropped were retried by the clients' kernels a second later (`nstat`:
/// `TcpExtListenOverflows`). The kernel caps it at `net.core.somaxconn` (4096 by default).
pub const ACCEPT_BACKLOG: u32 = 4096;

/// A listener on `addr` with [`ACCEPT_BACKLOG`].
pub fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
}

/// Middleware (outermost): the request's id (see `crate::request_id`), on the response and on
/// everything done for the request.
pub async fn request_id(req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(crate::request_id::HEADER)
        .and_then(|v| v.to_str().ok());
    let id = crate::request_id::accept_or_new(given);
    let mut response = crate::request_id::scope(id.clone(), next.run(req)).await;
    if let Ok(value) = axum::http::HeaderValue::from_str(&id) {
        response
            .headers_mut()
            .insert(crate::request_id::HEADER, value);
    }
    response
}

/// Middleware: authenticate once, before any handler, and refuse cookie-authenticated requests
/// from untrusted origins.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let auth = &state.auth;
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let client = auth.client_info(req.headers(), peer);
    let cookies = req.extensions().get::<Cookies>().cloned();
    let (mut viewer, mut profile) = (None, None);
    if let Some((token, via)) = auth.credentials(req.headers(), cookies.as_ref()) {
        if via == AuthVia::Cookie && !auth.origin_allowed(req.headers()) {
            return AppError::Forbidden(
                "cross-site request refused: this origin is not trusted".into(),
            )
            .into_response();
        }
        match auth.viewer(&token, via).await {
            Ok(Some(signed_in)) => {
                if signed_in.refreshed
                    && via == AuthVia::Cookie
                    && let Some(cookies) = &cookies
                {
                    cookies.add(auth.cookies.issue(&signed_in.viewer.session.token));
                }
                viewer = Some(signed_in.viewer);
                profile = signed_in.profile;
            }
            Ok(None) => {
                if via == AuthVia::Cookie
                    && let Some(cookies) = &cookies
                {
                    cookies.add(auth.cookies.clear());
                }
            }
            Err(e) => return e.into_response(),
        }
    }
    req.extensions_mut().insert(RequestAuth {
        viewer,
        profile,
        client,
    });
    next.run(req).await
}
