//! Completions: the models this server routes to, `complete`, and `completionStream`.

use std::sync::{Arc, Mutex};

use async_graphql::{
    Context, ErrorExtensions, ID, InputObject, Object, SimpleObject, Subscription,
};
use entity::prompt_logs::{self, CallStatus as DbCallStatus};
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use tokio::sync::{mpsc, oneshot};

use super::history::PromptLog;
use super::scalars::Int64;
use crate::auth::{SignedIn, Viewer};
use crate::calls::{CallEvent, CallRequest, KnownCaller, error_of};
use crate::error::AppError;
use crate::state::AppState;

/// A model this server routes to, with its prices.
#[derive(SimpleObject)]
pub struct Model {
    /// The id to pass as `model`.
    pub id: String,
    /// Micro-cents per million prompt tokens.
    pub input_microcents_per_million: Int64,
    /// Micro-cents per million completion tokens.
    pub output_microcents_per_million: Int64,
    /// Who serves it: `openai`, `azure-openai`, `openai-compatible` or `local` (never an
    /// address: the upstream's URL may carry internal host names or credentials).
    pub upstream: String,
    /// True when calls go to the built-in local upstream (deterministic test tokens, not a real
    /// model): no `OPENAI_BASE_URL` is configured.
    pub local_upstream: bool,
    /// Tokens the model takes in one call, prompt and completion together: a conversation's
    /// earlier turns are trimmed to fit (`MODEL_PRICES` sets it per model).
    pub context_window: i32,
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
    /// Continue this conversation of the caller's: the model sees its system prompt and
    /// earlier turns (as many as fit the model's context window, newest kept), and the call
    /// becomes its next turn. Its model is the conversation's unless `model` is given. One turn
    /// at a time: `CONVERSATION_BUSY` while another runs; `NOT_FOUND` for an id that is not
    /// one of the caller's conversations.
    pub conversation_id: Option<ID>,
}

impl From<CompletionInput> for CallRequest {
    fn from(i: CompletionInput) -> Self {
        CallRequest {
            prompt: i.prompt,
            model: i.model,
            max_tokens: i.max_tokens,
            temperature: i.temperature,
            conversation_id: i.conversation_id.map(|id| id.0),
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
/// That check reads the caller's profile and limit overrides too, which the call then uses.
async fn live_caller(ctx: &Context<'_>) -> async_graphql::Result<(String, Option<KnownCaller>)> {
    let state = ctx.data::<AppState>()?;
    let viewer = ctx.data::<Viewer>()?;
    if ctx.data_opt::<super::OverWebSocket>().is_none() {
        return Ok((viewer.user.id.clone(), None));
    }
    match state
        .auth
        .live_session_for_call(&viewer.session.token)
        .await?
    {
        Some(active) => {
            let known = active
                .profile
                .zip(active.limits)
                .map(|(metered, limits)| KnownCaller {
                    profile: metered.profile,
                    limits,
                });
            Ok((active.user.id, known))
        }
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
        let upstream = crate::llm::provider_name(&state.calls.upstream);
        Ok(state
            .calls
            .prices()
            .iter()
            .map(|(id, price)| Model {
                id: id.to_owned(),
                input_microcents_per_million: Int64(price.input),
                output_microcents_per_million: Int64(price.output),
                upstream: upstream.to_owned(),
                local_upstream: state.calls.upstream.local,
                context_window: i32::try_from(state.calls.prices().context_window(id))
                    .unwrap_or(i32::MAX),
            })
            .collect())
    }
}

#[derive(Default)]
pub struct CompletionMutation;

#[Object]
impl CompletionMutation {
    /// Run a completion to the end and return its finalised log. `BUDGET_EXCEEDED` when the
    /// monthly budget is used up; `UPSTREAM_ERROR` (with `extensions.logId`) when the upstream
    /// fails; `BAD_USER_INPUT` for an unknown model or out-of-range input.
    #[graphql(
        guard = "SignedIn",
        complexity = "super::QUERY_COST + child_complexity"
    )]
    async fn complete(
        &self,
        ctx: &Context<'_>,
        input: CompletionInput,
    ) -> async_graphql::Result<PromptLog> {
        let state = ctx.data::<AppState>()?;
        let (user_id, known) = live_caller(ctx).await?;
        let mut call = state
            .calls
            .start(&user_id, known, input.into(), false)
            .await?;
        while let Some(event) = call.events.recv().await {
            if let CallEvent::Finished(log) = event {
                if log.status == DbCallStatus::Error {
                    return Err(upstream_error(&log));
                }
                return Ok(PromptLog(log));
            }
        }
        Err(unfinalised())
    }
}

/// Waiting deltas are joined into one event up to this size.
const COALESCE_BYTES: usize = 16 << 10;

#[derive(Default)]
pub struct Subscription;

/// Operations over WebSocket (`graphql-transport-ws` or legacy `graphql-ws`).
#[Subscription]
impl Subscription {
    /// Stream a completion: deltas as the upstream sends them, then a last event with
    /// `done: true` and the finalised log. Refusals (`BUDGET_EXCEEDED`, `BAD_USER_INPUT`) come
    /// before any event; an upstream failure ends the stream with `UPSTREAM_ERROR` (with
    /// `extensions.logId`) after the deltas received. Unsubscribing aborts the upstream request.
    #[graphql(
        guard = "SignedIn",
        complexity = "super::QUERY_COST + child_complexity"
    )]
    async fn completion_stream(
        &self,
        ctx: &Context<'_>,
        input: CompletionInput,
    ) -> async_graphql::Result<BoxStream<'static, async_graphql::Result<CompletionEvent>>> {
        let state = ctx.data::<AppState>()?;
        let (user_id, known) = live_caller(ctx).await?;
        let call = state
            .calls
            .start(&user_id, known, input.into(), true)
            .await?;
        let log_id = ID(call.log_id.to_string());
        let events = match ctx.data_opt::<DeltaLane>() {
            Some(lane) => match lane.hand_over(call.events) {
                Ok((sentinel, finished)) => return Ok(handed_over(log_id, sentinel, finished)),
                Err(events) => events,
            },
            None => call.events,
        };
        Ok(call_events(events, log_id).boxed())
    }
}

