//! The database itself keeps `token_usage`, `prompt_logs` and the link between them
//! (`prompt_log_usage`) append-only, on both backends, even for the role that owns them;
//! deleting a user takes all their rows. On PostgreSQL the role requests run as cannot even try:
//! it has no right to rewrite the meter or change the schema (migration 0009).

use entity::prelude::*;
use entity::{prompt_logs, token_usage};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, PaginatorTrait, QueryFilter, Set,
};
use serde_json::json;
use tests::{TestApp, spawn_app, spawn_app_as_owner};

use crate::completions::COMPLETE;
use crate::fixtures;

fn assert_refused<T: std::fmt::Debug>(result: Result<T, sea_orm::DbErr>, what: &str, needle: &str) {
    match result {
        Ok(v) => panic!("{what} was allowed: {v:?}"),
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.contains(needle),
                "{what}: unexpected error {message}"
            );
        }
    }
}

async fn count_for(app: &TestApp, user_id: &str) -> [u64; 6] {
    let db = &app.db;
    [
        User::find_by_id(user_id.to_owned())
            .count(db)
            .await
            .unwrap(),
        UserProfiles::find()
            .filter(entity::user_profiles::Column::UserId.eq(user_id))
            .count(db)
            .await
            .unwrap(),
        Session::find()
            .filter(entity::session::Column::UserId.eq(user_id))
            .count(db)
            .await
            .unwrap(),
        Account::find()
            .filter(entity::account::Column::UserId.eq(user_id))
            .count(db)
            .await
            .unwrap(),
        TokenUsage::find()
            .filter(token_usage::Column::UserId.eq(user_id))
            .count(db)
            .await
            .unwrap(),
        PromptLogs::find()
            .filter(prompt_logs::Column::UserId.eq(user_id))
            .count(db)
            .await
            .unwrap(),
    ]
}

#[tokio::test]
async fn token_usage_rows_cannot_be_updated() {
    let app = spawn_app_as_owner().await;
    let u = fixtures::user(&app.db, "a@example.com").await;
    let row = fixtures::usage(&app.db, &u.id).await;

    let mut edit = row.clone().into_active_model();
    edit.cost_microcents = Set(0);
    assert_refused(
        edit.update(&app.db).await,
        "updating token_usage",
        "append-only",
    );
    // Also a bulk UPDATE that touches no identifying column.
    assert_refused(
        app.exec("UPDATE token_usage SET prompt_tokens = prompt_tokens")
            .await,
        "bulk UPDATE of token_usage",
        "append-only",
    );
    let stored = TokenUsage::find_by_id(row.id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored, row);
    app.shutdown().await;
}

/// Upserts are updates (or, in SQLite's REPLACE, a delete and an insert): refused too.
#[tokio::test]
async fn token_usage_rows_cannot_be_replaced() {
    let app = spawn_app_as_owner().await;
    let u = fixtures::user(&app.db, "a@example.com").await;
    let row = fixtures::usage(&app.db, &u.id).await;
    let (sql, id) = match app.db_backend() {
        sea_orm::DbBackend::Postgres => (
            "INSERT INTO token_usage (id, user_id, model, cost_microcents) VALUES ('{id}', '{user}', 'm', 0) \
             ON CONFLICT (id) DO UPDATE SET cost_microcents = 0",
            row.id.to_string(),
        ),
        _ => (
            "INSERT OR REPLACE INTO token_usage (id, user_id, model, cost_microcents) VALUES (x'{id}', '{user}', 'm', 0)",
            row.id.simple().to_string(),
        ),
    };
    let sql = sql.replace("{id}", &id).replace("{user}", &u.id);
    assert_refused(
        app.exec(&sql).await,
        "replacing a token_usage row",
        "append-only",
    );
    let stored = TokenUsage::find_by_id(row.id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored, row);
    app.shutdown().await;
}

#[tokio::test]
async fn token_usage_rows_cannot_be_deleted() {
    let app = spawn_app_as_owner().await;
    let u = fixtures::user(&app.db, "a@example.com").await;
    let row = fixtures::usage(&app.db, &u.id).await;

    assert_refused(
        TokenUsage::delete_by_id(row.id).exec(&app.db).await,
        "deleting token_usage",
        "append-only",
    );
    assert_refused(
        app.exec("DELETE FROM token_usage").await,
        "bulk DELETE of token_usage",
        "append-only",
    );
    assert_eq!(TokenUsage::find().count(&app.db).await.unwrap(), 1);
    app.shutdown().await;
}

