//! Graceful shutdown: calls finish within the grace period, the rest are finalised.

use entity::prelude::*;
use entity::prompt_logs::{self, CallStatus};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::json;
use tests::spawn_app_with_env;
use tests::ws::GqlWs;

use super::STREAM;

#[tokio::test]
async fn shutdown_lets_calls_finish_within_the_grace_period_then_finalises_the_rest() {
    let app = spawn_app_with_env(&[("SHUTDOWN_GRACE_SECS", "1")]).await;
    let user = app.sign_up("ada@example.com").await;
    let mut quick = GqlWs::connect(&app, Some(&user.token)).await;
    quick
        .subscribe(
            "q",
            STREAM,
            json!({ "i": { "prompt": "quick @@tokens=20 @@pace_ms=10" } }),
        )
        .await;
    let mut slow = GqlWs::connect(&app, Some(&user.token)).await;
    slow.subscribe(
        "s",
        STREAM,
        json!({ "i": { "prompt": "slow @@tokens=1000 @@pace_ms=10", "maxTokens": 1000 } }),
    )
    .await;
    // Both are running once each has relayed a token.
    for ws in [&mut quick, &mut slow] {
        let first = ws.next().await.unwrap();
        assert!(
            first["payload"]["data"]["completionStream"]["delta"].is_string(),
            "{first}"
        );
    }
    let calls = app.app_calls();
    let database = app.database.clone();
    let user_id = user.id.clone();
    app.shutdown().await; // returns once nothing is in flight
    let db = sea_orm::Database::connect(database.direct_url())
        .await
        .unwrap();
    assert_eq!(calls.running(), 0);
    let logs = PromptLogs::find()
        .filter(prompt_logs::Column::UserId.eq(user_id.as_str()))
        .all(&db)
        .await
        .unwrap();
    let quick_log = logs.iter().find(|l| l.prompt.starts_with("quick")).unwrap();
    let slow_log = logs.iter().find(|l| l.prompt.starts_with("slow")).unwrap();
    assert_eq!(
        quick_log.status,
        CallStatus::Ok,
        "finished within the grace period"
    );
    assert_eq!(slow_log.status, CallStatus::Error);
    assert!(
        slow_log.metadata.as_ref().unwrap()["error"]
            .as_str()
            .unwrap()
            .contains("shutting down")
    );
    assert!(logs.iter().all(|l| !l.in_flight()));
    assert_eq!(TokenUsage::find().count(&db).await.unwrap(), 2);
}