/// A way for a `completionStream` operation's deltas around async-graphql, offered by the
/// WebSocket transport to an operation whose only root field could be `completionStream`.
///
/// Executing the event's selection for every delta (a context, a future per field, a response
/// tree, then its serialisation, through async-graphql's layers of streams) took a quarter to a
/// third of the server's CPU in streaming (docs/performance.md, "Wave 2, seventh round"). Yet
/// every delta event of a call answers the same selection with the same values but the delta's
/// text. So the resolver hands its events to the transport and yields one event whose delta is
/// a sentinel: async-graphql executes that one as any other, and the transport keeps its message
/// as a template, never sent. Each delta is then that message with the delta's JSON string where
/// the sentinel's is. The last event (`done`, with the finalised log and whatever the selection
/// asks of it) goes back to the resolver's stream and is executed as usual. A selection without
/// `delta` (or skipping it) makes a template without the sentinel: each event is then the
/// template itself, as executing it would give.
#[derive(Clone, Default)]
pub struct DeltaLane(Arc<Mutex<Lane>>);

#[derive(Default)]
enum Lane {
    #[default]
    Open,
    Handed(Handoff),
    Taken,
}

/// A call's events handed to the transport.
pub struct Handoff {
    /// The delta of the template event: unique to the call, no JSON escaping.
    pub sentinel: String,
    pub events: mpsc::UnboundedReceiver<CallEvent>,
    /// Where the transport sends the call's last event (its `Finished`) back. Dropped unsent when
    /// the call's events ended without one.
    pub finished: oneshot::Sender<CallEvent>,
}

impl DeltaLane {
    /// Hand a call's events over, if nothing was handed over yet: the sentinel and where the
    /// last event comes back. Otherwise the events are given back.
    fn hand_over(
        &self,
        events: mpsc::UnboundedReceiver<CallEvent>,
    ) -> Result<(String, oneshot::Receiver<CallEvent>), mpsc::UnboundedReceiver<CallEvent>> {
        let mut lane = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !matches!(*lane, Lane::Open) {
            return Err(events);
        }
        let sentinel = format!("delta-lane-{}", uuid::Uuid::new_v4().simple());
        let (finished, back) = oneshot::channel();
        *lane = Lane::Handed(Handoff {
            sentinel: sentinel.clone(),
            events,
            finished,
        });
        Ok((sentinel, back))
    }