#[tokio::test]
async fn prompt_log_is_editable_in_flight_and_final_once_completed() {
    let app = spawn_app_as_owner().await;
    let u = fixtures::user(&app.db, "a@example.com").await;
    let log = fixtures::log_in_flight(&app.db, &u.id).await;
    assert!(log.in_flight());

    // In flight: the pipeline may record progress and then finalise.
    let mut progress = log.clone().into_active_model();
    progress.metadata = Set(Some(serde_json::json!({ "ttft_ms": 12 })));
    progress
        .update(&app.db)
        .await
        .expect("in-flight logs accept updates");
    let mut finalise = PromptLogs::find_by_id(log.id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap()
        .into_active_model();
    finalise.completion = Set(Some("Hi!".into()));
    finalise.completion_tokens = Set(2);
    finalise.latency_ms = Set(Some(87));
    finalise.status = Set(prompt_logs::CallStatus::Filtered);
    let done = finalise
        .update(&app.db)
        .await
        .expect("finalising an in-flight log is allowed");
    assert!(!done.in_flight());
    assert_eq!(done.status, prompt_logs::CallStatus::Filtered);

    // Final: nothing may change any more, not even back to NULL.
    let mut rewrite = done.clone().into_active_model();
    rewrite.completion = Set(Some("something else".into()));
    assert_refused(
        rewrite.update(&app.db).await,
        "rewriting a final log",
        "final",
    );
    let mut reopen = done.clone().into_active_model();
    reopen.completion = Set(None);
    assert_refused(
        reopen.update(&app.db).await,
        "reopening a final log",
        "final",
    );
    let stored = PromptLogs::find_by_id(log.id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored, done);
    app.shutdown().await;
}

#[tokio::test]
async fn prompt_log_identity_cannot_change_even_in_flight() {
    let app = spawn_app_as_owner().await;
    let u = fixtures::user(&app.db, "a@example.com").await;
    let other = fixtures::user(&app.db, "b@example.com").await;
    let log = fixtures::log_in_flight(&app.db, &u.id).await;

    let mut steal = log.clone().into_active_model();
    steal.user_id = Set(other.id.clone());
    assert_refused(
        steal.update(&app.db).await,
        "moving a log to another user",
        "cannot change",
    );
    let mut reword = log.clone().into_active_model();
    reword.prompt = Set("a different prompt".into());
    assert_refused(
        reword.update(&app.db).await,
        "rewording the prompt",
        "cannot change",
    );
    let mut remodel = log.clone().into_active_model();
    remodel.model = Set("gpt-4o".into());
    assert_refused(
        remodel.update(&app.db).await,
        "changing the model",
        "cannot change",
    );
    let mut backdate = log.clone().into_active_model();
    backdate.created_at = Set(log.created_at - chrono::Duration::days(1));
    assert_refused(
        backdate.update(&app.db).await,
        "backdating",
        "cannot change",
    );
    app.shutdown().await;
}

#[tokio::test]
async fn prompt_logs_cannot_be_deleted_in_flight_or_final() {
    let app = spawn_app_as_owner().await;
    let u = fixtures::user(&app.db, "a@example.com").await;
    let in_flight = fixtures::log_in_flight(&app.db, &u.id).await;
    let final_log = fixtures::log_in_flight(&app.db, &u.id).await;
    let mut finalise = final_log.clone().into_active_model();
    finalise.completion = Set(Some(String::new()));
    finalise.status = Set(prompt_logs::CallStatus::Error);
    finalise.update(&app.db).await.unwrap();

    assert_refused(
        PromptLogs::delete_by_id(in_flight.id).exec(&app.db).await,
        "deleting an in-flight log",
        "append-only",
    );
    assert_refused(
        PromptLogs::delete_by_id(final_log.id).exec(&app.db).await,
        "deleting a final log",
        "append-only",
    );
    assert_eq!(PromptLogs::find().count(&app.db).await.unwrap(), 2);
    app.shutdown().await;
}

/// PostgreSQL: TRUNCATE (which skips row triggers) is refused too. SQLite has no TRUNCATE; its
/// equivalent is the "truncate optimisation" of an unqualified `DELETE FROM`, which SQLite skips
/// for tables with triggers, so the row triggers refuse it.
#[tokio::test]
async fn tables_cannot_be_truncated() {
    let app = spawn_app_as_owner().await;
    let u = fixtures::user(&app.db, "a@example.com").await;
    fixtures::usage(&app.db, &u.id).await;
    fixtures::log_in_flight(&app.db, &u.id).await;
    let statements: &[&str] = if app.db_backend() == sea_orm::DbBackend::Postgres {
        &[
            "TRUNCATE token_usage CASCADE", // CASCADE: the foreign keys into it would refuse first
            "TRUNCATE prompt_logs CASCADE",
            "TRUNCATE \"user\" CASCADE",
        ]
    } else {
        &["DELETE FROM token_usage", "DELETE FROM prompt_logs"]
    };
    for sql in statements {
        assert_refused(app.exec(sql).await, sql, "append-only");
    }
    assert_eq!(count_for(&app, &u.id).await, [1, 0, 0, 0, 1, 1]);
    app.shutdown().await;
}

#[tokio::test]
async fn deleting_a_user_removes_all_their_rows_and_only_theirs() {
    let app = spawn_app().await;
    let gone = fixtures::user(&app.db, "gone@example.com").await;
    let kept = fixtures::user(&app.db, "kept@example.com").await;
    for u in [&gone, &kept] {
        fixtures::profile(&app.db, &u.id).await;
        fixtures::session(&app.db, &u.id).await;
        fixtures::account(&app.db, &u.id).await;
        fixtures::usage(&app.db, &u.id).await;
        fixtures::usage(&app.db, &u.id).await;
        let log = fixtures::log_in_flight(&app.db, &u.id).await;
        let mut done = log.into_active_model();
        done.completion = Set(Some("ok".into()));
        done.update(&app.db).await.unwrap();
        fixtures::log_in_flight(&app.db, &u.id).await;
    }
    assert_eq!(count_for(&app, &gone.id).await, [1, 1, 1, 1, 2, 2]);

    User::delete_by_id(gone.id.clone())
        .exec(&app.db)
        .await
        .expect("deleting a user cascades");

    assert_eq!(count_for(&app, &gone.id).await, [0; 6]);
    assert_eq!(count_for(&app, &kept.id).await, [1, 1, 1, 1, 2, 2]);
    app.shutdown().await;
}

#[tokio::test]
async fn the_link_between_a_call_and_its_usage_is_append_only_and_goes_with_the_user() {
    let app = spawn_app_as_owner().await;
    let user = app.sign_up("ada@example.com").await;
    let other = app.sign_up("bob@example.com").await;
    for u in [&user, &other] {
        let body = app
            .gql(
                Some(&u.token),
                COMPLETE,
                json!({ "i": { "prompt": "hi @@tokens=2" } }),
            )
            .await;
        assert_eq!(body["data"]["complete"]["status"], "OK", "{body}");
    }
    for sql in [
        "DELETE FROM prompt_log_usage",
        "UPDATE prompt_log_usage SET usage_id = usage_id",
    ] {
        let err = app.exec(sql).await.expect_err(sql).to_string();
        assert!(err.contains("append-only"), "{sql}: {err}");
    }
    assert_eq!(PromptLogUsage::find().count(&app.db).await.unwrap(), 2);
    // Deleting a user takes every row of theirs, the meter's included, and only theirs.
    User::delete_by_id(user.id.clone())
        .exec(&app.db)
        .await
        .unwrap();
    assert_eq!(PromptLogUsage::find().count(&app.db).await.unwrap(), 1);
    assert_eq!(UsageMonthly::find().count(&app.db).await.unwrap(), 1);
    assert_eq!(PromptLogs::find().count(&app.db).await.unwrap(), 1);
    assert_eq!(TokenUsage::find().count(&app.db).await.unwrap(), 1);
    app.shutdown().await;
}

/// The role requests run as (`DATABASE_URL`) has rights to rows, not to the schema: it cannot
/// rewrite the meter, switch the append-only triggers off, change the schema or raise a
/// budget, while the server works normally through it (this whole suite runs as it).
#[tokio::test]
async fn the_request_role_cannot_rewrite_the_meter_or_the_schema() {
    if tests::backend() != tests::TestBackend::Postgres {
        eprintln!("PostgreSQL only (SQLite has no roles)");
        return;
    }
    let app = spawn_app().await;
    let user = app.sign_up("ada@example.com").await;
    let body = app
        .gql(
            Some(&user.token),
            COMPLETE,
            json!({ "i": { "prompt": "hi" } }),
        )
        .await;
    assert_eq!(body["data"]["complete"]["status"], "OK", "{body}");
    for sql in [
        "UPDATE token_usage SET prompt_tokens = 0",
        "DELETE FROM token_usage",
        "ALTER TABLE token_usage DISABLE TRIGGER token_usage_append_only",
        "ALTER TABLE prompt_logs DISABLE TRIGGER ALL",
        "TRUNCATE prompt_logs CASCADE",
        "DROP TABLE user_limits",
        "CREATE TABLE mine (id int)",
        "UPDATE prompt_logs SET prompt = 'rewritten'",
        "UPDATE user_profiles SET monthly_token_budget = 0",
        "UPDATE usage_monthly SET prompt_tokens = 0, completion_tokens = 0",
        "INSERT INTO usage_monthly (user_id, month, prompt_tokens) VALUES ('x', '2099-01', -1000000)",
        "DELETE FROM usage_daily",
        "INSERT INTO user_limits (user_id, max_concurrent_calls) VALUES ('x', 1000)",
        "ALTER FUNCTION usage_rollups_add() SECURITY INVOKER",
        "CREATE FUNCTION mine() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    ] {
        let err = app.exec(sql).await.expect_err(sql).to_string();
        assert!(
            err.contains("permission denied") || err.contains("must be owner"),
            "{sql}: {err}"
        );
    }
    // Usage it inserts itself cannot lower the meter: the rollup refuses negative figures.
    let err = app
        .exec(&format!(
            "INSERT INTO token_usage (user_id, model, prompt_tokens, completion_tokens, cost_microcents) \
             VALUES ('{}', 'gpt-4o-mini', -1000000, 0, 0)",
            user.id
        ))
        .await
        .expect_err("negative usage")
        .to_string();
    assert!(err.contains("cannot be negative"), "{err}");
    // The same role still reads and meters: the books balance through it.
    tests::assert_books_balance(&app, &user.id, 1).await;
    app.shutdown().await;
}
