//! The one place that reads the environment. Every value is validated at start-up and every bad
//! value is reported at once, each with what was wrong and what is expected.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use url::Url;

use crate::metering::prices::PriceTable;

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
    /// What new users start with.
    pub defaults: ProfileDefaults,
    /// `SHUTDOWN_GRACE_SECS` (default 20): on SIGTERM, how long in-flight calls may run on before
    /// they are stopped and finalised.
    pub shutdown_grace: Duration,
    pub graphql: GraphqlConfig,
    /// `INSTANCE_ID` (default `HOSTNAME:PORT`): this process among replicas sharing a database.
    /// Keep it stable across restarts of the same replica, unique among live ones: a restarted
    /// replica finalises the calls its previous life left in flight at once.
    pub instance_id: String,
    /// `CALL_LEASE_SECS` (default 60): a running call's lease, renewed every third of it; calls
    /// whose lease lapsed (their process died) are finalised by any replica.
    pub call_lease: Duration,
}

/// Limits and developer features of the GraphQL endpoint.
#[derive(Clone, Debug)]
pub struct GraphqlConfig {
    /// `GRAPHQL_MAX_DEPTH` (default 16: the standard introspection query, which GraphiQL sends, is 14 deep).
    pub max_depth: usize,
    /// `GRAPHQL_MAX_COMPLEXITY` (default 5000): fields counted, lists by their page size.
    pub max_complexity: usize,
    /// `GRAPHQL_MAX_RECURSIVE_DEPTH` (default 32): nesting the parser accepts at all.
    pub max_recursive_depth: usize,
    /// `GRAPHQL_MAX_BODY_BYTES` (default 1 MiB): largest request body or WebSocket message.
    pub max_body_bytes: usize,
    /// `GRAPHQL_INTROSPECTION` (default true): turn off in production to hide the schema.
    pub introspection: bool,
    /// `GRAPHQL_IDE` (default true): serve GraphiQL to browsers on `GET /graphql`.
    pub ide: bool,
}

/// The profile a new user gets.
#[derive(Clone, Debug)]
pub struct ProfileDefaults {
    /// `DEFAULT_MODEL` (default `gpt-4o-mini`, as the seed's column default).
    pub model: String,
    /// `DEFAULT_MONTHLY_TOKEN_BUDGET` (default 0 = unlimited).
    pub monthly_token_budget: i64,
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
    /// `DATABASE_POOL_MODE`: what sits behind `DATABASE_URL` (see [`PoolMode`]).
    pub pool_mode: PoolMode,
}

/// What `DATABASE_URL` connects to, which decides how statements are sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolMode {
    /// A PostgreSQL server, or a pooler that keeps one server per client (session mode):
    /// statements are prepared and cached per connection.
    Direct,
    /// A pooler in transaction mode (PgBouncer, Neon's `-pooler` endpoint): a server is lent
    /// per transaction, so nothing may outlive one. Statements go over the simple query
    /// protocol with their parameters rendered as typed literals (`crate::db::inline`).
    Transaction,
}

impl PoolMode {
    /// `DATABASE_POOL_MODE=auto` (the default): `transaction` for a Neon pooled host (its
    /// first label ends in `-pooler`), else `direct`.
    pub fn detect(url: &str) -> PoolMode {
        let pooled = Url::parse(url).ok().is_some_and(|u| {
            u.host_str()
                .and_then(|h| h.split('.').next())
                .is_some_and(|label| label.ends_with("-pooler"))
        });
        if pooled {
            PoolMode::Transaction
        } else {
            PoolMode::Direct
        }
    }
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
}

impl AuthConfig {
    /// Whether cookies are `__Secure-` prefixed and `Secure`.
    pub fn secure_cookies(&self) -> bool {
        self.base_url.scheme() == "https"
    }
}

