//! Calls that succeed: streamed and `complete`, the finish reasons (content filter, unknown
//! ones), counting tokens locally when the upstream sends no usage, reasoning models' parameters,
//! and the models list.

use entity::prompt_logs::CallStatus;
use serde_json::json;
use tests::{
    assert_book_entry, assert_books_balance, error_code, spawn_app, spawn_app_with,
    spawn_app_with_env,
};

use super::{COMPLETE, mini_cost, only_log, prompt_tokens, stream};

#[tokio::test]
async fn a_streamed_completion_is_relayed_logged_and_metered() {
    let app = spawn_app().await;
    let user = app.sign_up("ada@example.com").await;
    let prompt = "Tell me a story @@tokens=12";
    let (deltas, payloads, error) =
        stream(&app, &user, json!({ "prompt": prompt, "maxTokens": 50 })).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(deltas, upstream::answer(prompt, 12));
    assert_eq!(payloads.len(), 13, "12 deltas and the final event");
    let log_id = payloads[0]["data"]["completionStream"]["logId"].clone();
    assert!(
        payloads
            .iter()
            .all(|p| p["data"]["completionStream"]["logId"] == log_id),
        "every event carries the log id"
    );
    let last = &payloads[12]["data"]["completionStream"];
    assert_eq!(last["done"], true);
    assert!(
        payloads[..12]
            .iter()
            .all(|p| p["data"]["completionStream"]["done"] == false)
    );
    let log = &last["log"];
    assert_eq!(log["id"], log_id);
    assert_eq!(log["completion"].as_str().unwrap(), deltas);
    assert_eq!(log["status"], "OK");
    assert_eq!(log["inFlight"], false);
    assert_eq!(log["promptTokens"], prompt_tokens(prompt));
    assert_eq!(log["completionTokens"], 12);
    assert_eq!(
        log["costMicrocents"],
        mini_cost(prompt_tokens(prompt), 12).to_string()
    );
    assert_eq!(log["metadata"]["usage_source"], "upstream");
    assert_eq!(log["metadata"]["finish_reason"], "stop");
    assert!(log["metadata"]["ttft_ms"].is_u64());

    let stored = only_log(&app).await;
    assert_eq!(stored.completion.as_deref(), Some(deltas.as_str()));
    assert_book_entry(&app, &user, 1).await;
    app.shutdown().await;
}

