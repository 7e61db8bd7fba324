//! Authentication: who the caller is, from `Authorization: Bearer TOKEN` or the signed session
//! cookie, as a [`Viewer`] (or nobody). The transport resolves it once per request, before the
//! schema runs (`crate::transport::authenticate`); fields that need a caller use [`SignedIn`].

pub mod cookie;
pub mod password;
pub mod rate_limit;
pub mod session;

use std::net::SocketAddr;

use axum::http::{HeaderMap, header};
use entity::{session as session_entity, user};
use tower_cookies::Cookies;

use crate::config::AuthConfig;
use crate::db::Db;
use crate::error::{AppError, AppResult};
use crate::grouped::Grouped;
use crate::metering::rollup::Metered;
use cookie::SessionCookies;
use password::Hasher;
use rate_limit::AuthRateLimiter;
use session::ClientInfo;

/// How the caller proved who they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthVia {
    Cookie,
    Bearer,
}

/// The signed-in caller.
#[derive(Clone, Debug)]
pub struct Viewer {
    pub user: user::Model,
    pub session: session_entity::Model,
    pub via: AuthVia,
}

/// A token resolved to its caller.
pub struct Authenticated {
    pub viewer: Viewer,
    /// The session's expiry slid forward (a cookie should be re-issued).
    pub refreshed: bool,
    /// The caller's profile and tokens this month, read with the session (None when they have
    /// no profile yet).
    pub profile: Option<Metered>,
}

/// What authentication learned about a request; always present in the request's extensions.
#[derive(Clone, Debug, Default)]
pub struct RequestAuth {
    pub viewer: Option<Viewer>,
    /// The viewer's profile as read with the session, just now, for this request only (a
    /// WebSocket connection, which outlives it, never uses it).
    pub profile: Option<Metered>,
    pub client: ClientInfo,
}

/// Everything authentication needs, built once from the configuration.
#[derive(Clone)]
pub struct Auth {
    pub cookies: SessionCookies,
    pub hasher: Hasher,
    pub limiter: AuthRateLimiter,
    trusted_origins: Vec<String>,
    trust_proxy: bool,
    /// Session ids ended here (sign-out), for the WebSocket connections that use them.
    revoked: tokio::sync::broadcast::Sender<String>,
    trusted_proxy_hops: usize,
    /// Sessions looked up for the requests that arrive together (see [`Auth::live_session`]).
    live: Grouped<String, AppResult<Option<session::ActiveSession>>>,
    /// The same for the calls a WebSocket starts, with their callers' limit overrides
    /// (see [`Auth::live_session_for_call`]).
    live_for_calls: Grouped<String, AppResult<Option<session::ActiveSession>>>,
}

/// The most session tokens one query resolves, and how many such queries run at once.
const MAX_LIVE_GROUP: usize = 64;
const LIVE_SLOTS: usize = 2;

/// Grouped session lookups ([`session::resolve_many`]) on `db`, each group in a task of its
/// own; `for_calls` as there.
fn live_sessions(
    db: &Db,
    for_calls: bool,
) -> Grouped<String, AppResult<Option<session::ActiveSession>>> {
    let db = db.clone();
    Grouped::start(LIVE_SLOTS, MAX_LIVE_GROUP, move |tokens: Vec<String>| {
        let db = db.clone();
        async move {
            match session::resolve_many(&db, &tokens, for_calls).await {
                Ok(resolved) => resolved.into_iter().map(Ok).collect(),
                Err(e) => {
                    tracing::error!(error = ?e, "looking up sessions failed");
                    tokens
                        .iter()
                        .map(|_| Err(AppError::internal("looking up the session failed")))
                        .collect()
                }
            }
        }
    })
    // A lookup abandoned halfway leaves nothing half-done (see `lone_items_inline`).
    .lone_items_inline()
}

impl Auth {
    /// From within the runtime (grouped session lookups run on `db` in tasks of their own).
    pub fn new(cfg: &AuthConfig, db: &Db) -> Self {
        let live = live_sessions(db, false);
        let live_for_calls = live_sessions(db, true);
        Self {
            live,
            live_for_calls,
            cookies: SessionCookies::new(cfg.secret.expose(), cfg.secure_cookies()),
            hasher: Hasher::for_this_machine(cfg.hash_queue),
            limiter: AuthRateLimiter::new(cfg.rate_limit_max, cfg.rate_limit_window),
            trusted_origins: cfg.trusted_origins.clone(),
            trust_proxy: cfg.trust_proxy,
            trusted_proxy_hops: cfg.trusted_proxy_hops,
            revoked: tokio::sync::broadcast::channel(256).0,
        }
    }

    /// A session token's live session ([`session::resolve_many`]), in one query with the other
    /// requests' lookups that arrive meanwhile, so a burst of requests does not queue a
    /// statement each on the pool. (A WebSocket's check before each call it starts is
    /// [`Auth::live_session_for_call`].)
    pub async fn live_session(&self, token: &str) -> AppResult<Option<session::ActiveSession>> {
        self.live.answer(token.to_owned()).await
    }

