//! The call pipeline, one for `complete` and `completionStream`:
//! validate → admit against the budget (logging the call as in flight) → call the upstream →
//! forward deltas as they arrive → finalise the log and append exactly one `token_usage` row.
//!
//! Each call runs in a task of its own that outlives the request that started it, so the log is
//! finalised whatever happens to the client: when the receiver of its events goes away, the task
//! drops the upstream stream at once (aborting the HTTP request, so no tokens are paid for
//! nobody) and records what was consumed. On shutdown, calls get a grace period, then are stopped
//! and finalised the same way. Calls whose process died are finalised by a lease sweep.
//!
//! * [`validate`]: what a request may ask for (pure);
//! * [`context`]: what is sent: a conversation's earlier turns, trimmed to the context window;
//! * [`store`]: admission, finalisation and leases in the database;
//! * [`driver`]: relaying one call and finalising it;
//! * [`leases`]: lease renewal and the recovery of stranded calls;
//! * [`tracker`]: the one record of this process's calls in flight.
//!
//! A call's reads (its caller's profile and limits) and its admission go through
//! [`Grouped`] queues: calls that arrive together (a burst of streams) are read in one query
//! and admitted in one transaction (group commit), each decided as it would be alone. On
//! PostgreSQL a group's writes carry their rows as arrays ([`unnest`]): one statement text
//! whatever the group's size.

pub mod context;
mod driver;
mod leases;
pub mod store;
pub mod tracker;
mod unnest;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use entity::prompt_logs;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::auth::session::LimitOverrides;
use crate::config::{CallsConfig, ProfileDefaults, UpstreamConfig};
use crate::db::Db;
use crate::error::{AppError, AppResult};
use crate::grouped::Grouped;
use crate::llm::{LlmClient, UpstreamInfo, UpstreamRequest};
use crate::metrics::Metrics;
use crate::service::{conversations, profiles};
use driver::Driver;
use entity::user_profiles;
use store::{CallLimits, NewCall, NewTurn};
use tracker::InFlight;
pub use validate::CallRequest;

/// What a running call reports to whoever started it.
#[derive(Debug)]
pub enum CallEvent {
    /// Text as the upstream sent it.
    Delta(String),
    /// The call is over: its finalised log.
    Finished(prompt_logs::Model),
}

/// A started call.
pub struct Call {
    pub log_id: Uuid,
    pub events: mpsc::UnboundedReceiver<CallEvent>,
}

/// The call pipeline, shared by every request.
pub struct Calls {
    db: Db,
    /// The same pool for the background sweeps (leases, checkpoints, recovery), counted apart.
    sweeps: Db,
    client: LlmClient,
    upstream_config: UpstreamConfig,
    config: CallsConfig,
    pub upstream: UpstreamInfo,
    /// Cancelled when the shutdown grace period is over: running calls stop.
    stop: CancellationToken,
    in_flight: Arc<InFlight>,
    /// Outcomes handed to the lease sweep (see `tracker::Abandoned`).
    abandoned: Arc<tracker::Abandoned>,
    /// This process, as the owner of the calls it runs (`INSTANCE_ID`).
    instance: String,
    /// Token counts of conversations' finished turns (see `context::TurnTokens`).
    turn_tokens: context::TurnTokens,
    metrics: Arc<Metrics>,
    /// Callers' profiles and limits, read for the calls that arrive together.
    callers: Grouped<String, AppResult<Caller>>,
    /// Admissions, written for the calls that arrive together (`store::admit_many`).
    admissions: Grouped<NewCall, AppResult<prompt_logs::Model>>,
    /// Finalisations of the calls that end together.
    finalisations: Finalisations,
}

/// Finalisations, written for the calls that end together (`store::finalise_many`).
pub(crate) type Finalisations = Grouped<store::Finish, AppResult<prompt_logs::Model>>;

/// What a call is decided against: its caller's profile (default model, budget) and limits.
type Caller = (user_profiles::Model, CallLimits);

/// The server's call limits, before a user's overrides.
fn default_limits(config: &CallsConfig) -> CallLimits {
    CallLimits {
        max_concurrent: config.max_concurrent_calls,
        per_minute: config.calls_per_minute,
    }
}

