//! The one place that reads the environment. Every value is validated at start-up and every bad
//! value is reported at once, each with what was wrong and what is expected.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use url::Url;

/// Better Auth's development fallback secret, used only when `BETTER_AUTH_SECRET` is unset and
/// the server is not served over https. Cookies signed with it are forgeable by anyone: the
/// server logs a warning at start.
const DEV_SECRET: &str = "better-auth-secret-dev-only-change-me-0000";

/// Typed configuration, read once at start.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to bind (`HOST`, default `127.0.0.1`).
    pub host: IpAddr,
    /// Port to bind (`PORT`, default 4000; 0 picks a free port).
    pub port: u16,
    pub database: DatabaseConfig,
    /// Apply pending migrations at start (`RUN_MIGRATIONS`, default true).
    pub run_migrations: bool,
    pub auth: AuthConfig,
    pub openai: OpenAiConfig,
}

/// Where the data lives and how the pool behaves.
#[derive(Clone, Debug)]
pub struct DatabaseConfig {
    /// `DATABASE_URL`: the endpoint request traffic uses (pooled on Neon). Defaults to an
    /// embedded SQLite file.
    pub url: Secret,
    /// `DATABASE_URL_DIRECT`: the endpoint for migrations and other session-level work; falls
    /// back to `url`.
    pub direct_url: Option<Secret>,
    /// `DATABASE_MAX_CONNECTIONS` (default 10).
    pub max_connections: u32,
    /// `DATABASE_CONNECT_TIMEOUT_SECS` (default 10, the reference stack's `connect_timeout`).
    pub connect_timeout: Duration,
    /// `DATABASE_IDLE_TIMEOUT_SECS` (default 20, the reference stack's `idle_timeout`).
    pub idle_timeout: Duration,
}

impl DatabaseConfig {
    /// The URL for session-level work (migrations).
    pub fn direct_url(&self) -> &Secret {
        self.direct_url.as_ref().unwrap_or(&self.url)
    }

    /// Which kind of database the URL names.
    pub fn backend(&self) -> Backend {
        Backend::of(self.url.expose()).unwrap_or(Backend::Sqlite)
    }
}

/// The supported databases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    /// The backend a database URL names, if supported.
    pub fn of(url: &str) -> Option<Backend> {
        let scheme = url.split_once(':').map(|(s, _)| s)?;
        match scheme {
            "postgres" | "postgresql" => Some(Backend::Postgres),
            "sqlite" => Some(Backend::Sqlite),
            _ => None,
        }
    }
}

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
}

/// The OpenAI-compatible upstream.
#[derive(Clone, Debug)]
pub struct OpenAiConfig {
    /// `OPENAI_BASE_URL`, e.g. `https://api.openai.com/v1`.
    pub base_url: Option<Url>,
    /// `OPENAI_API_KEY`.
    pub api_key: Option<Secret>,
}

