//! Completions, their logs and the models they may use.

use async_graphql::dataloader::DataLoader;
use async_graphql::{
    Context, Enum, ErrorExtensions, ID, InputObject, Json, Object, SimpleObject, Subscription,
};
use chrono::{DateTime, Utc};
use entity::prompt_logs::{self, CallStatus as DbCallStatus};
use futures_util::Stream;
use sea_orm::EntityTrait;

use super::loaders::{CostLoader, UserLoader};
use super::scalars::Int64;
use super::types::User;
use crate::app::AppState;
use crate::auth::{SignedIn, Viewer};
use crate::error::AppError;
use crate::llm::{CallEvent, CallRequest, error_of};

/// How a call ended.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "entity::prompt_logs::CallStatus")]
pub enum CallStatus {
    /// The upstream finished normally.
    Ok,
    /// The call failed or was interrupted; `metadata.error` says why.
    Error,
    /// The upstream stopped with `finish_reason = content_filter`.
    Filtered,
}

pub struct PromptLog(pub prompt_logs::Model);

/// One call to the upstream: the auditable record of the exchange (`prompt_logs`).
#[Object]
impl PromptLog {
    /// The log id (a UUID), carried by every event of a streamed call.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// The model the call was routed to.
    async fn model(&self) -> &str {
        &self.0.model
    }
    /// The user message as sent.
    async fn prompt(&self) -> &str {
        &self.0.prompt
    }
    /// The completion (what was received, for calls that ended early); null while in flight.
    async fn completion(&self) -> Option<&str> {
        self.0.completion.as_deref()
    }
    /// Prompt tokens metered (the upstream's count, else the model's tokenizer's).
    async fn prompt_tokens(&self) -> i32 {
        self.0.prompt_tokens
    }
    /// Completion tokens metered.
    async fn completion_tokens(&self) -> i32 {
        self.0.completion_tokens
    }
    /// From sending the request to the end of the answer, in milliseconds.
    async fn latency_ms(&self) -> Option<i32> {
        self.0.latency_ms
    }
    /// How the call ended (`OK` while in flight; see `inFlight`).
    async fn status(&self) -> CallStatus {
        self.0.status.into()
    }
    /// True until the call is finalised.
    async fn in_flight(&self) -> bool {
        self.0.in_flight()
    }
    /// `finish_reason`, `ttft_ms` (time to first token), `usage_source` (`upstream`, `local`:
    /// counted with the model's tokenizer, `none`: the upstream refused the request,
    /// `estimate`: recovered after a crash), `error`, `stream`, `max_tokens`.
    async fn metadata(&self) -> Option<Json<serde_json::Value>> {
        self.0.metadata.clone().map(Json)
    }
    /// What the call cost in micro-cents (1 USD = 10^8); null while in flight.
    async fn cost_microcents(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Int64>> {
        if self.0.in_flight() {
            return Ok(None);
        }
        Ok(ctx
            .data::<DataLoader<CostLoader>>()?
            .load_one(self.0.id)
            .await?
            .map(Int64))
    }
    /// When the call was admitted.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// Who made the call.
    async fn user(&self, ctx: &Context<'_>) -> async_graphql::Result<User> {
        // Logs are only ever shown to their owner: the signed-in user, already loaded by
        // authentication, needs no query (the loader stays for any other path).
        if let Ok(viewer) = ctx.data::<Viewer>()
            && viewer.user.id == self.0.user_id
        {
            return Ok(User(viewer.user.clone()));
        }
        let user = ctx
            .data::<DataLoader<UserLoader>>()?
            .load_one(self.0.user_id.clone())
            .await?
            .ok_or_else(|| AppError::internal("a log without its user"))?;
        Ok(User(user))
    }
}

/// A model this server routes to, with its prices.
#[derive(SimpleObject)]
pub struct Model {
    /// The id to pass as `model`.
    pub id: String,
    /// Micro-cents per million prompt tokens.
    pub input_microcents_per_million: Int64,
    /// Micro-cents per million completion tokens.
    pub output_microcents_per_million: Int64,
    /// Where calls to it go.
    pub upstream: String,
    /// True when calls go to the built-in local upstream (deterministic test tokens, not a real
    /// model): no `OPENAI_BASE_URL` is configured.
    pub local_upstream: bool,
}

/// A completion to run.
#[derive(InputObject)]
pub struct CompletionInput {
    /// The user message, up to `MAX_PROMPT_CHARS` characters.
    pub prompt: String,
    /// One of `models`; the profile's default model when omitted.
    pub model: Option<String>,
    /// The most completion tokens to generate, 1 to `MAX_COMPLETION_TOKENS` (default
    /// `DEFAULT_MAX_TOKENS`). Counts against the budget while the call runs.
    pub max_tokens: Option<i32>,
    /// Sampling temperature, 0 to 2.
    pub temperature: Option<f64>,
}

impl From<CompletionInput> for CallRequest {
    fn from(i: CompletionInput) -> Self {
        CallRequest {
            prompt: i.prompt,
            model: i.model,
            max_tokens: i.max_tokens,
            temperature: i.temperature,
        }
    }
}

/// One event of a streamed completion.
#[derive(SimpleObject)]
pub struct CompletionEvent {
    /// The call's log id (the same on every event).
    pub log_id: ID,
    /// Text as the upstream sent it; the deltas concatenate to the completion. Empty on the last event.
    pub delta: String,
    /// True on the last event.
    pub done: bool,
    /// The finalised log, on the last event.
    pub log: Option<PromptLog>,
}

/// The caller's user id. Over a WebSocket the session is checked again: the connection
/// authenticated once, and its session may have ended since (signed out, expired, revoked).
async fn live_user_id(ctx: &Context<'_>) -> async_graphql::Result<String> {
    let state = ctx.data::<AppState>()?;
    let viewer = ctx.data::<Viewer>()?;
    if ctx.data_opt::<super::http::OverWebSocket>().is_none() {
        return Ok(viewer.user.id.clone());
    }
    match crate::auth::session::resolve(&state.db, &viewer.session.token).await? {
        Some(active) => Ok(active.user.id),
        None => Err(AppError::Unauthenticated.extend()),
    }
}

fn upstream_error(log: &prompt_logs::Model) -> async_graphql::Error {
    AppError::Upstream {
        message: error_of(log).unwrap_or_else(|| "the upstream call failed".into()),
        log_id: log.id,
    }
    .extend()
}

#[derive(Default)]
pub struct CompletionQuery;

#[Object]
impl CompletionQuery {
    /// The models this server routes to, with their prices.
    async fn models(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Model>> {
        let state = ctx.data::<AppState>()?;
        let upstream = crate::llm::describe_upstream(&state.calls.upstream);
        Ok(state
            .calls
            .prices()
            .iter()
            .map(|(id, price)| Model {
                id: id.to_owned(),
                input_microcents_per_million: Int64(price.input),
                output_microcents_per_million: Int64(price.output),
                upstream: upstream.clone(),
                local_upstream: state.calls.upstream.local,
            })
            .collect())
    }

    /// One of the caller's logs; null when it does not exist or is someone else's.
    #[graphql(guard = "SignedIn")]
    async fn prompt_log(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<PromptLog>> {
        let state = ctx.data::<AppState>()?;
        let viewer = ctx.data::<Viewer>()?;
        let Ok(id) = uuid::Uuid::parse_str(&id) else {
            return Ok(None);
        };
        let log = prompt_logs::Entity::find_by_id(id)
            .one(&state.db)
            .await
            .map_err(AppError::from)?
            .filter(|log| log.user_id == viewer.user.id);
        Ok(log.map(PromptLog))
    }
}

#[derive(Default)]
pub struct CompletionMutation;

#[Object]
impl CompletionMutation {
    /// Run a completion to the end and return its finalised log. `BUDGET_EXCEEDED` when the
    /// monthly budget is used up; `UPSTREAM_ERROR` (with `extensions.logId`) when the upstream
    /// fails; `BAD_USER_INPUT` for an unknown model or out-of-range input.
    #[graphql(guard = "SignedIn")]
    async fn complete(
        &self,
        ctx: &Context<'_>,
        input: CompletionInput,
    ) -> async_graphql::Result<PromptLog> {
        let state = ctx.data::<AppState>()?;
        let user_id = live_user_id(ctx).await?;
        let mut call = state.calls.start(&user_id, input.into(), false).await?;
        while let Some(event) = call.events.recv().await {
            if let CallEvent::Finished(log) = event {
                if log.status == DbCallStatus::Error {
                    return Err(upstream_error(&log));
                }
                return Ok(PromptLog(log));
            }
        }
        Err(AppError::internal("the call ended without being finalised").extend())
    }
}

#[derive(Default)]
pub struct Subscription;

/// Operations over WebSocket (`graphql-transport-ws` or legacy `graphql-ws`).
#[Subscription]
impl Subscription {
    /// Stream a completion: deltas as the upstream sends them, then a last event with
    /// `done: true` and the finalised log. Refusals (`BUDGET_EXCEEDED`, `BAD_USER_INPUT`) come
    /// before any event; an upstream failure ends the stream with `UPSTREAM_ERROR` (with
    /// `extensions.logId`) after the deltas received. Unsubscribing aborts the upstream request.
    #[graphql(guard = "SignedIn")]
    async fn completion_stream(
        &self,
        ctx: &Context<'_>,
        input: CompletionInput,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<CompletionEvent>> + use<>>
    {
        let state = ctx.data::<AppState>()?;
        let user_id = live_user_id(ctx).await?;
        let call = state.calls.start(&user_id, input.into(), true).await?;
        let log_id = ID(call.log_id.to_string());
        let mut events = call.events;
        Ok(async_stream::stream! {
            let mut finished = false;
            while let Some(event) = events.recv().await {
                match event {
                    CallEvent::Delta(delta) => yield Ok(CompletionEvent { log_id: log_id.clone(), delta, done: false, log: None }),
                    CallEvent::Finished(log) => {
                        finished = true;
                        if log.status == DbCallStatus::Error {
                            yield Err(upstream_error(&log));
                        } else {
                            yield Ok(CompletionEvent { log_id: log_id.clone(), delta: String::new(), done: true, log: Some(PromptLog(log)) });
                        }
                        break;
                    }
                }
            }
            if !finished {
                yield Err(AppError::internal("the call ended without being finalised").extend());
            }
        })
    }
}
