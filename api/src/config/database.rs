//! `DATABASE_*` and `RUN_MIGRATIONS`: where the data lives and how the pool behaves.

use std::str::FromStr;
use std::time::Duration;

use sea_orm::sqlx::postgres::PgConnectOptions;

use url::Url;

use super::env::{Env, Secret};

/// Where the data lives and how the pool behaves.
#[derive(Clone, Debug)]
pub struct DatabaseConfig {
    /// `DATABASE_URL`: the endpoint request traffic uses (pooled on Neon). Defaults to an
    /// embedded SQLite file.
    pub url: Secret,
    /// `DATABASE_URL_DIRECT`: the endpoint for migrations and other session-level work; falls
    /// back to `url`.
    pub direct_url: Option<Secret>,
    /// `DATABASE_MAX_CONNECTIONS`; by default [`REMOTE_POOL`], or twice the cores (at most
    /// that) for a PostgreSQL server on this machine (see [`default_pool`]).
    pub max_connections: u32,
    /// `DATABASE_CONNECT_TIMEOUT_SECS` (default 10 s: a pooled serverless endpoint that does not answer by then will not).
    pub connect_timeout: Duration,
    /// `DATABASE_IDLE_TIMEOUT_SECS` (default 20 s: a scaled-down replica does not hold pooler slots).
    pub idle_timeout: Duration,
    /// `DATABASE_PING_AFTER_IDLE_MS` (default 500 ms): on the `direct` path, a pooled
    /// connection idle at least this long is pinged before it is handed out; one used more
    /// recently is not (0 pings before every statement).
    pub ping_after_idle: Duration,
    /// `DATABASE_POOL_MODE`: what sits behind `DATABASE_URL` (see [`PoolMode`]).
    pub pool_mode: PoolMode,
    /// Apply pending migrations at start (`RUN_MIGRATIONS`, default true).
    pub run_migrations: bool,
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

/// The request pool's size when `DATABASE_MAX_CONNECTIONS` is unset, for a database across a
/// network: a statement holds its connection for at least a round trip, so at 3,000
/// statements/s and 1.5 ms each about 4.5 connections are busy on average, more in bursts.
pub const REMOTE_POOL: u32 = 10;

/// The default request pool for a PostgreSQL URL: [`REMOTE_POOL`], except for a server on this
/// machine reached directly, where it is twice the cores (from 2 to [`REMOTE_POOL`]).
///
/// A server on this machine shares its cores with this process. A statement then holds its
/// connection only while PostgreSQL computes, and more backends than about twice the cores
/// only wait for a core, taking turns with this server's threads and each other: on 2 cores
/// with the benchmark's 64 clients, a pool of 4 instead of 10 took history page 1 from 2,863 to
/// 3,070 req/s and its p99 from 41 to 34 ms (docs/pooling.md). Behind a transaction-mode pooler
/// on this machine, PostgreSQL itself may be elsewhere: the remote default stays.
pub fn default_pool(url: &str, pool_mode: PoolMode, cores: usize) -> u32 {
    if pool_mode == PoolMode::Direct && on_this_machine(url) {
        u32::try_from(cores.saturating_mul(2))
            .unwrap_or(REMOTE_POOL)
            .clamp(2, REMOTE_POOL)
    } else {
        REMOTE_POOL
    }
}

/// Whether a PostgreSQL URL names a server on this machine: a Unix socket, `localhost` or a
/// loopback address. The URL is read by sqlx, as the pool will read it: a host that is a path,
/// `host`/`hostaddr` parameters, and for a URL without a host, `PGHOST` or sqlx's default (a
/// local socket if one exists, else `localhost`).
fn on_this_machine(url: &str) -> bool {
    let Ok(options) = PgConnectOptions::from_str(url) else {
        return false;
    };
    let host = options.get_host();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    options.get_socket().is_some()
        || host.starts_with('/')
        || host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl DatabaseConfig {
    pub fn read(env: &mut Env) -> Self {
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
        let pool_size_given = env.get("DATABASE_MAX_CONNECTIONS").is_some();
        let mut max_connections = env.parse_where(
            "DATABASE_MAX_CONNECTIONS",
            REMOTE_POOL,
            |n| *n >= 1,
            "a whole number of at least 1",
        );
        let connect_timeout = env.seconds("DATABASE_CONNECT_TIMEOUT_SECS", 10);
        let idle_timeout = env.seconds("DATABASE_IDLE_TIMEOUT_SECS", 20);
        let ping_after_idle = Duration::from_millis(env.parse_where(
            "DATABASE_PING_AFTER_IDLE_MS",
            500,
            |ms: &u64| *ms <= 3_600_000,
            "a whole number of milliseconds from 0 to 3600000",
        ));
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
        if !pool_size_given && backend == Some(Backend::Postgres) {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            max_connections = default_pool(&url, pool_mode, cores);
        }

        DatabaseConfig {
            url: Secret::new(url),
            direct_url: direct_url.map(Secret::new),
            max_connections,
            connect_timeout,
            idle_timeout,
            ping_after_idle,
            pool_mode,
            run_migrations,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::collections::HashMap;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_pool_is_sized_for_a_server_on_this_machine() {
        let direct = PoolMode::Direct;
        // On this machine: twice the cores, from 2 to the remote default.
        for url in [
            "postgres://u@localhost/db",
            "postgres://u@LOCALHOST:5433/db",
            "postgres://u@127.0.0.1/db",
            "postgresql://u@127.0.2.1:6000/db",
            "postgres://u@[::1]:5432/db",
            "postgres://u@%2Fvar%2Frun%2Fpostgresql/db",
            "postgres://u@db.example.com/db?host=/var/run/postgresql",
            "postgres://u@db.example.com/db?hostaddr=127.0.0.1",
        ]
        .into_iter()
        // Without a host, sqlx takes PGHOST, else a local socket or localhost.
        .chain(
            std::env::var_os("PGHOST")
                .is_none()
                .then_some("postgres:///db"),
        ) {
            assert_eq!(default_pool(url, direct, 2), 4, "{url}");
            assert_eq!(default_pool(url, direct, 1), 2, "{url}");
            assert_eq!(default_pool(url, direct, 64), REMOTE_POOL, "{url}");
        }
        // Elsewhere, or behind a transaction-mode pooler (PostgreSQL may be elsewhere).
        for url in [
            "postgres://u@db.example.com/db",
            "postgres://u@10.0.0.5/db",
            "postgres://u@localhost.example.com/db",
            "postgres://u@localhost/db?host=db.example.com",
            "postgres://u@localhost/db?hostaddr=10.0.0.5",
            "not a url",
        ] {
            assert_eq!(default_pool(url, direct, 2), REMOTE_POOL, "{url}");
        }
        assert_eq!(
            default_pool("postgres://u@127.0.0.1:6432/db", PoolMode::Transaction, 2),
            REMOTE_POOL
        );
        // Through the configuration: the default applies only when the size is not given.
        let pool = |pairs: &[(&str, &str)]| {
            Config::from_vars(vars(pairs))
                .unwrap()
                .database
                .max_connections
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let local = ("DATABASE_URL", "postgres://u@127.0.0.1/db");
        assert_eq!(
            pool(&[local]),
            default_pool(local.1, direct, cores),
            "{cores} cores"
        );
        assert_eq!(pool(&[local, ("DATABASE_MAX_CONNECTIONS", "7")]), 7);
        assert_eq!(
            pool(&[("DATABASE_URL", "postgres://u@db.example.com/db")]),
            REMOTE_POOL
        );
        assert_eq!(pool(&[]), REMOTE_POOL, "SQLite");
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
        assert!(!c.database.run_migrations);
        assert_eq!(c.server.port, 0);
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
    fn direct_endpoint_must_match_the_backend() {
        let err =
            Config::from_vars(vars(&[("DATABASE_URL_DIRECT", "postgres://x/y")])).unwrap_err();
        assert!(err.0[0].starts_with("DATABASE_URL_DIRECT applies to PostgreSQL only"));
    }

    #[test]
    fn the_ping_after_idle_may_be_zero_and_is_at_most_an_hour() {
        let ping = |ms: &str| {
            Config::from_vars(vars(&[("DATABASE_PING_AFTER_IDLE_MS", ms)]))
                .map(|c| c.database.ping_after_idle)
        };
        assert_eq!(ping("0").unwrap(), Duration::ZERO);
        assert_eq!(ping("3600000").unwrap(), Duration::from_secs(3600));
        for bad in ["3600001", "-1", "0.5", "soon"] {
            let err = ping(bad).unwrap_err();
            assert!(
                err.0[0].starts_with("DATABASE_PING_AFTER_IDLE_MS must be"),
                "{bad}: {err:?}"
            );
        }
    }
}
