//! Schema migrations, one reversible step each.
//!
//! Each step is plain SQL per backend (`sql/NNNN_name.{postgres,sqlite}.{up,down}.sql`), so the
//! DDL of Better Auth's and the app's tables on PostgreSQL is byte-for-byte what Better Auth's and Drizzle's generators produce (constraint and index
//! names included) and can be read and reviewed as SQL. Every step runs in a transaction on both
//! backends, so a failed step leaves nothing half-applied.

pub use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

/// The embedded default used when no `DATABASE_URL` is configured: a SQLite file in the working
/// directory, created on first use.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://aiwrapper.db?mode=rwc";

/// The project's migrator, in time order.
#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(SqlMigration {
                name: "m20261126_000001_better_auth",
                postgres: [
                    include_str!("../sql/0001_better_auth.postgres.up.sql"),
                    include_str!("../sql/0001_better_auth.postgres.down.sql"),
                ],
                sqlite: [
                    include_str!("../sql/0001_better_auth.sqlite.up.sql"),
                    include_str!("../sql/0001_better_auth.sqlite.down.sql"),
                ],
            }),
            Box::new(SqlMigration {
                name: "m20261126_000002_ai_app",
                postgres: [
                    include_str!("../sql/0002_ai_app.postgres.up.sql"),
                    include_str!("../sql/0002_ai_app.postgres.down.sql"),
                ],
                sqlite: [
                    include_str!("../sql/0002_ai_app.sqlite.up.sql"),
                    include_str!("../sql/0002_ai_app.sqlite.down.sql"),
                ],
            }),
            Box::new(SqlMigration {
                name: "m20261126_000003_append_only",
                postgres: [
                    include_str!("../sql/0003_append_only.postgres.up.sql"),
                    include_str!("../sql/0003_append_only.postgres.down.sql"),
                ],
                sqlite: [
                    include_str!("../sql/0003_append_only.sqlite.up.sql"),
                    include_str!("../sql/0003_append_only.sqlite.down.sql"),
                ],
            }),
            Box::new(SqlMigration {
                name: "m20261126_000004_metering",
                postgres: [
                    include_str!("../sql/0004_metering.postgres.up.sql"),
                    include_str!("../sql/0004_metering.postgres.down.sql"),
                ],
                sqlite: [
                    include_str!("../sql/0004_metering.sqlite.up.sql"),
                    include_str!("../sql/0004_metering.sqlite.down.sql"),
                ],
            }),
            Box::new(SqlMigration {
                name: "m20261126_000005_history_keyset",
                postgres: [
                    include_str!("../sql/0005_history_keyset.postgres.up.sql"),
                    include_str!("../sql/0005_history_keyset.postgres.down.sql"),
                ],
                sqlite: [
                    include_str!("../sql/0005_history_keyset.sqlite.up.sql"),
                    include_str!("../sql/0005_history_keyset.sqlite.down.sql"),
                ],
            }),
            Box::new(SqlMigration {
                name: "m20261126_000006_usage_daily",
                postgres: [
                    include_str!("../sql/0006_usage_daily.postgres.up.sql"),
                    include_str!("../sql/0006_usage_daily.postgres.down.sql"),
                ],
                sqlite: [
                    include_str!("../sql/0006_usage_daily.sqlite.up.sql"),
                    include_str!("../sql/0006_usage_daily.sqlite.down.sql"),
                ],
            }),
            Box::new(SqlMigration {
                name: "m20261130_000007_usage_rollups",
                postgres: [
                    include_str!("../sql/0007_usage_rollups.postgres.up.sql"),
                    include_str!("../sql/0007_usage_rollups.postgres.down.sql"),
                ],
                sqlite: [
                    include_str!("../sql/0007_usage_rollups.sqlite.up.sql"),
                    include_str!("../sql/0007_usage_rollups.sqlite.down.sql"),
                ],
            }),
            Box::new(SqlMigration {
                name: "m20261130_000008_user_limits",
                postgres: [
                    include_str!("../sql/0008_user_limits.postgres.up.sql"),
                    include_str!("../sql/0008_user_limits.postgres.down.sql"),
                ],
                sqlite: [
                    include_str!("../sql/0008_user_limits.sqlite.up.sql"),
                    include_str!("../sql/0008_user_limits.sqlite.down.sql"),
                ],
            }),
            Box::new(SqlMigration {
                name: "m20261130_000009_runtime_role",
                postgres: [
                    include_str!("../sql/0009_runtime_role.postgres.up.sql"),
                    include_str!("../sql/0009_runtime_role.postgres.down.sql"),
                ],
                sqlite: [
                    include_str!("../sql/0009_runtime_role.sqlite.up.sql"),
                    include_str!("../sql/0009_runtime_role.sqlite.down.sql"),
                ],
            }),
            Box::new(SqlMigration {
                name: "m20261130_000010_call_checkpoints",
                postgres: [
                    include_str!("../sql/0010_call_checkpoints.postgres.up.sql"),
                    include_str!("../sql/0010_call_checkpoints.postgres.down.sql"),
                ],
                sqlite: [
                    include_str!("../sql/0010_call_checkpoints.sqlite.up.sql"),
                    include_str!("../sql/0010_call_checkpoints.sqlite.down.sql"),
                ],
            }),
            Box::new(SqlMigration {
                name: "m20261130_000011_conversations",
                postgres: [
                    include_str!("../sql/0011_conversations.postgres.up.sql"),
                    include_str!("../sql/0011_conversations.postgres.down.sql"),
                ],
                sqlite: [
                    include_str!("../sql/0011_conversations.sqlite.up.sql"),
                    include_str!("../sql/0011_conversations.sqlite.down.sql"),
                ],
            }),
            Box::new(SqlMigration {
                name: "m20261201_000012_rollups_per_statement",
                postgres: [
                    include_str!("../sql/0012_rollups_per_statement.postgres.up.sql"),
                    include_str!("../sql/0012_rollups_per_statement.postgres.down.sql"),
                ],
                sqlite: [
                    include_str!("../sql/0012_rollups_per_statement.sqlite.up.sql"),
                    include_str!("../sql/0012_rollups_per_statement.sqlite.down.sql"),
                ],
            }),
        ]
    }
}