/// A caller's profile and limit overrides, as a session check read them just before the call
/// (`auth::session::resolve_many`): the call then needs no read of its own for them.
pub struct KnownCaller {
    pub profile: user_profiles::Model,
    pub limits: LimitOverrides,
}

/// The most callers one group reads: their statements stay well under the databases' limits
/// on bound parameters.
const MAX_READ_GROUP: usize = 64;
/// The most calls one group admits or finalises. Under a burst, fewer and larger groups mean
/// fewer round trips, and fewer hand-overs of the users' month locks between groups (checked
/// admissions of the same users run one group at a time). In bursts of 500 streams, 256
/// rather than 64 gave a lower added first-token p99 in 15 of 20 alternating pairs (by 10–30
/// ms with budgets and limits on, in the sets it won), and often a higher median
/// (docs/performance.md, thirteenth round). On PostgreSQL the rows travel as arrays
/// (`unnest`); SQLite's largest statement, the finalisation's, binds 13 values per call:
/// 3,328 for 256, far under its limit of 32,766.
const MAX_WRITE_GROUP: usize = 256;
/// Groups read or admitted at once: a burst's first call goes alone while the next gather.
const GROUP_SLOTS: usize = 2;

/// Turns of a conversation read at a time while its context is built (newest first).
const CONTEXT_PAGE: u64 = 64;

impl Calls {
    pub fn new(
        db: Db,
        upstream_config: UpstreamConfig,
        config: CallsConfig,
        defaults: ProfileDefaults,
        upstream: UpstreamInfo,
        instance: String,
        metrics: Arc<Metrics>,
    ) -> Result<Self, crate::llm::ClientError> {
        // reqwest uses rustls without a built-in crypto provider: ring is the process default.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = LlmClient::new(&upstream_config, &upstream.base_url)?;
        let limits = default_limits(&config);
        let callers = Grouped::start(GROUP_SLOTS, MAX_READ_GROUP, {
            let db = db.clone();
            move |users: Vec<String>| {
                let (db, defaults) = (db.clone(), defaults.clone());
                async move { read_callers(&db, users, &defaults, limits).await }
            }
        })
        // Reads (and a profile created if missing, which either happens or not).
        .lone_items_inline();
        let admissions = Grouped::start(GROUP_SLOTS, MAX_WRITE_GROUP, {
            let db = db.clone();
            move |calls| {
                let db = db.clone();
                async move { store::admit_many(&db, calls).await }
            }
        });
        let finalisations = Grouped::start(GROUP_SLOTS, MAX_WRITE_GROUP, {
            let (db, metrics) = (db.clone(), metrics.clone());
            move |calls| {
                let (db, metrics) = (db.clone(), metrics.clone());
                async move { store::finalise_many(&db, &metrics, calls).await }
            }
        });
        let in_flight = Arc::new(InFlight::new(config.checkpoint));
        Ok(Self {
            callers,
            admissions,
            finalisations,
            sweeps: db.counted_apart(),
            db,
            client,
            upstream_config,
            config,
            upstream,
            stop: CancellationToken::new(),
            in_flight,
            abandoned: Arc::default(),
            instance,
            turn_tokens: context::TurnTokens::default(),
            metrics,
        })
    }

    /// The price table (models this server routes to).
    pub fn prices(&self) -> &crate::metering::prices::PriceTable {
        &self.config.prices
    }

    /// Validate, admit and start a call for `user_id`. Refusals (bad input, unknown model, budget)
    /// happen before anything is written or sent upstream; each is counted by reason. `known`
    /// is the caller's profile and limits if they were just read (else they are read here).
    pub async fn start(
        &self,
        user_id: &str,
        known: Option<KnownCaller>,
        req: CallRequest,
        streaming: bool,
    ) -> AppResult<Call> {
        let started = self.start_call(user_id, known, req, streaming).await;
        if let Err(e) = &started {
            let reason = match e {
                AppError::BudgetExceeded { .. } => Some("budget"),
                AppError::CallLimit { limit, .. } => Some(limit.name()),
                AppError::BadUserInput(_) => Some("validation"),
                AppError::ConversationBusy => Some("conversation_busy"),
                _ => None,
            };
            if let Some(reason) = reason {
                self.metrics.call_refused(reason);
            }
        }
        started
    }