/// The OpenAI-compatible upstream and the limits on calls to it.
#[derive(Clone, Debug)]
pub struct OpenAiConfig {
    /// `OPENAI_BASE_URL`, e.g. `https://api.openai.com/v1`. Unset: the built-in local upstream.
    pub base_url: Option<Url>,
    /// `OPENAI_API_KEY`.
    pub api_key: Option<Secret>,
    /// `LLM_CONNECT_TIMEOUT_MS` (default 10 000).
    pub connect_timeout: Duration,
    /// `LLM_FIRST_TOKEN_TIMEOUT_MS` (default 60 000): from sending the request to the first token.
    pub first_token_timeout: Duration,
    /// `LLM_IDLE_TIMEOUT_MS` (default 30 000): the longest gap between two chunks.
    pub idle_timeout: Duration,
    /// `MAX_PROMPT_CHARS` (default 32 000).
    pub max_prompt_chars: usize,
    /// `MAX_COMPLETION_TOKENS` (default 4096): the largest `maxTokens` a call may ask for.
    pub max_completion_tokens: u32,
    /// `DEFAULT_MAX_TOKENS` (default 1024): `maxTokens` when a call gives none.
    pub default_max_tokens: u32,
    /// The models routed to and their prices: the defaults, with `MODEL_PRICES` applied.
    pub prices: PriceTable,
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
        let localhost = IpAddr::from([127, 0, 0, 1]);
        let host = env.parse(
            "HOST",
            localhost,
            "an IP address such as 127.0.0.1 or 0.0.0.0",
        );
        let port = env.parse("PORT", 4000u16, "a port number from 0 to 65535");