/// A string that never appears in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Every problem found in the environment, one line each.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError(pub Vec<String>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration:")?;
        for problem in &self.0 {
            writeln!(f, "  - {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Read the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars().collect())
    }

    /// Read the configuration from the given variables (the process environment in production,
    /// a map in tests).
    pub fn from_vars(vars: HashMap<String, String>) -> Result<Self, ConfigError> {
        let mut env = Env {
            vars,
            problems: Vec::new(),
        };

        let host = env.parse(
            "HOST",
            "127.0.0.1".parse().ok(),
            "an IP address such as 127.0.0.1 or 0.0.0.0",
        );
        let port = env.parse("PORT", Some(4000u16), "a port number from 0 to 65535");

        let url = env
            .get("DATABASE_URL")
            .unwrap_or(migration::DEFAULT_DATABASE_URL.to_owned());
        let backend = Backend::of(&url);
        if backend.is_none() {
            env.problem(
                "DATABASE_URL",
                "must start with postgres://, postgresql:// or sqlite:",
            );
        }
        let direct_url = env.get("DATABASE_URL_DIRECT");
        if let Some(direct) = &direct_url {
            match (Backend::of(direct), backend) {
                (Some(Backend::Postgres), Some(Backend::Postgres)) => {}
                (_, Some(Backend::Sqlite)) => env.problem(
                    "DATABASE_URL_DIRECT",
                    "applies to PostgreSQL only; unset it when DATABASE_URL is sqlite:",
                ),
                _ => env.problem(
                    "DATABASE_URL_DIRECT",
                    "must start with postgres:// or postgresql://",
                ),
            }
        }
        let max_connections = env.parse_where(
            "DATABASE_MAX_CONNECTIONS",
            Some(10u32),
            |n| *n >= 1,
            "a whole number of at least 1",
        );
        let connect_timeout = env.seconds("DATABASE_CONNECT_TIMEOUT_SECS", 10);
        let idle_timeout = env.seconds("DATABASE_IDLE_TIMEOUT_SECS", 20);
        let run_migrations = env.flag("RUN_MIGRATIONS", true);

        let base_url = match env.get("BETTER_AUTH_URL") {
            None => Url::parse(&format!("http://localhost:{}", port.unwrap_or(4000))).ok(),
            Some(raw) => match Url::parse(&raw) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => Some(u),
                _ => {
                    env.problem(
                        "BETTER_AUTH_URL",
                        "must be an http:// or https:// URL such as https://app.example.com",
                    );
                    None
                }
            },
        };
        let https = base_url.as_ref().is_some_and(|u| u.scheme() == "https");
        let (secret, secret_is_dev_default) = match env.get("BETTER_AUTH_SECRET") {
            Some(s) if s.chars().count() >= 32 => (Some(Secret::new(s)), false),
            Some(_) => {
                env.problem(
                    "BETTER_AUTH_SECRET",
                    "must be at least 32 characters (generate one with `openssl rand -base64 32`)",
                );
                (None, false)
            }
            None if https => {
                env.problem(
                    "BETTER_AUTH_SECRET",
                    "is required when BETTER_AUTH_URL is https (generate one with `openssl rand -base64 32`)",
                );
                (None, false)
            }
            None => (Some(Secret::new(DEV_SECRET)), true),
        };

        let openai_base_url = env
            .get("OPENAI_BASE_URL")
            .and_then(|raw| match Url::parse(&raw) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => Some(u),
                _ => {
                    env.problem(
                        "OPENAI_BASE_URL",
                        "must be an http:// or https:// URL such as https://api.openai.com/v1",
                    );
                    None
                }
            });
        let openai_api_key = env.get("OPENAI_API_KEY").map(Secret::new);

        if !env.problems.is_empty() {
            return Err(ConfigError(env.problems));
        }
        // Every `None` above recorded a problem, so these are all present.
        let (
            Some(host),
            Some(port),
            Some(max_connections),
            Some(connect_timeout),
            Some(idle_timeout),
            Some(run_migrations),
            Some(base_url),
            Some(secret),
        ) = (
            host,
            port,
            max_connections,
            connect_timeout,
            idle_timeout,
            run_migrations,
            base_url,
            secret,
        )
        else {
            return Err(ConfigError(vec![
                "internal: a value was missing without a reported problem".into(),
            ]));
        };
        Ok(Config {
            host,
            port,
            database: DatabaseConfig {
                url: Secret::new(url),
                direct_url: direct_url.map(Secret::new),
                max_connections,
                connect_timeout,
                idle_timeout,
            },
            run_migrations,
            auth: AuthConfig {
                secret,
                secret_is_dev_default,
                base_url,
            },
            openai: OpenAiConfig {
                base_url: openai_base_url,
                api_key: openai_api_key,
            },
        })
    }
}

/// Reads variables and collects problems instead of stopping at the first.
struct Env {
    vars: HashMap<String, String>,
    problems: Vec<String>,
}

