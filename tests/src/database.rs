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
    pub url: String,
    /// The server's own URL when `url` goes through PgBouncer.
    pub direct: Option<String>,
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
        admin.close().await.ok();
        let direct = replace_database(&admin_url, &name);
        match pgbouncer::url() {
            Some(pooled) => TestDatabase {
                url: replace_database(&pooled, &name),
                direct: Some(direct),
                name,
                _dir: None,
            },
            None => TestDatabase {
                url: direct,
                direct: None,
                name,
                _dir: None,
            },
        }
    }

    /// The database's URL that bypasses any pooler (migrations, DDL, session-level checks).
    pub fn direct_url(&self) -> &str {
        self.direct.as_deref().unwrap_or(&self.url)
    }
}

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