    async fn start_call(
        &self,
        user_id: &str,
        known: Option<KnownCaller>,
        req: CallRequest,
        streaming: bool,
    ) -> AppResult<Call> {
        let log_id = Uuid::now_v7();
        // Registered as in flight before its row can exist: shutdown waits for it, and a lease
        // sweep never mistakes a call being admitted for a stranded one (see `store::stranded`).
        // Once shutdown has begun, no call starts.
        let Some(guard) = self.in_flight.register(log_id) else {
            return Err(AppError::Unavailable("the server is shutting down".into()));
        };
        // Someone else's conversation is as absent as one that never existed.
        let conversation_id = match req.conversation_id.as_deref() {
            Some(id) => Some(Uuid::parse_str(id).map_err(|_| AppError::NotFound)?),
            None => None,
        };
        // The caller's profile and limits (as just read with the session, or read with the
        // calls arriving meanwhile), then the conversation: one read after the other, since at
        // once a burst of calls would hold twice the connections while it queues for the pool
        // (measured: the 500-stream burst's TTFT p99 doubled).
        let (profile, limits) = match known {
            Some(known) => (
                known.profile,
                default_limits(&self.config).overridden(known.limits),
            ),
            None => self.callers.answer(user_id.to_owned()).await?,
        };
        let conversation = match conversation_id {
            Some(id) => Some(conversations::for_turn(&self.db, user_id, id, CONTEXT_PAGE).await?),
            None => None,
        };
        let (conversation, mut page) = conversation.unzip();
        let default_model = conversation
            .as_ref()
            .map_or(profile.default_model.as_str(), |c| c.model.as_str());
        let call = validate::validate(req, default_model, &self.config)?;
        let system = conversation
            .as_ref()
            .and_then(|c| c.system_prompt.as_deref());
        let mut context = context::Context::new(
            &call.model,
            self.config.prices.context_window(&call.model),
            call.max_tokens,
            self.config.context_max_turns,
            system,
            &call.prompt,
            &self.turn_tokens,
        )?;
        if let (Some(c), Some(page)) = (&conversation, &mut page) {
            'pages: loop {
                // Newest first, the newest counted turn first of all: only it can be running.
                for turn in page.iter() {
                    if turn.completion.is_none() {
                        return Err(AppError::ConversationBusy);
                    }
                    if !context.offer(turn) {
                        break 'pages;
                    }
                }
                let Some(oldest) = page.last().map(|t| t.seq) else {
                    break;
                };
                if (page.len() as u64) < CONTEXT_PAGE {
                    break;
                }
                *page = conversations::turns_before(&self.db, user_id, c.id, oldest, CONTEXT_PAGE)
                    .await?;
            }
        }
        let context = context.build(system, &call.prompt);
        let prompt_tokens = context.prompt_tokens as i64;
        let mut metadata = json!({ "stream": streaming, "max_tokens": call.max_tokens });
        let turn = conversation.as_ref().map(|c| {
            metadata["conversation_id"] = json!(c.id);
            metadata["context_turns"] = json!(context.turns);
            NewTurn {
                conversation_id: c.id,
                seq: c.turn_count.saturating_add(1),
                title: (c.turn_count == 0 && c.title.is_none())
                    .then(|| conversations::title_from_prompt(&call.prompt)),
            }
        });
        let new_call = NewCall {
            id: log_id,
            user_id: user_id.to_owned(),
            model: call.model.clone(),
            prompt: call.prompt.clone(),
            prompt_tokens,
            reservation: prompt_tokens + i64::from(call.max_tokens),
            budget: profile.monthly_token_budget,
            limits,
            owner: self.instance.clone(),
            metadata,
            turn,
        };
        let (tx, events) = mpsc::unbounded_channel();
        let driver = Driver {
            finalisations: self.finalisations.clone(),
            client: self.client.clone(),
            first_token_timeout: self.upstream_config.first_token_timeout,
            idle_timeout: self.upstream_config.idle_timeout,
            stop: self.stop.clone(),
            price: call.price,
            finalise_retry: self.config.finalise_retry,
            unsaved: guard.unsaved(),
            abandoned: self.abandoned.clone(),
        };
        let request = UpstreamRequest {
            model: call.model,
            messages: context.messages,
            max_tokens: call.max_tokens,
            temperature: call.temperature,
        };
        // Admission runs in the call's own task: a client that goes away while its call is being
        // admitted cannot leave an admitted call with nobody to run and finalise it.
        let (admitted_tx, admitted) = tokio::sync::oneshot::channel();
        let admissions = self.admissions.clone();
        // The call's task logs (and calls upstream) under the request's id.
        tokio::spawn(crate::request_id::carry(async move {
            let _in_flight = guard;
            let log = match admissions.answer(new_call).await {
                Ok(log) => log,
                Err(e) => {
                    let _ = admitted_tx.send(Err(e));
                    return;
                }
            };
            let _ = admitted_tx.send(Ok(log_id));
            driver.run(log, request, tx).await;
        }));
        let log_id = admitted
            .await
            .map_err(|_| AppError::internal("the call's task ended before admission"))??;
        Ok(Call { log_id, events })
    }

    /// Let running calls finish for up to `grace`, then stop the rest (they finalise as
    /// `error`); returns once every call is finalised. New calls are refused from the start.
    pub async fn shutdown(&self, grace: Duration) {
        self.in_flight.close();
        if tokio::time::timeout(grace, self.in_flight.wait_empty())
            .await
            .is_err()
        {
            tracing::warn!(
                running = self.in_flight.len(),
                "shutdown grace period over: stopping calls"
            );
            self.stop.cancel();
            self.in_flight.wait_empty().await;
        }
        // Nothing runs any more: the lease maintenance ends too.
        self.stop.cancel();
        // Outcomes handed over while the database was away: one last, bounded try (else the
        // next start records them from their checkpoints).
        if !self.abandoned.is_empty() {
            match tokio::time::timeout(Duration::from_secs(5), self.recover()).await {
                Ok(Ok(n)) => tracing::info!(calls = n, "recorded outcomes left over at shutdown"),
                Ok(Err(e)) => {
                    tracing::warn!(error = ?e, "could not record outcomes left over at shutdown")
                }
                Err(_) => tracing::warn!("recording outcomes left over at shutdown timed out"),
            }
        }
    }

    /// Calls running now (started and not yet finalised).
    pub fn running(&self) -> usize {
        self.in_flight.len()
    }

    /// Wait until no call is running.
    pub async fn wait_idle(&self) {
        self.in_flight.wait_empty().await;
    }
}