#[tokio::test]
async fn complete_returns_the_finalised_log() {
    let app = spawn_app().await;
    let user = app.sign_up("ada@example.com").await;
    let prompt = "Summarise this @@tokens=5";
    let body = app
        .gql(
            Some(&user.token),
            COMPLETE,
            json!({ "i": { "prompt": prompt } }),
        )
        .await;
    let log = &body["data"]["complete"];
    assert_eq!(
        log["completion"].as_str().unwrap(),
        upstream::answer(prompt, 5),
        "{body}"
    );
    assert_eq!(log["status"], "OK");
    assert_eq!(
        (
            log["promptTokens"].as_i64().unwrap(),
            log["completionTokens"].as_i64().unwrap()
        ),
        (prompt_tokens(prompt), 5)
    );
    assert!(log["latencyMs"].is_i64());
    assert_eq!(log["metadata"]["stream"], false);
    assert_book_entry(&app, &user, 1).await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_content_filter_finish_is_logged_as_filtered() {
    let app = spawn_app().await;
    let user = app.sign_up("ada@example.com").await;
    let prompt = "Something spicy @@tokens=3 @@finish=content_filter";
    let (deltas, payloads, error) = stream(&app, &user, json!({ "prompt": prompt })).await;
    assert!(error.is_none());
    let last = &payloads.last().unwrap()["data"]["completionStream"];
    assert_eq!(
        (last["done"].as_bool(), last["log"]["status"].as_str()),
        (Some(true), Some("FILTERED"))
    );
    assert_eq!(only_log(&app).await.status, CallStatus::Filtered);
    assert_eq!(only_log(&app).await.completion.unwrap(), deltas);
    assert_books_balance(&app, &user.id, 1).await;
    app.shutdown().await;
}

#[tokio::test]
async fn unknown_and_empty_finish_reasons_are_tolerated() {
    let app = spawn_app().await;
    let user = app.sign_up("ada@example.com").await;
    for (i, finish) in ["empty", "eos_token"].iter().enumerate() {
        let prompt = format!("p{i} @@tokens=2 @@finish={finish}");
        let body = app
            .gql(
                Some(&user.token),
                COMPLETE,
                json!({ "i": { "prompt": prompt } }),
            )
            .await;
        assert_eq!(body["data"]["complete"]["status"], "OK", "{body}");
    }
    assert_books_balance(&app, &user.id, 2).await;
    app.shutdown().await;
}

#[tokio::test]
async fn without_a_usage_chunk_tokens_are_counted_locally_and_agree() {
    let app = spawn_app().await;
    let user = app.sign_up("ada@example.com").await;
    let mut logs = Vec::new();
    for prompt in ["count me @@tokens=17", "count me @@tokens=17 @@no_usage"] {
        let (deltas, events, error) = stream(&app, &user, json!({ "prompt": prompt })).await;
        assert!(error.is_none(), "{error:?}");
        let log = events.last().unwrap()["data"]["completionStream"]["log"].clone();
        assert_eq!(log["completion"].as_str(), Some(deltas.as_str()));
        assert_eq!(deltas, upstream::answer(prompt, 17));
        logs.push(log);
    }
    let (with, without) = (&logs[0], &logs[1]);
    assert_eq!(with["metadata"]["usage_source"], "upstream");
    assert_eq!(without["metadata"]["usage_source"], "local");
    assert_eq!(without["status"], "OK");
    assert_eq!(without["completionTokens"], 17);
    assert_eq!(without["completionTokens"], with["completionTokens"]);
    // The local count of each prompt is what the upstream reports for it.
    assert_eq!(with["promptTokens"], prompt_tokens("count me @@tokens=17"));
    assert_eq!(
        without["promptTokens"],
        prompt_tokens("count me @@tokens=17 @@no_usage")
    );
    let p = prompt_tokens("count me @@tokens=17 @@no_usage");
    assert_eq!(without["costMicrocents"], mini_cost(p, 17).to_string());
    assert_books_balance(&app, &user.id, 2).await;
    app.shutdown().await;
}

#[tokio::test]
async fn reasoning_models_get_max_completion_tokens_and_no_temperature() {
    let app = spawn_app().await;
    let user = app.sign_up("ada@example.com").await;
    let body = app
        .gql(
            Some(&user.token),
            COMPLETE,
            json!({ "i": { "prompt": "think @@tokens=4", "model": "o4-mini", "maxTokens": 3 } }),
        )
        .await;
    // The local upstream honours max_completion_tokens: 3 of the 4 tokens, cut for length.
    assert_eq!(body["data"]["complete"]["completionTokens"], 3, "{body}");
    assert_eq!(
        body["data"]["complete"]["metadata"]["finish_reason"],
        "length"
    );
    let body = app
        .gql(
            Some(&user.token),
            COMPLETE,
            json!({ "i": { "prompt": "think", "model": "o3", "temperature": 0.5 } }),
        )
        .await;
    assert_eq!(error_code(&body), Some("BAD_USER_INPUT"), "{body}");
    assert_books_balance(&app, &user.id, 1).await;
    app.shutdown().await;
}

#[tokio::test]
async fn models_lists_the_price_table_and_the_upstream() {
    let app = spawn_app_with_env(&[(
        "MODEL_PRICES",
        r#"{"llama3.1:8b": {"input": 0, "output": 0}, "o3": null}"#,
    )])
    .await;
    let body = app.gql(None, "{ models { id inputMicrocentsPerMillion outputMicrocentsPerMillion upstream localUpstream } }", json!({})).await;
    let models = body["data"]["models"].as_array().unwrap();
    let mini = models.iter().find(|m| m["id"] == "gpt-4o-mini").unwrap();
    assert_eq!(mini["inputMicrocentsPerMillion"], "15000000");
    assert_eq!(mini["outputMicrocentsPerMillion"], "60000000");
    assert_eq!(mini["localUpstream"], false);
    // A provider name, never the address (loopback here).
    assert_eq!(mini["upstream"], "openai-compatible");
    assert!(models.iter().any(|m| m["id"] == "llama3.1:8b"));
    assert!(!models.iter().any(|m| m["id"] == "o3"));
    app.shutdown().await;

    // Without OPENAI_BASE_URL the built-in local upstream serves, and says so.
    let local = spawn_app_with(|v| {
        v.remove("OPENAI_BASE_URL");
    })
    .await;
    let body = local
        .gql(None, "{ models { id upstream localUpstream } }", json!({}))
        .await;
    assert_eq!(body["data"]["models"][0]["localUpstream"], true);
    assert_eq!(body["data"]["models"][0]["upstream"], "local");
    let user = local.sign_up("ada@example.com").await;
    let done = local
        .gql(
            Some(&user.token),
            COMPLETE,
            json!({ "i": { "prompt": "hello" } }),
        )
        .await;
    assert_eq!(done["data"]["complete"]["status"], "OK", "{done}");
    local.shutdown().await;
}