    /// The handed-over events, once (the transport takes them with the template event).
    pub fn take(&self) -> Option<Handoff> {
        let mut lane = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match std::mem::replace(&mut *lane, Lane::Taken) {
            Lane::Handed(handoff) => Some(handoff),
            Lane::Open | Lane::Taken => None,
        }
    }
}

/// `completionStream`'s events when its deltas went to the transport: the template event, then
/// the last event once the transport sends it back.
fn handed_over(
    log_id: ID,
    sentinel: String,
    finished: oneshot::Receiver<CallEvent>,
) -> BoxStream<'static, async_graphql::Result<CompletionEvent>> {
    async_stream::stream! {
        yield Ok(CompletionEvent { log_id: log_id.clone(), delta: sentinel, done: false, log: None });
        yield match finished.await {
            Ok(CallEvent::Finished(log)) => last_event(log_id, log),
            Ok(CallEvent::Delta(_)) | Err(_) => Err(unfinalised()),
        };
    }
    .boxed()
}

/// The event a call's finalised log makes: the last, `done`, or the upstream's failure.
fn last_event(log_id: ID, log: prompt_logs::Model) -> async_graphql::Result<CompletionEvent> {
    if log.status == DbCallStatus::Error {
        return Err(upstream_error(&log));
    }
    Ok(CompletionEvent {
        log_id,
        delta: String::new(),
        done: true,
        log: Some(PromptLog(log)),
    })
}

/// A call's events ended without its finalised log.
fn unfinalised() -> async_graphql::Error {
    AppError::internal("the call ended without being finalised").extend()
}

/// Deltas already waiting are appended to `delta` (up to [`COALESCE_BYTES`]), so they go out as
/// one event (they concatenate all the same): a stream that fell behind (a client slow to read,
/// a busy server) catches up in one message rather than one per delta. Returns the event that
/// stopped the joining, if it was not a delta.
pub fn join_waiting(
    delta: &mut String,
    events: &mut mpsc::UnboundedReceiver<CallEvent>,
) -> Option<CallEvent> {
    while delta.len() < COALESCE_BYTES {
        match events.try_recv() {
            Ok(CallEvent::Delta(more)) => delta.push_str(&more),
            Ok(other) => return Some(other),
            Err(_) => break,
        }
    }
    None
}

/// A call's events as `completionStream` sends them.
fn call_events(
    mut events: mpsc::UnboundedReceiver<CallEvent>,
    log_id: ID,
) -> impl Stream<Item = async_graphql::Result<CompletionEvent>> {
    async_stream::stream! {
        let mut finished = false;
        let mut held = None;
        while let Some(event) = match held.take() {
            Some(event) => Some(event),
            None => events.recv().await,
        } {
            match event {
                CallEvent::Delta(mut delta) => {
                    held = join_waiting(&mut delta, &mut events);
                    yield Ok(CompletionEvent { log_id: log_id.clone(), delta, done: false, log: None });
                }
                CallEvent::Finished(log) => {
                    finished = true;
                    yield last_event(log_id.clone(), log);
                    break;
                }
            }
        }
        if !finished {
            yield Err(unfinalised());
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    #[tokio::test]
    async fn waiting_deltas_go_out_as_one_event_up_to_a_bound() {
        let (tx, rx) = mpsc::unbounded_channel();
        let big = "x".repeat(COALESCE_BYTES);
        for delta in ["a", "b", "c", &big, "after"] {
            tx.send(CallEvent::Delta(delta.into())).unwrap();
        }
        drop(tx);
        let got: Vec<_> = call_events(rx, ID("log".into())).collect().await;
        let deltas: Vec<&str> = got
            .iter()
            .filter_map(|e| e.as_ref().ok())
            .map(|e| e.delta.as_str())
            .collect();
        assert_eq!(deltas, [format!("abc{big}").as_str(), "after"]);
        // A call that ends without its finalised log ends the stream with an error.
        assert_eq!(got.len(), 3);
        assert!(got[2].is_err());
    }
}
