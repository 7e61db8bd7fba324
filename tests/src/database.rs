//! Which database the suite runs on, and a fresh, empty database for each test.

use std::sync::OnceLock;

use sea_orm::{ConnectionTrait, Database};

use crate::{pg_cluster, pgbouncer};

/// The database the suite runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestBackend {
    Sqlite,
    Postgres,
}

/// The backend chosen by `TEST_BACKEND`.
pub fn backend() -> TestBackend {
    static BACKEND: OnceLock<TestBackend> = OnceLock::new();
    *BACKEND.get_or_init(|| match std::env::var("TEST_BACKEND").as_deref() {
        Err(_) | Ok("") | Ok("sqlite") => TestBackend::Sqlite,
        Ok("postgres") | Ok("postgresql") => TestBackend::Postgres,
        Ok(other) => panic!("TEST_BACKEND must be sqlite or postgres, not {other:?}"),
    })
}

/// A fresh, empty database for one test (clones share it: several servers on one database).
#[derive(Clone)]
pub struct TestDatabase {
    /// The URL the server under test is given as `DATABASE_URL` (PgBouncer's, if one runs).
    /// On PostgreSQL it logs in as [`RUNTIME_LOGIN`], a member of the `aiwrapper_runtime`
    /// role that migration 0009 grants DML rights, as a deployment's request pool would.
    pub url: String,
    /// On PostgreSQL, the database on the server itself as the role that owns the schema (the
    /// suite's admin role): `DATABASE_URL_DIRECT`, for migrations and `admin`.
    pub direct: Option<String>,
    /// Whether `url` goes through PgBouncer in transaction mode.
    pub pooled: bool,
    /// The PostgreSQL database name (`t_<uuid>`); empty on SQLite.
    pub name: String,
    /// Keeps a SQLite database's directory alive for the test's lifetime.
    _dir: Option<std::sync::Arc<tempfile::TempDir>>,
}

impl TestDatabase {
    /// Create an empty database on the chosen backend.
    pub async fn create() -> TestDatabase {
        match backend() {
            TestBackend::Sqlite => {
                let dir = tempfile::Builder::new()
                    .prefix("aiwrapper-test-")
                    .tempdir()
                    .expect("create a temporary directory");
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display());
                TestDatabase {
                    url,
                    direct: None,
                    pooled: false,
                    name: String::new(),
                    _dir: Some(std::sync::Arc::new(dir)),
                }
            }
            TestBackend::Postgres => TestDatabase::create_postgres().await,
        }
    }
}

impl TestDatabase {
    /// An empty PostgreSQL database on the suite's server (behind PgBouncer when
    /// `TEST_PGBOUNCER` asks for one), whatever `TEST_BACKEND` says (the benchmark uses it).
    pub async fn create_postgres() -> TestDatabase {
        let admin_url = postgres_admin_url();
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let admin = Database::connect(admin_url.as_str())
            .await
            .unwrap_or_else(|e| panic!("connect to the test PostgreSQL server: {e}"));
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await
            .expect("create the test database");
        // The request role (cluster-wide, so made once; racing test processes are fine).
        admin
            .execute_unprepared(&format!(
                "DO $$ BEGIN
                   BEGIN CREATE ROLE aiwrapper_runtime NOLOGIN;
                   EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END;
                   BEGIN CREATE ROLE {RUNTIME_LOGIN} LOGIN PASSWORD '{RUNTIME_LOGIN}' IN ROLE aiwrapper_runtime;
                   EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END;
                 END $$"
            ))
            .await
            .expect("create the request role");
        admin.close().await.ok();
        let direct = replace_database(&admin_url, &name);
        let (server, pooled) = match pgbouncer::url() {
            Some(pooled) => (pooled, true),
            None => (admin_url, false),
        };
        let mut url = url::Url::parse(&replace_database(&server, &name)).expect("a URL");
        url.set_username(RUNTIME_LOGIN).expect("a user name");
        url.set_password(Some(RUNTIME_LOGIN)).expect("a password");
        TestDatabase {
            url: url.to_string(),
            direct: Some(direct),
            pooled,
            name,
            _dir: None,
        }
    }

    /// The database's URL that bypasses any pooler (migrations, DDL, session-level checks).
    pub fn direct_url(&self) -> &str {
        self.direct.as_deref().unwrap_or(&self.url)
    }
}

/// The login role servers under test use for requests on PostgreSQL: a member of
/// `aiwrapper_runtime`, owning nothing.
pub const RUNTIME_LOGIN: &str = "aiwrapper_test_app";

/// The admin URL of the PostgreSQL server the suite uses.
pub fn postgres_admin_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| match std::env::var("TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => pg_cluster::start().admin_url.clone(),
    })
    .clone()
}

/// `postgres://u@h:p/old?x` with the database replaced by `name`.
fn replace_database(url: &str, name: &str) -> String {
    let mut parsed = url::Url::parse(url).expect("TEST_DATABASE_URL is a URL");
    parsed.set_path(&format!("/{name}"));
    parsed.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_is_replaced() {
        assert_eq!(
            replace_database(
                "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable",
                "t_1"
            ),
            "postgres://postgres@127.0.0.1:5432/t_1?sslmode=disable"
        );
    }
}
