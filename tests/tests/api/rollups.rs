//! The usage rollups are the database's: rows another writer inserts into `token_usage` (an app
//! sharing the database, as the Next.js side of the stack does) count for `tokensUsedThisMonth`,
//! `usage` and budget admission alike.

use serde_json::json;
use tests::{error_code, spawn_app};

const ME: &str = "{ me { profile { tokensUsedThisMonth } } }";
const USAGE: &str = "{ usage { calls promptTokens completionTokens costMicrocents } }";
const COMPLETE: &str =
    "mutation($i: CompletionInput!) { complete(input: $i) { id status promptTokens } }";

#[tokio::test]
async fn usage_rows_written_by_another_writer_count_everywhere() {
    let app = spawn_app().await;
    let user = app.sign_up("ada@example.com").await;
    // Another writer's rows, with the table's own defaults for id and created_at (now).
    for (prompt, completion, cost) in [(100, 40, 4_000), (20, 5, 600)] {
        app.exec(&format!(
            "INSERT INTO token_usage (user_id, model, prompt_tokens, completion_tokens, cost_microcents) \
             VALUES ('{}', 'gpt-4o-mini', {prompt}, {completion}, {cost})",
            user.id
        ))
        .await
        .unwrap();
    }
    let me = app.gql(Some(&user.token), ME, json!({})).await;
    assert_eq!(
        me["data"]["me"]["profile"]["tokensUsedThisMonth"], "165",
        "{me}"
    );
    let usage = app.gql(Some(&user.token), USAGE, json!({})).await;
    assert_eq!(
        usage["data"]["usage"],
        json!({ "calls": 2, "promptTokens": "120", "completionTokens": "45", "costMicrocents": "4600" }),
        "{usage}"
    );

    // A budget of 165 is used up by those rows alone; one token more admits a call.
    crate::completions::set_budget(&app, &user.email, 165).await;
    let refused = app
        .gql(
            Some(&user.token),
            COMPLETE,
            json!({ "i": { "prompt": "hi", "maxTokens": 5 } }),
        )
        .await;
    assert_eq!(error_code(&refused), Some("BUDGET_EXCEEDED"), "{refused}");
    assert_eq!(
        app.upstream
            .stats
            .requests
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    crate::completions::set_budget(&app, &user.email, 166).await;
    let admitted = app
        .gql(
            Some(&user.token),
            COMPLETE,
            json!({ "i": { "prompt": "hi", "maxTokens": 5 } }),
        )
        .await;
    assert_eq!(admitted["data"]["complete"]["status"], "OK", "{admitted}");
    let prompt_tokens = admitted["data"]["complete"]["promptTokens"]
        .as_i64()
        .unwrap();
    let me = app.gql(Some(&user.token), ME, json!({})).await;
    let used: i64 = me["data"]["me"]["profile"]["tokensUsedThisMonth"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        used > 165 + prompt_tokens,
        "the server's own call counts on top: {me}"
    );
    app.shutdown().await;
}

/// A writer that inserts many usage rows in one statement (an import, a backfill) gets them
/// rolled up exactly: per user, day and model, and per user and month, whatever the rows' order.
/// On PostgreSQL the rollup runs once per statement (migration 0012): a per-row trigger made
/// such a statement quadratic in its rows per user.
#[tokio::test]
async fn a_bulk_insert_of_usage_is_rolled_up_exactly() {
    use chrono::{TimeZone, Utc};
    use entity::{token_usage, usage_daily, usage_monthly};
    use sea_orm::{EntityTrait, Set};

    let app = spawn_app().await;
    let ada = app.sign_up("ada@example.com").await;
    let bob = app.sign_up("bob@example.com").await;
    let late = Utc.with_ymd_and_hms(2026, 11, 30, 23, 59, 59).unwrap();
    let early = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 1).unwrap();
    let row = |user: &str, model: &str, at, p: i32| token_usage::ActiveModel {
        id: Set(uuid::Uuid::now_v7()),
        user_id: Set(user.to_owned()),
        model: Set(model.to_owned()),
        prompt_tokens: Set(p),
        completion_tokens: Set(1),
        cost_microcents: Set(10),
        created_at: Set(at),
    };
    // 2,000 rows of Ada's across two models and two months, interleaved with 3 of Bob's.
    let mut rows: Vec<_> = (0..2000)
        .map(|i| {
            let model = if i % 2 == 0 { "gpt-4o-mini" } else { "gpt-4o" };
            row(&ada.id, model, if i % 4 < 2 { late } else { early }, 2)
        })
        .collect();
    rows.insert(7, row(&bob.id, "gpt-4o", late, 5));
    rows.insert(700, row(&bob.id, "gpt-4o", late, 5));
    rows.push(row(&bob.id, "gpt-4o-mini", early, 5));
    token_usage::Entity::insert_many(rows)
        .exec(&app.db)
        .await
        .unwrap();

    // A fresh database: every rollup row is Ada's or Bob's.
    let who = |user_id: &str| if user_id == ada.id { "ada" } else { "bob" };
    let mut daily: Vec<_> = usage_daily::Entity::find()
        .all(&app.db)
        .await
        .unwrap()
        .into_iter()
        .map(|d| {
            (
                who(&d.user_id),
                d.day,
                d.model,
                d.calls,
                d.prompt_tokens,
                d.completion_tokens,
                d.cost_microcents,
            )
        })
        .collect();
    daily.sort();
    // (In sorted order, as `daily` is.)
    let expected = [
        ("ada", "2026-11-30", "gpt-4o", 500, 1000, 500, 5000),
        ("ada", "2026-11-30", "gpt-4o-mini", 500, 1000, 500, 5000),
        ("ada", "2026-12-01", "gpt-4o", 500, 1000, 500, 5000),
        ("ada", "2026-12-01", "gpt-4o-mini", 500, 1000, 500, 5000),
        ("bob", "2026-11-30", "gpt-4o", 2, 10, 2, 20),
        ("bob", "2026-12-01", "gpt-4o-mini", 1, 5, 1, 10),
    ]
    .map(|(who, day, model, calls, prompt, completion, cost)| {
        (
            who,
            day.to_owned(),
            model.to_owned(),
            calls,
            prompt,
            completion,
            cost,
        )
    });
    assert_eq!(daily, expected);

    let mut monthly: Vec<_> = usage_monthly::Entity::find()
        .all(&app.db)
        .await
        .unwrap()
        .into_iter()
        .map(|m| {
            (
                who(&m.user_id),
                m.month,
                m.calls,
                m.prompt_tokens,
                m.completion_tokens,
                m.cost_microcents,
            )
        })
        .collect();
    monthly.sort();
    assert_eq!(
        monthly,
        [
            ("ada", "2026-11".to_owned(), 1000, 2000, 1000, 10000),
            ("ada", "2026-12".to_owned(), 1000, 2000, 1000, 10000),
            ("bob", "2026-11".to_owned(), 2, 10, 2, 20),
            ("bob", "2026-12".to_owned(), 1, 5, 1, 10),
        ]
    );
    app.shutdown().await;
}