impl Env {
    /// The variable's value; unset and empty are the same.
    fn get(&self, name: &str) -> Option<String> {
        self.vars
            .get(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    fn problem(&mut self, name: &str, expected: &str) {
        let shown = match self.get(name) {
            // Never echo a value that may be a secret or contain a password.
            Some(_) if name.contains("SECRET") || name.contains("KEY") || name.contains("URL") => {
                String::new()
            }
            Some(v) => format!(" (got {v:?})"),
            None => String::new(),
        };
        self.problems.push(format!("{name} {expected}{shown}"));
    }

    fn parse<T: std::str::FromStr>(
        &mut self,
        name: &str,
        default: Option<T>,
        expected: &str,
    ) -> Option<T> {
        self.parse_where(name, default, |_| true, expected)
    }

    fn parse_where<T: std::str::FromStr>(
        &mut self,
        name: &str,
        default: Option<T>,
        valid: impl Fn(&T) -> bool,
        expected: &str,
    ) -> Option<T> {
        match self.get(name) {
            None => default,
            Some(raw) => match raw.parse::<T>() {
                Ok(v) if valid(&v) => Some(v),
                _ => {
                    self.problem(name, &format!("must be {expected}"));
                    None
                }
            },
        }
    }

    fn seconds(&mut self, name: &str, default: u64) -> Option<Duration> {
        self.parse_where(
            name,
            Some(default),
            |s: &u64| *s >= 1 && *s <= 86_400,
            "a whole number of seconds from 1 to 86400",
        )
        .map(Duration::from_secs)
    }

    fn flag(&mut self, name: &str, default: bool) -> Option<bool> {
        match self.get(name).map(|v| v.to_ascii_lowercase()) {
            None => Some(default),
            Some(v) if matches!(v.as_str(), "1" | "true" | "yes" | "on") => Some(true),
            Some(v) if matches!(v.as_str(), "0" | "false" | "no" | "off") => Some(false),
            Some(_) => {
                self.problem(name, "must be true or false");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn nothing_configured_gives_the_embedded_defaults() {
        let c = Config::from_vars(vars(&[])).unwrap();
        assert_eq!(c.host.to_string(), "127.0.0.1");
        assert_eq!(c.port, 4000);
        assert_eq!(c.database.url.expose(), migration::DEFAULT_DATABASE_URL);
        assert_eq!(c.database.backend(), Backend::Sqlite);
        assert_eq!(c.database.direct_url(), &c.database.url);
        assert_eq!(c.database.connect_timeout, Duration::from_secs(10));
        assert_eq!(c.database.idle_timeout, Duration::from_secs(20));
        assert!(c.run_migrations);
        assert!(c.auth.secret_is_dev_default);
        assert_eq!(c.auth.base_url.as_str(), "http://localhost:4000/");
        assert!(c.openai.base_url.is_none());
    }

    #[test]
    fn postgres_with_a_direct_endpoint() {
        let c = Config::from_vars(vars(&[
            ("DATABASE_URL", "postgres://u:p@ep-x-pooler.neon.tech/db"),
            ("DATABASE_URL_DIRECT", "postgresql://u:p@ep-x.neon.tech/db"),
            ("RUN_MIGRATIONS", "false"),
            ("PORT", "0"),
        ]))
        .unwrap();
        assert_eq!(c.database.backend(), Backend::Postgres);
        assert_eq!(
            c.database.direct_url().expose(),
            "postgresql://u:p@ep-x.neon.tech/db"
        );
        assert!(!c.run_migrations);
        assert_eq!(c.port, 0);
    }

    #[test]
    fn every_bad_value_is_reported_at_once() {
        let err = Config::from_vars(vars(&[
            ("HOST", "localhost:80"),
            ("PORT", "70000"),
            ("DATABASE_URL", "mysql://x"),
            ("DATABASE_MAX_CONNECTIONS", "0"),
            ("DATABASE_IDLE_TIMEOUT_SECS", "soon"),
            ("RUN_MIGRATIONS", "maybe"),
            ("BETTER_AUTH_URL", "ftp://x"),
            ("BETTER_AUTH_SECRET", "short"),
            ("OPENAI_BASE_URL", "not a url"),
        ]))
        .unwrap_err();
        let names: Vec<&str> = err.0.iter().map(|p| p.split(' ').next().unwrap()).collect();
        assert_eq!(
            names,
            [
                "HOST",
                "PORT",
                "DATABASE_URL",
                "DATABASE_MAX_CONNECTIONS",
                "DATABASE_IDLE_TIMEOUT_SECS",
                "RUN_MIGRATIONS",
                "BETTER_AUTH_URL",
                "BETTER_AUTH_SECRET",
                "OPENAI_BASE_URL",
            ]
        );
        assert!(err.0[1].contains("(got \"70000\")"), "{}", err.0[1]);
    }

    #[test]
    fn secrets_and_urls_are_never_echoed() {
        let err = Config::from_vars(vars(&[
            ("BETTER_AUTH_SECRET", "hunter2"),
            ("DATABASE_URL", "mysql://root:pa55word@db"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(
            !err.contains("hunter2") && !err.contains("pa55word"),
            "{err}"
        );
        let ok =
            Config::from_vars(vars(&[("BETTER_AUTH_SECRET", "x".repeat(32).as_str())])).unwrap();
        assert!(!format!("{ok:?}").contains(&"x".repeat(32)));
    }

    #[test]
    fn https_requires_a_real_secret() {
        let err =
            Config::from_vars(vars(&[("BETTER_AUTH_URL", "https://app.example.com")])).unwrap_err();
        assert_eq!(err.0.len(), 1);
        assert!(err.0[0].starts_with("BETTER_AUTH_SECRET is required"));
    }

    #[test]
    fn direct_endpoint_must_match_the_backend() {
        let err =
            Config::from_vars(vars(&[("DATABASE_URL_DIRECT", "postgres://x/y")])).unwrap_err();
        assert!(err.0[0].starts_with("DATABASE_URL_DIRECT applies to PostgreSQL only"));
    }
}
