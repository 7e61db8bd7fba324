use serde_json::Value;
use tests::{spawn_app, spawn_app_with_env};

#[tokio::test]
async fn healthz_answers() {
    let app = spawn_app().await;
    let res = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    app.shutdown().await;
}

#[tokio::test]
async fn readyz_is_ready_once_migrations_ran_at_start() {
    let app = spawn_app().await;
    let res = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    app.shutdown().await;
}

#[tokio::test]
async fn readyz_reports_pending_migrations_until_they_are_applied() {
    let app = spawn_app_with_env(&[("RUN_MIGRATIONS", "false")]).await;
    let res = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), 503);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["reason"], "migrations pending");
    let pending: Vec<&str> = body["pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        pending,
        [
            "m20261126_000001_better_auth",
            "m20261126_000002_ai_app",
            "m20261126_000003_append_only",
            "m20261126_000004_metering",
            "m20261126_000005_history_keyset",
            "m20261126_000006_usage_daily",
            "m20261130_000007_usage_rollups",
            "m20261130_000008_user_limits",
            "m20261130_000009_runtime_role",
            "m20261130_000010_call_checkpoints",
            "m20261130_000011_conversations",
            "m20261201_000012_rollups_per_statement"
        ]
    );

    // Applying them out of band (as `cargo run -p migration -- up` would) makes the server ready.
    use migration::MigratorTrait;
    let direct = app.direct().await;
    migration::Migrator::up(&direct, None).await.unwrap();
    direct.close().await.unwrap();
    let res = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    app.shutdown().await;
}

#[tokio::test]
async fn readyz_reports_an_unreachable_database() {
    let app = spawn_app().await;
    // The test's handle shares the server's pool: closing it cuts the server off.
    app.db.close().await;
    let res = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), 503);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["reason"], "database unreachable");
    // Liveness does not depend on the database.
    let res = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    app.shutdown().await;
}
