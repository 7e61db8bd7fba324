//! The migrated schema, read back from the database's own catalog and compared with the
//! reviewed description in `tests/expected/schema.<backend>.txt` (what a psql inspection shows:
//! every column, type, default, constraint, FK action, index and trigger). Set `UPDATE_EXPECT=1`
//! to rewrite the file after an intended change, then review the diff.
//! Constraint behaviour the catalog cannot show on SQLite is proven by the tests below.

use api::db::Db;
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use tests::{TestBackend, spawn_app};

use crate::fixtures;

/// One line per catalog row, every value cast to text by the query itself.
async fn rows(db: &Db, title: &str, sql: &str, columns: usize) -> String {
    let backend = db.get_database_backend();
    let result = db
        .query_all_raw(Statement::from_string(backend, sql.to_owned()))
        .await
        .unwrap_or_else(|e| panic!("{title}: {e}"));
    let mut out = format!("## {title}\n");
    for row in result {
        let values: Vec<String> = (0..columns)
            .map(|i| {
                row.try_get_by_index::<Option<String>>(i)
                    .unwrap()
                    .unwrap_or_else(|| "NULL".into())
            })
            .collect();
        out.push_str(&values.join(" | "));
        out.push('\n');
    }
    out
}

/// The schema as the database reports it.
pub async fn describe(db: &Db) -> String {
    match db.get_database_backend() {
        DbBackend::Postgres => {
            let mut s = rows(db, "columns: table | column | type | nullable | default", "
                SELECT table_name::text, column_name::text, data_type::text, is_nullable::text, column_default::text
                FROM information_schema.columns
                WHERE table_schema = 'public' AND table_name <> 'seaql_migrations'
                ORDER BY table_name, ordinal_position", 5).await;
            s += &rows(db, "constraints: table | name | definition", "
                SELECT conrelid::regclass::text, conname::text, pg_get_constraintdef(oid)
                FROM pg_constraint
                WHERE connamespace = 'public'::regnamespace AND conrelid::regclass::text <> 'seaql_migrations'
                ORDER BY 1, 2", 3).await;
            s += &rows(
                db,
                "indexes: table | name | definition",
                "
                SELECT tablename::text, indexname::text, indexdef
                FROM pg_indexes
                WHERE schemaname = 'public' AND tablename <> 'seaql_migrations'
                ORDER BY 1, 2",
                3,
            )
            .await;
            s += &rows(
                db,
                "triggers: table | name | definition",
                "
                SELECT tgrelid::regclass::text, tgname::text, pg_get_triggerdef(oid)
                FROM pg_trigger
                WHERE NOT tgisinternal
                ORDER BY 1, 2",
                3,
            )
            .await;
            s += &rows(
                db,
                "request role (aiwrapper_runtime) rights: table[.column] | privilege",
                "
                SELECT c.relname::text, a.privilege_type::text
                FROM pg_class c, aclexplode(c.relacl) a
                WHERE c.relnamespace = 'public'::regnamespace
                  AND a.grantee = 'aiwrapper_runtime'::regrole
                UNION ALL
                SELECT c.relname::text || '.' || att.attname::text, a.privilege_type::text
                FROM pg_class c JOIN pg_attribute att ON att.attrelid = c.oid, aclexplode(att.attacl) a
                WHERE c.relnamespace = 'public'::regnamespace
                  AND a.grantee = 'aiwrapper_runtime'::regrole
                ORDER BY 1, 2",
                2,
            )
            .await;
            s += &rows(
                db,
                "functions: name | security definer | settings",
                "
                SELECT proname::text, prosecdef::text, array_to_string(proconfig, ', ')
                FROM pg_proc
                WHERE pronamespace = 'public'::regnamespace
                ORDER BY 1",
                3,
            )
            .await;
            s
        }
        _ => {
            let tables =
                "m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name <> 'seaql_migrations'";
            let mut s = rows(db, "columns: table | column | type | notnull | default | pk", &format!("
                SELECT m.name, p.name, p.type, CAST(p.\"notnull\" AS TEXT), p.dflt_value, CAST(p.pk AS TEXT)
                FROM sqlite_schema m JOIN pragma_table_info(m.name) p
                WHERE {tables} ORDER BY m.name, p.cid"), 6).await;
            s += &rows(
                db,
                "strict tables: table | strict",
                &format!(
                    "
                SELECT m.name, CAST(t.strict AS TEXT)
                FROM sqlite_schema m JOIN pragma_table_list(m.name) t
                WHERE {tables} ORDER BY m.name"
                ),
                2,
            )
            .await;
            s += &rows(
                db,
                "foreign keys: table | from | references | to | on update | on delete",
                &format!(
                    "
                SELECT m.name, f.\"from\", f.\"table\", f.\"to\", f.on_update, f.on_delete
                FROM sqlite_schema m JOIN pragma_foreign_key_list(m.name) f
                WHERE {tables} ORDER BY m.name, f.\"from\""
                ),
                6,
            )
            .await;
            s += &rows(db, "indexes: table | name | unique | origin | position | column", &format!("
                SELECT m.name, il.name, CAST(il.\"unique\" AS TEXT), il.origin, CAST(ii.seqno AS TEXT), ii.name
                FROM sqlite_schema m JOIN pragma_index_list(m.name) il JOIN pragma_index_info(il.name) ii
                WHERE {tables} ORDER BY m.name, il.name, ii.seqno"), 6).await;
            s += &rows(
                db,
                "checks (from each table's DDL): table | has CHECK",
                &format!(
                    "
                SELECT m.name, CAST(instr(m.sql, 'CHECK') > 0 AS TEXT)
                FROM sqlite_schema m WHERE {tables} ORDER BY m.name"
                ),
                2,
            )
            .await;
            s += &rows(db, "triggers: table | name", "
                SELECT tbl_name, name FROM sqlite_schema WHERE type = 'trigger' ORDER BY tbl_name, name", 2).await;
            s
        }
    }
}

fn expected_path() -> std::path::PathBuf {
    let name = match tests::backend() {
        TestBackend::Postgres => "schema.postgres.txt",
        TestBackend::Sqlite => "schema.sqlite.txt",
    };
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("expected")
        .join(name)
}

#[tokio::test]
async fn migrated_schema_matches_the_reviewed_description() {
    let app = spawn_app().await;
    let actual = describe(&app.db).await;
    let path = expected_path();
    if std::env::var("UPDATE_EXPECT").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_EXPECT=1 to create it)",
            path.display()
        )
    });
    assert!(
        actual == expected,
        "the migrated schema differs from {}:\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
    app.shutdown().await;
}

/// Behaviour of the constraints, identical on both backends.
#[tokio::test]
async fn constraints_refuse_bad_rows() {
    let app = spawn_app().await;
    let u = fixtures::user(&app.db, "a@example.com").await;
    fixtures::profile(&app.db, &u.id).await;
    let refused = |sql: &str| {
        let sql = sql.to_owned();
        let app = &app;
        async move { app.exec(&sql).await.is_err() }
    };
    let id = &u.id;
    let log = fixtures::log_in_flight(&app.db, id).await;
    let (uuid_new, uuid_log) = match app.db_backend() {
        DbBackend::Postgres => ("gen_random_uuid()".to_owned(), format!("'{}'", log.id)),
        _ => (
            "randomblob(16)".to_owned(),
            format!("x'{}'", log.id.simple()),
        ),
    };
    // Unique email, one profile per user, unique session token.
    assert!(refused("INSERT INTO \"user\" (id, name, email, created_at, updated_at) VALUES ('x', 'X', 'a@example.com', '2026-01-01 00:00:00', '2026-01-01 00:00:00')").await);
    assert!(
        refused(&format!(
            "INSERT INTO user_profiles (id, user_id) VALUES ({uuid_new}, '{id}')"
        ))
        .await
    );
    // Foreign keys: no rows for a user who does not exist.
    assert!(
        refused(&format!(
            "INSERT INTO token_usage (id, user_id, model) VALUES ({uuid_new}, 'nobody', 'm')"
        ))
        .await
    );
    assert!(refused(&format!("INSERT INTO prompt_logs (id, user_id, model, prompt) VALUES ({uuid_new}, 'nobody', 'm', 'p')")).await);
    // The status CHECK.
    assert!(refused(&format!("INSERT INTO prompt_logs (id, user_id, model, prompt, status) VALUES ({uuid_new}, '{id}', 'm', 'p', 'pending')")).await);
    assert!(
        refused(&format!(
            "UPDATE prompt_logs SET status = 'OK' WHERE id = {uuid_log}"
        ))
        .await
    );
    // metadata must be JSON.
    assert!(
        refused(&format!(
            "UPDATE prompt_logs SET metadata = 'not json' WHERE id = {uuid_log}"
        ))
        .await
    );

    // Defaults, as the app's original schema defines them.
    app.exec(&format!(
        "INSERT INTO token_usage (user_id, model) VALUES ('{id}', 'gpt-4o-mini')"
    ))
    .await
    .unwrap();
    app.exec(&format!(
        "INSERT INTO prompt_logs (user_id, model, prompt) VALUES ('{id}', 'gpt-4o-mini', 'p')"
    ))
    .await
    .unwrap();
    let other = fixtures::user(&app.db, "b@example.com").await;
    app.exec(&format!(
        "INSERT INTO user_profiles (user_id) VALUES ('{}')",
        other.id
    ))
    .await
    .unwrap();
    use entity::prelude::*;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let usage = TokenUsage::find().one(&app.db).await.unwrap().unwrap();
    assert_eq!(
        (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.cost_microcents
        ),
        (0, 0, 0)
    );
    assert_eq!(
        usage.id.get_version_num(),
        4,
        "default ids are version-4 UUIDs"
    );
    assert!((chrono::Utc::now() - usage.created_at).num_seconds().abs() < 60);
    let defaulted = PromptLogs::find()
        .filter(entity::prompt_logs::Column::Prompt.eq("p"))
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(defaulted.status, entity::prompt_logs::CallStatus::Ok);
    assert_eq!(
        (defaulted.prompt_tokens, defaulted.completion_tokens),
        (0, 0)
    );
    assert!(defaulted.completion.is_none() && defaulted.metadata.is_none());
    let profile = UserProfiles::find()
        .filter(entity::user_profiles::Column::UserId.eq(other.id.as_str()))
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(profile.default_model, "gpt-4o-mini");
    assert_eq!(profile.monthly_token_budget, 0);
    assert_eq!(profile.id.get_version_num(), 4);
    app.shutdown().await;
}