        let url = env
            .get("DATABASE_URL")
            .unwrap_or_else(|| migration::DEFAULT_DATABASE_URL.to_owned());
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
            10u32,
            |n| *n >= 1,
            "a whole number of at least 1",
        );
        let connect_timeout = env.seconds("DATABASE_CONNECT_TIMEOUT_SECS", 10);
        let idle_timeout = env.seconds("DATABASE_IDLE_TIMEOUT_SECS", 20);
        let pool_mode = match env.get("DATABASE_POOL_MODE").as_deref() {
            None | Some("auto") => PoolMode::detect(&url),
            Some("direct") => PoolMode::Direct,
            Some("transaction") => PoolMode::Transaction,
            Some(_) => {
                env.problem("DATABASE_POOL_MODE", "must be auto, direct or transaction");
                PoolMode::Direct
            }
        };
        if pool_mode == PoolMode::Transaction && backend == Some(Backend::Sqlite) {
            env.problem(
                "DATABASE_POOL_MODE",
                "transaction applies to PostgreSQL only; SQLite has no pooler",
            );
        } else if pool_mode == PoolMode::Transaction && direct_url.is_none() {
            // Migrations (DDL, prepared statements) and operator commands must not go through
            // a transaction-mode pooler: with a pooled DATABASE_URL, the direct one is required.
            env.problem(
                "DATABASE_URL_DIRECT",
                "is required when DATABASE_URL is a transaction-mode pooler (DATABASE_POOL_MODE=transaction, or a Neon -pooler host): set it to the direct endpoint, used for migrations",
            );
        }
        let run_migrations = env.flag("RUN_MIGRATIONS", true);

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
        let default_model = env
            .get("DEFAULT_MODEL")
            .unwrap_or_else(|| "gpt-4o-mini".to_owned());
        let default_budget = env.parse_where(
            "DEFAULT_MONTHLY_TOKEN_BUDGET",
            0i64,
            |n| *n >= 0,
            "a whole number of tokens, 0 for unlimited",
        );

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
        let connect_timeout_llm = env.millis("LLM_CONNECT_TIMEOUT_MS", 10_000);
        let first_token_timeout = env.millis("LLM_FIRST_TOKEN_TIMEOUT_MS", 60_000);
        let llm_idle_timeout = env.millis("LLM_IDLE_TIMEOUT_MS", 30_000);
        let max_prompt_chars = env.parse_where(
            "MAX_PROMPT_CHARS",
            32_000usize,
            |n| *n >= 1,
            "a whole number of at least 1",
        );
        let max_completion_tokens = env.parse_where(
            "MAX_COMPLETION_TOKENS",
            4096u32,
            |n| *n >= 1,
            "a whole number of at least 1",
        );
        let default_max_tokens = env.parse_where(
            "DEFAULT_MAX_TOKENS",
            1024u32.min(max_completion_tokens),
            |n| *n >= 1 && *n <= max_completion_tokens,
            "a whole number from 1 to MAX_COMPLETION_TOKENS",
        );
        let prices = match env.get("MODEL_PRICES") {
            None => PriceTable::defaults(),
            Some(json) => PriceTable::defaults()
                .with_overrides(&json)
                .unwrap_or_else(|why| {
                    env.problem("MODEL_PRICES", &why);
                    PriceTable::defaults()
                }),
        };
        if prices.get(&default_model).is_none() {
            env.problem(
                "DEFAULT_MODEL",
                "must be a model in the price table (see MODEL_PRICES)",
            );
        }
        let shutdown_grace = env.seconds("SHUTDOWN_GRACE_SECS", 20);
        let host_name = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .or_else(|| env.get("HOSTNAME"))
            .unwrap_or_else(|| "localhost".to_owned());
        let instance_id = env
            .get("INSTANCE_ID")
            .unwrap_or_else(|| format!("{host_name}:{port}"));
        let call_lease = env.seconds("CALL_LEASE_SECS", 60);
        if call_lease < Duration::from_secs(3) {
            env.problem("CALL_LEASE_SECS", "must be at least 3");
        }
        let at_least_one = |n: &usize| *n >= 1;
        let graphql = GraphqlConfig {
            max_depth: env.parse_where(
                "GRAPHQL_MAX_DEPTH",
                16,
                at_least_one,
                "a whole number of at least 1",
            ),
            max_complexity: env.parse_where(
                "GRAPHQL_MAX_COMPLEXITY",
                5000,
                at_least_one,
                "a whole number of at least 1",
            ),
            max_recursive_depth: env.parse_where(
                "GRAPHQL_MAX_RECURSIVE_DEPTH",
                32,
                at_least_one,
                "a whole number of at least 1",
            ),
            max_body_bytes: env.parse_where(
                "GRAPHQL_MAX_BODY_BYTES",
                1024 * 1024,
                |n| *n >= 1024,
                "a number of bytes of at least 1024",
            ),
            introspection: env.flag("GRAPHQL_INTROSPECTION", true),
            ide: env.flag("GRAPHQL_IDE", true),
        };

        if !env.problems.is_empty() {
            return Err(ConfigError(env.problems));
        }
        Ok(Config {
            host,
            port,
            database: DatabaseConfig {
                url: Secret::new(url),
                direct_url: direct_url.map(Secret::new),
                max_connections,
                connect_timeout,
                idle_timeout,
                pool_mode,
            },
            run_migrations,
            auth: AuthConfig {
                secret,
                secret_is_dev_default,
                base_url,
                trusted_origins,
                trust_proxy,
                rate_limit_max,
                rate_limit_window,
            },
            openai: OpenAiConfig {
                base_url: openai_base_url,
                api_key: openai_api_key,
                connect_timeout: connect_timeout_llm,
                first_token_timeout,
                idle_timeout: llm_idle_timeout,
                max_prompt_chars,
                max_completion_tokens,
                default_max_tokens,
                prices,
            },
            defaults: ProfileDefaults {
                model: default_model,
                monthly_token_budget: default_budget,
            },
            shutdown_grace,
            graphql,
            instance_id,
            call_lease,
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
            Some(_)
                if ["SECRET", "KEY", "URL", "PRICES"]
                    .iter()
                    .any(|s| name.contains(s)) =>
            {
                String::new()
            }
            Some(v) => format!(" (got {v:?})"),
            None => String::new(),
        };
        self.problems.push(format!("{name} {expected}{shown}"));
    }

    fn parse<T: std::str::FromStr>(&mut self, name: &str, default: T, expected: &str) -> T {
        self.parse_where(name, default, |_| true, expected)
    }

    /// The parsed value, or `default` when unset. A bad value is recorded as a problem (and
    /// `default` returned so reading can go on and report every problem at once).
    fn parse_where<T: std::str::FromStr>(
        &mut self,
        name: &str,
        default: T,
        valid: impl Fn(&T) -> bool,
        expected: &str,
    ) -> T {
        match self.get(name) {
            None => default,
            Some(raw) => match raw.parse::<T>() {
                Ok(v) if valid(&v) => v,
                _ => {
                    self.problem(name, &format!("must be {expected}"));
                    default
                }
            },
        }
    }

    fn seconds(&mut self, name: &str, default: u64) -> Duration {
        Duration::from_secs(self.parse_where(
            name,
            default,
            |s: &u64| *s >= 1 && *s <= 86_400,
            "a whole number of seconds from 1 to 86400",
        ))
    }

    fn millis(&mut self, name: &str, default: u64) -> Duration {
        Duration::from_millis(self.parse_where(
            name,
            default,
            |ms: &u64| *ms >= 1 && *ms <= 3_600_000,
            "a whole number of milliseconds from 1 to 3600000",
        ))
    }

    fn flag(&mut self, name: &str, default: bool) -> bool {
        match self.get(name).map(|v| v.to_ascii_lowercase()) {
            None => default,
            Some(v) if matches!(v.as_str(), "1" | "true" | "yes" | "on") => true,
            Some(v) if matches!(v.as_str(), "0" | "false" | "no" | "off") => false,
            Some(_) => {
                self.problem(name, "must be true or false");
                default
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
        assert_eq!(c.auth.trusted_origins, ["http://localhost:4000"]);
        assert_eq!(
            (c.auth.rate_limit_max, c.auth.rate_limit_window),
            (3, Duration::from_secs(10))
        );
        assert_eq!(c.defaults.model, "gpt-4o-mini");
        assert_eq!(c.defaults.monthly_token_budget, 0);
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
        // A Neon `-pooler` host is a transaction-mode PgBouncer.
        assert_eq!(c.database.pool_mode, PoolMode::Transaction);
    }

    #[test]
    fn pool_mode_is_detected_and_can_be_overridden() {
        let mode =
            |pairs: &[(&str, &str)]| Config::from_vars(vars(pairs)).map(|c| c.database.pool_mode);
        assert_eq!(mode(&[]).unwrap(), PoolMode::Direct);
        for (url, expected) in [
            (
                "postgres://u@ep-cool-pond-123-pooler.eu-central-1.aws.neon.tech/db",
                PoolMode::Transaction,
            ),
            (
                "postgres://u@ep-cool-pond-123.eu-central-1.aws.neon.tech/db",
                PoolMode::Direct,
            ),
            ("postgres://u@localhost:6432/db", PoolMode::Direct),
            // Only the first label counts.
            ("postgres://u@db.x-pooler.example.com/db", PoolMode::Direct),
        ] {
            let direct = "postgres://u@direct.example.com/db";
            assert_eq!(
                mode(&[("DATABASE_URL", url), ("DATABASE_URL_DIRECT", direct)]).unwrap(),
                expected,
                "{url}"
            );
        }
        // A pooled endpoint without a direct one: migrations would have nowhere safe to go.
        let err = mode(&[(
            "DATABASE_URL",
            "postgres://u@ep-cool-pond-123-pooler.eu-central-1.aws.neon.tech/db",
        )])
        .unwrap_err();
        assert!(err.0[0].starts_with("DATABASE_URL_DIRECT"), "{err:?}");
        let pg = "postgres://u@ep-a-pooler.neon.tech/db";
        assert_eq!(
            mode(&[("DATABASE_URL", pg), ("DATABASE_POOL_MODE", "direct")]).unwrap(),
            PoolMode::Direct
        );
        assert_eq!(
            mode(&[
                ("DATABASE_URL", "postgres://u@localhost:6432/db"),
                ("DATABASE_URL_DIRECT", "postgres://u@localhost:5432/db"),
                ("DATABASE_POOL_MODE", "transaction")
            ])
            .unwrap(),
            PoolMode::Transaction
        );
        let err = mode(&[("DATABASE_POOL_MODE", "session")]).unwrap_err();
        assert!(err.0[0].starts_with("DATABASE_POOL_MODE"), "{err:?}");
        let err = mode(&[("DATABASE_POOL_MODE", "transaction")]).unwrap_err();
        assert!(err.0[0].contains("PostgreSQL only"), "{err:?}");
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
