//! `BETTER_AUTH_*`, `TRUSTED_ORIGINS`, `TRUST_PROXY`, `AUTH_RATE_LIMIT_*`: authentication,
//! compatible with a Better Auth app sharing the database.

use std::time::Duration;

use url::Url;

use super::env::{Env, Secret};

/// Better Auth's development fallback secret, used only when `BETTER_AUTH_SECRET` is unset and
/// the server is not served over https. Cookies signed with it are forgeable by anyone: the
/// server logs a warning at start.
const DEV_SECRET: &str = "better-auth-secret-dev-only-change-me-0000";

/// Authentication settings (Better Auth–compatible).
#[derive(Clone, Debug)]
pub struct AuthConfig {
    /// `BETTER_AUTH_SECRET`: the HMAC key for session cookies (at least 32 characters).
    pub secret: Secret,
    /// True when no secret was configured and the development fallback is in use.
    pub secret_is_dev_default: bool,
    /// `BETTER_AUTH_URL`: the public base URL (default `http://localhost:PORT`). https turns on
    /// `__Secure-` cookies.
    pub base_url: Url,
    /// Origins whose cookie-authenticated requests are accepted: `BETTER_AUTH_URL`'s origin plus
    /// `TRUSTED_ORIGINS` (comma-separated).
    pub trusted_origins: Vec<String>,
    /// `TRUST_PROXY` (default false): take the client IP from the last `X-Forwarded-For` entry,
    /// as appended by the reverse proxy in front of this server.
    pub trust_proxy: bool,
    /// `AUTH_RATE_LIMIT_MAX` attempts (default 3) per `AUTH_RATE_LIMIT_WINDOW_SECS` (default 10)
    /// for `signIn`/`signUp`, per client IP and per email.
    pub rate_limit_max: u32,
    pub rate_limit_window: Duration,
    /// `PASSWORD_HASH_QUEUE` (default 32): password hashes that may wait for a hashing thread;
    /// sign-ins and sign-ups beyond it are refused with `RATE_LIMITED` rather than queued.
    pub hash_queue: usize,
    /// `TRUSTED_PROXY_HOPS` (default 1 when `TRUST_PROXY` is on): how many reverse proxies in
    /// front of this server append to `X-Forwarded-For`; the client is the entry that many
    /// places from the end.
    pub trusted_proxy_hops: usize,
}

impl AuthConfig {
    /// Whether cookies are `__Secure-` prefixed and `Secure`.
    pub fn secure_cookies(&self) -> bool {
        self.base_url.scheme() == "https"
    }
}

impl AuthConfig {
    /// `port` is the server's, for the default `BETTER_AUTH_URL`.
    pub fn read(env: &mut Env, port: u16) -> Self {
        let default_base = Url::parse(&format!("http://localhost:{port}")).expect("a valid URL");
        let base_url = match env.get("BETTER_AUTH_URL") {
            None => default_base,
            Some(raw) => match Url::parse(&raw) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => u,
                _ => {
                    env.problem(
                        "BETTER_AUTH_URL",
                        "must be an http:// or https:// URL such as https://app.example.com",
                    );
                    default_base
                }
            },
        };
        let https = base_url.scheme() == "https";
        let secret = env.get("BETTER_AUTH_SECRET");
        let secret_is_dev_default = secret.is_none();
        match &secret {
            Some(s) if s.chars().count() < 32 => env.problem(
                "BETTER_AUTH_SECRET",
                "must be at least 32 characters (generate one with `openssl rand -base64 32`)",
            ),
            None if https => env.problem(
                "BETTER_AUTH_SECRET",
                "is required when BETTER_AUTH_URL is https (generate one with `openssl rand -base64 32`)",
            ),
            _ => {}
        }
        let secret = Secret::new(secret.unwrap_or_else(|| DEV_SECRET.to_owned()));

        let mut trusted_origins = vec![base_url.origin().ascii_serialization()];
        if let Some(list) = env.get("TRUSTED_ORIGINS") {
            for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                match Url::parse(item) {
                    Ok(u)
                        if matches!(u.scheme(), "http" | "https")
                            && u.has_host()
                            && u.path() == "/" =>
                    {
                        trusted_origins.push(u.origin().ascii_serialization());
                    }
                    _ => {
                        env.problem(
                            "TRUSTED_ORIGINS",
                            "must be comma-separated origins such as https://app.example.com,http://localhost:3000",
                        );
                        break;
                    }
                }
            }
        }
        let trust_proxy = env.flag("TRUST_PROXY", false);
        let rate_limit_max = env.parse_where(
            "AUTH_RATE_LIMIT_MAX",
            3u32,
            |n| *n >= 1,
            "a whole number of at least 1",
        );
        let rate_limit_window = env.seconds("AUTH_RATE_LIMIT_WINDOW_SECS", 10);
        let hash_queue = env.parse_where(
            "PASSWORD_HASH_QUEUE",
            32usize,
            |n| *n >= 1,
            "a whole number of at least 1",
        );
        let trusted_proxy_hops = env.parse_where(
            "TRUSTED_PROXY_HOPS",
            1usize,
            |n| (1..=16).contains(n),
            "a whole number from 1 to 16",
        );
        AuthConfig {
            hash_queue,
            trusted_proxy_hops,
            secret,
            secret_is_dev_default,
            base_url,
            trusted_origins,
            trust_proxy,
            rate_limit_max,
            rate_limit_window,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::collections::HashMap;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn trusted_origins_are_normalised_origins() {
        let c = Config::from_vars(vars(&[
            ("BETTER_AUTH_URL", "https://App.Example.com/base/"),
            ("BETTER_AUTH_SECRET", "s".repeat(40).as_str()),
            (
                "TRUSTED_ORIGINS",
                "http://localhost:3000, https://admin.example.com",
            ),
        ]))
        .unwrap();
        assert!(c.auth.secure_cookies());
        assert_eq!(
            c.auth.trusted_origins,
            [
                "https://app.example.com",
                "http://localhost:3000",
                "https://admin.example.com"
            ]
        );
        let err = Config::from_vars(vars(&[("TRUSTED_ORIGINS", "*")])).unwrap_err();
        assert!(err.0[0].starts_with("TRUSTED_ORIGINS"));
    }

    #[test]
    fn https_requires_a_real_secret() {
        let err =
            Config::from_vars(vars(&[("BETTER_AUTH_URL", "https://app.example.com")])).unwrap_err();
        assert_eq!(err.0.len(), 1);
        assert!(err.0[0].starts_with("BETTER_AUTH_SECRET is required"));
    }
}
