//! The one place that reads the environment, one section per file. Every value is validated at
//! start-up and every bad value is reported at once, each with what was wrong and what is
//! expected; values that may be secret are never echoed.

mod auth;
mod calls;
mod database;
mod env;
mod graphql;
mod upstream;
mod websocket;

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

pub use auth::AuthConfig;
pub use calls::{CallsConfig, ProfileDefaults};
pub use database::{Backend, DatabaseConfig, PoolMode, default_pool};
use env::Env;
pub use env::Secret;
pub use graphql::GraphqlConfig;
pub use upstream::UpstreamConfig;
pub use websocket::WebSocketConfig;

/// Typed configuration, read once at start.
#[derive(Clone, Debug)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub auth: AuthConfig,
    pub upstream: UpstreamConfig,
    pub calls: CallsConfig,
    /// What new users start with.
    pub defaults: ProfileDefaults,
    pub graphql: GraphqlConfig,
    pub websocket: WebSocketConfig,
}

/// The listener and the process's life.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Address to bind (`HOST`, default `127.0.0.1`).
    pub host: IpAddr,
    /// Port to bind (`PORT`, default 4000; 0 picks a free port).
    pub port: u16,
    /// `SHUTDOWN_GRACE_SECS` (default 20): on SIGTERM, how long in-flight calls may run on before
    /// they are stopped and finalised.
    pub shutdown_grace: Duration,
    /// `METRICS_ADDR` (unset by default): where `GET /metrics` (Prometheus) is served, on a
    /// listener of its own so it is not public with the API (e.g. `127.0.0.1:9464`, or a
    /// private interface a Prometheus server reaches). Unset, there is no metrics endpoint.
    pub metrics_addr: Option<std::net::SocketAddr>,
}

impl ServerConfig {
    fn read(env: &mut Env) -> Self {
        let localhost = IpAddr::from([127, 0, 0, 1]);
        ServerConfig {
            host: env.parse(
                "HOST",
                localhost,
                "an IP address such as 127.0.0.1 or 0.0.0.0",
            ),
            port: env.parse("PORT", 4000u16, "a port number from 0 to 65535"),
            shutdown_grace: env.seconds("SHUTDOWN_GRACE_SECS", 20),
            metrics_addr: env.get("METRICS_ADDR").and_then(|v| match v.parse() {
                Ok(addr) => Some(addr),
                Err(_) => {
                    env.problem(
                        "METRICS_ADDR",
                        "must be an address and port such as 127.0.0.1:9464",
                    );
                    None
                }
            }),
        }
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
    /// a map in tests), section by section, reporting every problem at once.
    pub fn from_vars(vars: HashMap<String, String>) -> Result<Self, ConfigError> {
        let mut env = Env::new(vars);
        let server = ServerConfig::read(&mut env);
        let database = DatabaseConfig::read(&mut env);
        let auth = AuthConfig::read(&mut env, server.port);
        let upstream = UpstreamConfig::read(&mut env);
        let calls = CallsConfig::read(&mut env, server.port);
        let defaults = ProfileDefaults::read(&mut env, &calls.prices, upstream.base_url.is_some());
        let graphql = GraphqlConfig::read(&mut env);
        let websocket = WebSocketConfig::read(&mut env);
        if !env.problems.is_empty() {
            return Err(ConfigError(env.problems));
        }
        Ok(Config {
            server,
            database,
            auth,
            upstream,
            calls,
            defaults,
            graphql,
            websocket,
        })
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
        assert_eq!(c.server.host.to_string(), "127.0.0.1");
        assert_eq!(c.server.port, 4000);
        assert_eq!(c.database.url.expose(), migration::DEFAULT_DATABASE_URL);
        assert_eq!(c.database.backend(), Backend::Sqlite);
        assert_eq!(c.database.direct_url(), &c.database.url);
        assert_eq!(c.database.connect_timeout, Duration::from_secs(10));
        assert_eq!(c.database.idle_timeout, Duration::from_secs(20));
        assert_eq!(c.database.ping_after_idle, Duration::from_millis(500));
        assert!(c.database.run_migrations);
        assert!(c.auth.secret_is_dev_default);
        assert_eq!(c.auth.base_url.as_str(), "http://localhost:4000/");
        assert!(c.upstream.base_url.is_none());
        assert_eq!(c.auth.trusted_origins, ["http://localhost:4000"]);
        assert_eq!(
            (c.auth.rate_limit_max, c.auth.rate_limit_window),
            (3, Duration::from_secs(10))
        );
        assert_eq!(c.defaults.model, "gpt-4o-mini");
        assert_eq!(c.defaults.monthly_token_budget, 0);
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
}
