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
