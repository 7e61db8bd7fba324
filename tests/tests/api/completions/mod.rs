//! Completions end to end, through a real graphql-transport-ws client and `complete`, against
//! the local OpenAI-compatible upstream on loopback. For every path: the deltas concatenate to
//! the stored completion, there is exactly one log and one usage row per upstream call, token
//! counts and cost are as expected, and nothing is left in flight (see [`tests::books`]).
//!
//! By theme: [`relay`] (successful calls), [`failures`] (upstream errors, cut streams, timeouts,
//! refusals), [`budget`], [`replicas`] (leases, sweeps, crash recovery) and [`shutdown`].

mod admission;
mod budget;
mod crash;
mod events;
mod failures;
mod finalisation;
mod relay;
mod replicas;
mod shutdown;

use entity::prelude::*;
use entity::prompt_logs;
use sea_orm::EntityTrait;
use serde_json::{Value, json};
use tests::ws::GqlWs;
use tests::{TestApp, TestUser};

pub(crate) const STREAM: &str = "subscription($i: CompletionInput!) { completionStream(input: $i) { logId delta done log { id completion status promptTokens completionTokens costMicrocents inFlight metadata } } }";
pub(crate) const COMPLETE: &str = "mutation($i: CompletionInput!) { complete(input: $i) { id completion status promptTokens completionTokens costMicrocents inFlight latencyMs metadata } }";

/// gpt-4o-mini's list price: 15 and 60 micro-cents per token.
fn mini_cost(prompt: i64, completion: i64) -> i64 {
    (prompt * 15_000_000 + completion * 60_000_000 + 999_999) / 1_000_000
}

fn prompt_tokens(prompt: &str) -> i64 {
    tokenizer::count_chat("gpt-4o-mini", [("user", prompt)]) as i64
}

/// Stream a completion: the concatenated deltas, the events (`next` payloads with data), and
/// the error the stream ended with, if any (a `next` payload with `errors`, or an `error` message).
async fn stream(
    app: &TestApp,
    user: &TestUser,
    input: Value,
) -> (String, Vec<Value>, Option<Value>) {
    let mut ws = GqlWs::connect(app, Some(&user.token)).await;
    ws.subscribe("1", STREAM, json!({ "i": input })).await;
    let (payloads, protocol_error) = ws.collect("1").await;
    let (errors, events): (Vec<Value>, Vec<Value>) =
        payloads.into_iter().partition(|p| p["errors"].is_array());
    assert!(
        errors.len() <= 1,
        "at most one error, at the end: {errors:?}"
    );
    let deltas: String = events
        .iter()
        .filter_map(|p| p["data"]["completionStream"]["delta"].as_str())
        .collect();
    (deltas, events, errors.into_iter().next().or(protocol_error))
}

async fn only_log(app: &TestApp) -> prompt_logs::Model {
    let mut logs = PromptLogs::find().all(&app.db).await.unwrap();
    assert_eq!(logs.len(), 1);
    logs.pop().unwrap()
}

/// Set a budget the way an operator does (the `admin set-budget` command).
pub(crate) async fn set_budget(app: &TestApp, email: &str, budget: i64) {
    let config = api::config::Config::from_vars(tests::base_vars(&app.database)).unwrap();
    let said = api::service::admin::set_budget(&config, email, budget)
        .await
        .unwrap();
    assert!(said.contains(&budget.to_string()), "{said}");
}
