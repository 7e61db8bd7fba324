//! The books of the metered call pipeline: one log and one linked usage row per upstream call,
//! nothing in flight, no reservation left, and the rollups equal to the sums of the usage rows.
//! Any test that makes calls can check them.

use std::sync::atomic::Ordering;

use entity::prelude::*;
use entity::{
    call_reservations, prompt_log_usage, prompt_logs, token_usage, usage_daily, usage_monthly,
};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::json;

use crate::{TestApp, TestUser};

/// Exactly one log and one linked usage row per upstream call (and that many requests at this
/// app's upstream), none in flight, no reservation left, and the daily and monthly rollups equal
/// to the sums of the usage rows.
pub async fn assert_books_balance(app: &TestApp, user_id: &str, upstream_calls: u64) {
    assert_rows_balance(app, user_id, upstream_calls).await;
    assert_eq!(
        app.upstream.stats.requests.load(Ordering::SeqCst),
        upstream_calls
    );
}

/// The rows of [`assert_books_balance`], for calls served by several servers (each with its own
/// upstream).
pub async fn assert_rows_balance(app: &TestApp, user_id: &str, upstream_calls: u64) {
    let logs = PromptLogs::find()
        .filter(prompt_logs::Column::UserId.eq(user_id))
        .all(&app.db)
        .await
        .unwrap();
    let usage = TokenUsage::find()
        .filter(token_usage::Column::UserId.eq(user_id))
        .all(&app.db)
        .await
        .unwrap();
    assert_eq!(
        logs.len() as u64,
        upstream_calls,
        "one log per upstream call"
    );
    assert_eq!(
        usage.len() as u64,
        upstream_calls,
        "one usage row per upstream call"
    );
    assert_eq!(
        PromptLogUsage::find().count(&app.db).await.unwrap(),
        upstream_calls,
        "each usage row linked to its log"
    );
    assert!(
        logs.iter().all(|l| !l.in_flight()),
        "nothing left in flight"
    );
    assert_eq!(
        call_reservations::Entity::find()
            .count(&app.db)
            .await
            .unwrap(),
        0,
        "no reservation left"
    );
    for log in &logs {
        let link = prompt_log_usage::Entity::find_by_id(log.id)
            .one(&app.db)
            .await
            .unwrap()
            .expect("linked");
        let u = usage
            .iter()
            .find(|u| u.id == link.usage_id)
            .expect("the linked usage row");
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens),
            (log.prompt_tokens, log.completion_tokens)
        );
        assert_eq!(u.model, log.model);
    }
    let month = UsageMonthly::find()
        .filter(usage_monthly::Column::UserId.eq(user_id))
        .all(&app.db)
        .await
        .unwrap();
    let rolled: (i64, i64, i64, i64) = month.iter().fold((0, 0, 0, 0), |a, m| {
        (
            a.0 + m.calls,
            a.1 + m.prompt_tokens,
            a.2 + m.completion_tokens,
            a.3 + m.cost_microcents,
        )
    });
    let summed = usage.iter().fold((0, 0, 0, 0), |a, u| {
        (
            a.0 + 1,
            a.1 + i64::from(u.prompt_tokens),
            a.2 + i64::from(u.completion_tokens),
            a.3 + u.cost_microcents,
        )
    });
    assert_eq!(rolled, summed, "the monthly rollup matches the usage rows");
    let daily = UsageDaily::find()
        .filter(usage_daily::Column::UserId.eq(user_id))
        .all(&app.db)
        .await
        .unwrap()
        .iter()
        .fold((0, 0, 0, 0), |a, d| {
            (
                a.0 + d.calls,
                a.1 + d.prompt_tokens,
                a.2 + d.completion_tokens,
                a.3 + d.cost_microcents,
            )
        });
    assert_eq!(daily, summed, "the daily rollup matches the usage rows");
}

/// [`assert_books_balance`], and the user's `tokensUsedThisMonth` equal to the tokens of the
/// usage rows.
pub async fn assert_book_entry(app: &TestApp, user: &TestUser, calls: u64) {
    assert_books_balance(app, &user.id, calls).await;
    let me = app
        .gql(
            Some(&user.token),
            "{ me { profile { tokensUsedThisMonth } } }",
            json!({}),
        )
        .await;
    let used: i64 = TokenUsage::find()
        .all(&app.db)
        .await
        .unwrap()
        .iter()
        .map(|u| i64::from(u.prompt_tokens + u.completion_tokens))
        .sum();
    assert_eq!(
        me["data"]["me"]["profile"]["tokensUsedThisMonth"],
        used.to_string()
    );
}