/// A migration written as SQL for each backend: `[up, down]`.
struct SqlMigration {
    name: &'static str,
    postgres: [&'static str; 2],
    sqlite: [&'static str; 2],
}

impl SqlMigration {
    fn sql(&self, backend: DatabaseBackend, up: bool) -> Result<&'static str, DbErr> {
        let [up_sql, down_sql] = match backend {
            DatabaseBackend::Postgres => self.postgres,
            DatabaseBackend::Sqlite => self.sqlite,
            other => {
                return Err(DbErr::Migration(format!(
                    "{}: unsupported database backend {other:?} (PostgreSQL and SQLite are supported)",
                    self.name
                )));
            }
        };
        Ok(if up { up_sql } else { down_sql })
    }
}

impl MigrationName for SqlMigration {
    fn name(&self) -> &str {
        self.name
    }
}

#[async_trait::async_trait]
impl MigrationTrait for SqlMigration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let sql = self.sql(manager.get_database_backend(), true)?;
        manager.get_connection().execute_unprepared(sql).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let sql = self.sql(manager.get_database_backend(), false)?;
        manager.get_connection().execute_unprepared(sql).await?;
        Ok(())
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_in_order() {
        let names: Vec<String> = Migrator::migrations()
            .iter()
            .map(|m| m.name().to_owned())
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(names, sorted);
    }

    #[test]
    fn sql_is_picked_per_backend() {
        let step = SqlMigration {
            name: "x",
            postgres: ["a", "b"],
            sqlite: ["c", "d"],
        };
        assert_eq!(step.sql(DatabaseBackend::Postgres, true).unwrap(), "a");
        assert_eq!(step.sql(DatabaseBackend::Sqlite, false).unwrap(), "d");
        assert!(step.sql(DatabaseBackend::MySql, true).is_err());
    }
}
