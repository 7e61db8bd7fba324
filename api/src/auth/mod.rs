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
use crate::error::AppError;
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

/// What authentication learned about a request; always present in the request's extensions.
#[derive(Clone, Debug, Default)]
pub struct RequestAuth {
    pub viewer: Option<Viewer>,
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
}

impl Auth {
    pub fn new(cfg: &AuthConfig) -> Self {
        Self {
            cookies: SessionCookies::new(cfg.secret.expose(), cfg.secure_cookies()),
            hasher: Hasher::for_this_machine(),
            limiter: AuthRateLimiter::new(cfg.rate_limit_max, cfg.rate_limit_window),
            trusted_origins: cfg.trusted_origins.clone(),
            trust_proxy: cfg.trust_proxy,
        }
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
            .then(|| headers.get("x-forwarded-for")?.to_str().ok())
            .flatten()
            .and_then(|v| v.rsplit(',').next())
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty());
        ClientInfo {
            ip_address: forwarded.or_else(|| peer.map(|p| p.ip().to_string())),
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

    /// Resolve a token to the caller (None when unknown or expired).
    pub async fn viewer(
        &self,
        db: &Db,
        token: &str,
        via: AuthVia,
    ) -> Result<Option<(Viewer, bool)>, AppError> {
        Ok(session::resolve(db, token).await?.map(|active| {
            (
                Viewer {
                    user: active.user,
                    session: active.session,
                    via,
                },
                active.refreshed,
            )
        }))
    }
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
    fn bearer_values() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer   abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearer"), None);
    }
}