    /// [`Auth::live_session`] for a call about to start: the session comes with its user's
    /// profile and limit overrides, which the call is then decided against (one statement for
    /// both, grouped with the other calls' that arrive meanwhile).
    pub async fn live_session_for_call(
        &self,
        token: &str,
    ) -> AppResult<Option<session::ActiveSession>> {
        self.live_for_calls.answer(token.to_owned()).await
    }

    /// End a session and tell this process's open sockets of it at once (other processes'
    /// sockets find out at their next session check).
    pub async fn revoke(&self, db: &Db, session_id: &str) -> Result<bool, AppError> {
        let ended = session::revoke(db, session_id).await?;
        // No receiver (no socket open) is not an error.
        let _ = self.revoked.send(session_id.to_owned());
        Ok(ended)
    }

    /// Session ids revoked in this process from now on.
    pub fn revocations(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.revoked.subscribe()
    }

    /// True when the request has no `Origin` or a trusted one.
    pub fn origin_allowed(&self, headers: &HeaderMap) -> bool {
        match headers.get(header::ORIGIN).map(|o| o.to_str()) {
            None => true,
            Some(Ok(origin)) => self
                .trusted_origins
                .iter()
                .any(|t| t.eq_ignore_ascii_case(origin.trim_end_matches('/'))),
            Some(Err(_)) => false,
        }
    }

    /// The client's address and user agent, as recorded on new sessions and used for throttling.
    pub fn client_info(&self, headers: &HeaderMap, peer: Option<SocketAddr>) -> ClientInfo {
        let forwarded = self
            .trust_proxy
            .then(|| forwarded_client(headers, self.trusted_proxy_hops))
            .flatten();
        ClientInfo {
            ip_address: forwarded
                .or_else(|| peer.map(|p| p.ip()))
                .map(|ip| ip.to_canonical().to_string()),
            user_agent: headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.chars().take(512).collect()),
        }
    }

    /// The session token a request carries, and how: a bearer header wins over the cookie; a
    /// cookie with a bad signature counts as no cookie.
    pub fn credentials(
        &self,
        headers: &HeaderMap,
        cookies: Option<&Cookies>,
    ) -> Option<(String, AuthVia)> {
        if let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            && let Some(token) = bearer_token(value)
        {
            return Some((token.to_owned(), AuthVia::Bearer));
        }
        let cookie = cookies?.get(self.cookies.name())?;
        let token = self.cookies.verify(cookie.value())?;
        Some((token.to_owned(), AuthVia::Cookie))
    }

    /// Resolve a token to the caller (None when unknown or expired), in one query with the
    /// other requests' tokens that arrive meanwhile (see [`Auth::live_session`]): under load,
    /// authentication is not a statement per request.
    pub async fn viewer(&self, token: &str, via: AuthVia) -> AppResult<Option<Authenticated>> {
        Ok(self.live_session(token).await?.map(|active| Authenticated {
            viewer: Viewer {
                user: active.user,
                session: active.session,
                via,
            },
            refreshed: active.refreshed,
            profile: active.profile,
        }))
    }
}

/// The client's address as the trusted proxies recorded it: `X-Forwarded-For` read across all
/// its header lines in order, the entry `hops` places from the end (each proxy appends the
/// address it received from). None when there are fewer entries or that one is not an address:
/// then the header was not written by the proxies, and the peer address counts.
pub fn forwarded_client(headers: &HeaderMap, hops: usize) -> Option<std::net::IpAddr> {
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    let entry = entries.len().checked_sub(hops).map(|i| entries[i])?;
    entry
        .parse::<std::net::IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

/// `Bearer TOKEN` (scheme case-insensitive).
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Guard for fields that need a signed-in caller.
pub struct SignedIn;

impl async_graphql::Guard for SignedIn {
    async fn check(&self, ctx: &async_graphql::Context<'_>) -> async_graphql::Result<()> {
        match ctx.data_opt::<Viewer>() {
            Some(_) => Ok(()),
            None => Err(AppError::Unauthenticated.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_is_read_across_lines_from_the_trusted_end() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", "6.6.6.6, 1.1.1.1".parse().unwrap());
        h.append("x-forwarded-for", "2001:db8::1, 10.0.0.2".parse().unwrap());
        let ip = |hops| forwarded_client(&h, hops).map(|i| i.to_string());
        assert_eq!(ip(1).as_deref(), Some("10.0.0.2"));
        assert_eq!(ip(2).as_deref(), Some("2001:db8::1"));
        assert_eq!(ip(3).as_deref(), Some("1.1.1.1"));
        assert_eq!(ip(5), None);
        let mut junk = HeaderMap::new();
        junk.append("x-forwarded-for", "<script>, 1.2.3.4:5678".parse().unwrap());
        assert_eq!(
            forwarded_client(&junk, 1).map(|i| i.to_string()).as_deref(),
            Some("1.2.3.4")
        );
        assert_eq!(forwarded_client(&junk, 2), None);
        assert_eq!(forwarded_client(&HeaderMap::new(), 1), None);
    }

    #[test]
    fn bearer_values() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer   abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearer"), None);
    }
}