/// The callers' profiles (created if missing) and limits, two queries for the group; in the
/// group's order. A failed read fails the group's calls, having written nothing.
async fn read_callers(
    db: &Db,
    users: Vec<String>,
    defaults: &ProfileDefaults,
    limits: CallLimits,
) -> Vec<AppResult<Caller>> {
    let read = async {
        let profiles = profiles::get_or_create_many(db, &users, defaults).await?;
        let limits = store::limits_for(db, &users, limits).await?;
        Ok::<_, AppError>((profiles, limits))
    };
    match read.await {
        Ok((profiles, limits)) => users
            .iter()
            .map(|u| match (profiles.get(u), limits.get(u)) {
                (Some(profile), Some(limits)) => Ok((profile.clone(), *limits)),
                _ => Err(AppError::internal("a caller missing after get-or-create")),
            })
            .collect(),
        Err(e) => {
            tracing::error!(error = ?e, callers = users.len(), "reading callers failed");
            users
                .iter()
                .map(|_| {
                    Err(AppError::internal(format!(
                        "reading the caller failed: {e:?}"
                    )))
                })
                .collect()
        }
    }
}

/// Why a finalised call failed, as recorded in its `metadata.error`.
pub fn error_of(log: &prompt_logs::Model) -> Option<String> {
    log.metadata
        .as_ref()
        .and_then(|m| m.get("error"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}
