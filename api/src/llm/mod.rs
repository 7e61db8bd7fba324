//! Calls to the upstream, one pipeline for `complete` and `completionStream`:
//! validate → admit against the budget (logging the call as in flight) → call the upstream →
//! forward deltas as they arrive → finalise the log and append exactly one `token_usage` row.
//!
//! Each call runs in a task of its own that outlives the request that started it, so the log is
//! finalised whatever happens to the client: when the receiver of its events goes away, the task
//! drops the upstream stream at once (aborting the HTTP request, so no tokens are paid for
//! nobody) and records what was consumed. On shutdown, calls get a grace period, then are stopped
//! and finalised the same way.

pub mod client;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use entity::prompt_logs::{self, CallStatus};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::config::{OpenAiConfig, ProfileDefaults};
use crate::db::Db;
use crate::error::{AppError, AppResult};
use crate::service::calls::{self, NewCall, Outcome};
use crate::service::profiles;
use client::{LlmClient, UpstreamRequest, describe};

/// What a caller asks for.
#[derive(Clone, Debug, Default)]
pub struct CallRequest {
    pub prompt: String,
    pub model: Option<String>,
    pub max_tokens: Option<i32>,
    pub temperature: Option<f64>,
}

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

/// Where the upstream is and whether it is the built-in one.
#[derive(Clone, Debug)]
pub struct UpstreamInfo {
    pub base_url: String,
    /// True for the built-in local upstream (deterministic test tokens, not a model).
    pub local: bool,
}

/// The call pipeline, shared by every request.
pub struct Calls {
    db: Db,
    client: LlmClient,
    config: OpenAiConfig,
    defaults: ProfileDefaults,
    pub upstream: UpstreamInfo,
    tracker: TaskTracker,
    stop: CancellationToken,
    running: Arc<Running>,
    /// This process, as the owner of the calls it runs (`INSTANCE_ID`).
    instance: String,
    /// How long a call's lease lasts without renewal (`CALL_LEASE_SECS`).
    lease: Duration,
    /// The calls this process is running, whose leases it renews.
    active: Active,
}

/// Calls not yet finalised, and a signal when one is.
#[derive(Default)]
struct Running {
    count: std::sync::atomic::AtomicUsize,
    changed: tokio::sync::Notify,
}

/// Counts a call as running for as long as it lives.
/// This process's calls by log id, from before admission until after finalisation.
type Active = Arc<std::sync::Mutex<HashSet<Uuid>>>;

/// Holds a call's id in [`Active`] for as long as its task lives.
struct ActiveGuard(Active, Uuid);

impl ActiveGuard {
    fn new(active: &Active, id: Uuid) -> Self {
        active.lock().unwrap_or_else(|p| p.into_inner()).insert(id);
        ActiveGuard(active.clone(), id)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.1);
    }
}

struct RunningGuard(Arc<Running>);

impl RunningGuard {
    fn new(running: &Arc<Running>) -> Self {
        running
            .count
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Self(running.clone())
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0
            .count
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }
}

impl Calls {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        db: Db,
        config: OpenAiConfig,
        defaults: ProfileDefaults,
        upstream: UpstreamInfo,
        instance: String,
        lease: Duration,
    ) -> Result<Self, reqwest::Error> {
        // reqwest uses rustls without a built-in crypto provider: ring is the process default.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = LlmClient::new(&config, &upstream.base_url)?;
        Ok(Self {
            db,
            client,
            config,
            defaults,
            upstream,
            tracker: TaskTracker::new(),
            stop: CancellationToken::new(),
            running: Arc::default(),
            instance,
            lease,
            active: Arc::default(),
        })
    }

    /// The price table (models this server routes to).
    pub fn prices(&self) -> &crate::metering::prices::PriceTable {
        &self.config.prices
    }

    /// Validate, admit and start a call for `user_id`. Refusals (bad input, unknown model, budget)
    /// happen before anything is written or sent upstream.
    pub async fn start(&self, user_id: &str, req: CallRequest, streaming: bool) -> AppResult<Call> {
        // Counted by the tracker from here on, so shutdown waits for this call; and once shutdown
        // has begun, no call starts.
        let token = self.tracker.token();
        if self.stop.is_cancelled() || self.tracker.is_closed() {
            return Err(AppError::Unavailable("the server is shutting down".into()));
        }
        let prompt = req.prompt;
        if prompt.trim().is_empty() {
            return Err(AppError::bad_input("prompt must not be empty"));
        }
        if prompt.chars().count() > self.config.max_prompt_chars {
            return Err(AppError::bad_input(format!(
                "prompt must be at most {} characters",
                self.config.max_prompt_chars
            )));
        }
        let max = self.config.max_completion_tokens;
        let max_tokens = match req.max_tokens {
            None => self.config.default_max_tokens,
            Some(n) if n >= 1 && u32::try_from(n).is_ok_and(|n| n <= max) => n as u32,
            Some(_) => {
                return Err(AppError::bad_input(format!(
                    "maxTokens must be from 1 to {max}"
                )));
            }
        };
        if let Some(t) = req.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return Err(AppError::bad_input("temperature must be from 0 to 2"));
        }
        let profile = profiles::get_or_create(&self.db, user_id, &self.defaults).await?;
        let model = req
            .model
            .map(|m| m.trim().to_owned())
            .unwrap_or(profile.default_model.clone());
        let Some(price) = self.config.prices.get(&model) else {
            return Err(AppError::bad_input(format!(
                "unknown model {model:?}: see `models` for the ones this server routes to"
            )));
        };
        if req.temperature.is_some() && client::is_reasoning_model(&model) {
            return Err(AppError::bad_input(format!(
                "{model} does not take a temperature"
            )));
        }
        let prompt_tokens = tokenizer::count_chat(&model, [("user", prompt.as_str())]) as i64;
        let log_id = Uuid::now_v7();
        let new_call = NewCall {
            id: log_id,
            user_id: user_id.to_owned(),
            model: model.clone(),
            prompt: prompt.clone(),
            prompt_tokens,
            reservation: prompt_tokens + i64::from(max_tokens),
            budget: profile.monthly_token_budget,
            owner: self.instance.clone(),
            metadata: json!({ "stream": streaming, "max_tokens": max_tokens }),
        };
        let (tx, events) = mpsc::unbounded_channel();
        let driver = Driver {
            db: self.db.clone(),
            client: self.client.clone(),
            first_token_timeout: self.config.first_token_timeout,
            idle_timeout: self.config.idle_timeout,
            stop: self.stop.clone(),
            price,
        };
        let request = UpstreamRequest {
            model,
            prompt,
            max_tokens,
            temperature: req.temperature,
        };
        // Admission runs in the call's own task: a client that goes away while its call is being
        // admitted cannot leave an admitted call with nobody to run and finalise it.
        let (admitted_tx, admitted) = tokio::sync::oneshot::channel();
        let guard = RunningGuard::new(&self.running);
        // Registered as running before its row can exist: a lease sweep never mistakes a call
        // being admitted for a stranded one (see `calls::stranded`).
        let active = ActiveGuard::new(&self.active, log_id);
        tokio::spawn(async move {
            let _tracked = token;
            let _running = guard;
            let _active = active;
            let log = match calls::admit(&driver.db, new_call).await {
                Ok(log) => log,
                Err(e) => {
                    let _ = admitted_tx.send(Err(e));
                    return;
                }
            };
            let _ = admitted_tx.send(Ok(log_id));
            driver.run(log, request, tx).await;
        });
        let log_id = admitted
            .await
            .map_err(|_| AppError::internal("the call's task ended before admission"))??;
        Ok(Call { log_id, events })
    }

    /// Finalise calls nobody runs any more (their process crashed or was killed, or could not
    /// finalise them): status `error`, metered at their prompt tokens (what the upstream had
    /// certainly received). Live calls of other replicas are left alone (see
    /// `calls::stranded`). Runs at start and then every third of a lease.
    pub async fn recover(&self) -> AppResult<usize> {
        // The cutoff before the snapshot: see `calls::stranded`.
        let cutoff = calls::now();
        let running = self
            .active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let stranded =
            calls::stranded(&self.db, &self.instance, self.lease, &running, cutoff).await?;
        for log in &stranded {
            let price = self.config.prices.get(&log.model);
            let prompt_tokens = i64::from(log.prompt_tokens);
            let mut metadata = log.metadata.clone().unwrap_or_else(|| json!({}));
            metadata["error"] = json!("interrupted: the server stopped before the call finished");
            metadata["usage_source"] = json!("estimate");
            calls::finalise(
                &self.db,
                log,
                Outcome {
                    completion: String::new(),
                    prompt_tokens,
                    completion_tokens: 0,
                    latency_ms: (calls::now() - log.created_at).num_milliseconds(),
                    status: CallStatus::Error,
                    metadata,
                    cost_microcents: price.map_or(0, |p| p.cost(prompt_tokens, 0)),
                },
            )
            .await?;
        }
        Ok(stranded.len())
    }

    /// Let running calls finish for up to `grace`, then stop the rest (they finalise as
    /// `error`); returns once every call is finalised. New calls are refused from the start.
    pub async fn shutdown(&self, grace: Duration) {
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                running = self.tracker.len(),
                "shutdown grace period over: stopping calls"
            );
            self.stop.cancel();
            self.tracker.wait().await;
        }
    }

    /// Keep this process's leases alive and finalise stranded calls, until shutdown.
    pub async fn maintain(self: Arc<Self>) {
        let every = self.lease / 3;
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = self.stop.cancelled() => return,
            }
            let running: Vec<Uuid> = self
                .active
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .copied()
                .collect();
            if let Err(e) = calls::renew(&self.db, &running).await {
                tracing::warn!(error = ?e, "could not renew call leases");
            }
            match self.recover().await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(calls = n, "finalised stranded calls as errors"),
                Err(e) => tracing::warn!(error = ?e, "could not finalise stranded calls"),
            }
        }
    }

    /// Calls running now (started and not yet finalised).
    pub fn running(&self) -> usize {
        self.running.count.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Wait until no call is running.
    pub async fn wait_idle(&self) {
        loop {
            let changed = self.running.changed.notified();
            if self.running() == 0 {
                return;
            }
            changed.await;
        }
    }
}

/// Runs one call to the end.
struct Driver {
    db: Db,
    client: LlmClient,
    first_token_timeout: Duration,
    idle_timeout: Duration,
    stop: CancellationToken,
    price: crate::metering::prices::Price,
}

/// What a call received before it ended.
#[derive(Default)]
struct Progress {
    /// The completion so far.
    text: String,
    /// Usage, if the upstream reported it.
    usage: Option<client::Usage>,
    /// Milliseconds to the first token.
    first_token: Option<u64>,
    /// Whether the upstream accepted the request (and so processed the prompt).
    opened: bool,
}

/// Why the stream stopped.
enum Ended {
    /// The upstream finished (with this `finish_reason`).
    Finished(String),
    /// The upstream failed; `reached` when it had accepted the request.
    Failed {
        reason: String,
        reached: bool,
    },
    ClientGone,
    ShuttingDown,
    TimedOut(&'static str),
}

impl Driver {
    #[tracing::instrument(name = "llm_call", skip_all, fields(log_id = %log.id, model = %req.model))]
    async fn run(
        self,
        log: prompt_logs::Model,
        req: UpstreamRequest,
        tx: mpsc::UnboundedSender<CallEvent>,
    ) {
        let started = Instant::now();
        let mut progress = Progress::default();
        let ended = self.relay(&req, &tx, started, &mut progress).await;
        let Progress {
            text,
            usage,
            first_token,
            opened,
        } = progress;
        let latency_ms = started.elapsed().as_millis() as i64;

        let mut metadata = log.metadata.clone().unwrap_or_else(|| json!({}));
        if let Some(ttft) = first_token {
            metadata["ttft_ms"] = json!(ttft);
        }
        let (status, reached) = match &ended {
            Ended::Finished(reason) => {
                metadata["finish_reason"] = json!(reason);
                let status = if reason == "content_filter" {
                    CallStatus::Filtered
                } else {
                    CallStatus::Ok
                };
                (status, true)
            }
            Ended::Failed { reason, reached } => {
                metadata["error"] = json!(reason);
                (CallStatus::Error, *reached)
            }
            Ended::ClientGone => {
                metadata["error"] = json!("client disconnected: the upstream request was aborted");
                (CallStatus::Error, opened)
            }
            Ended::ShuttingDown => {
                metadata["error"] = json!("server shutting down: the upstream request was aborted");
                (CallStatus::Error, opened)
            }
            Ended::TimedOut(which) => {
                metadata["error"] = json!(format!("upstream timed out ({which})"));
                (CallStatus::Error, true)
            }
        };
        // Exact when the upstream reported usage; otherwise counted with the model's tokenizer.
        // A request the upstream refused (HTTP error, no connection) consumed nothing.
        let (prompt_tokens, completion_tokens, source) = match usage {
            Some(u) => (u.prompt_tokens, u.completion_tokens, "upstream"),
            None if reached => (
                i64::from(log.prompt_tokens),
                tokenizer::count_text(&req.model, &text) as i64,
                "local",
            ),
            None => (0, 0, "none"),
        };
        metadata["usage_source"] = json!(source);
        let outcome = Outcome {
            completion: text,
            prompt_tokens,
            completion_tokens,
            latency_ms,
            status,
            metadata,
            cost_microcents: self.price.cost(prompt_tokens, completion_tokens),
        };
        match self.finalise_with_retry(&log, outcome).await {
            Ok(done) => {
                tracing::info!(status = ?done.status, prompt_tokens, completion_tokens, latency_ms, "call finalised");
                let _ = tx.send(CallEvent::Finished(done));
            }
            Err(e) => {
                // Left in flight: the next start finalises it (see `Calls::recover`).
                tracing::error!(error = ?e, "could not finalise the call");
            }
        }
    }

    async fn finalise_with_retry(
        &self,
        log: &prompt_logs::Model,
        outcome: Outcome,
    ) -> AppResult<prompt_logs::Model> {
        // Keep trying (the database may be restarting) until shutdown; a call given up on then
        // is finalised by a lease sweep once this process is gone.
        let mut wait = Duration::from_millis(100);
        loop {
            match calls::finalise(&self.db, log, outcome.clone()).await {
                Ok(done) => return Ok(done),
                Err(e) if !self.stop.is_cancelled() => {
                    tracing::warn!(error = ?e, retry_in = ?wait, "finalising failed, retrying");
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = self.stop.cancelled() => {}
                    }
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn relay(
        &self,
        req: &UpstreamRequest,
        tx: &mpsc::UnboundedSender<CallEvent>,
        started: Instant,
        progress: &mut Progress,
    ) -> Ended {
        let Progress {
            text,
            usage,
            first_token,
            opened,
        } = progress;
        let first_deadline = tokio::time::Instant::from_std(started) + self.first_token_timeout;
        let mut stream = tokio::select! {
            opened = tokio::time::timeout_at(first_deadline, self.client.stream(req)) => match opened {
                Ok(Ok(s)) => s,
                // The upstream answered with an error status or could not be reached: it did not
                // take the request, so it consumed nothing.
                Ok(Err(e)) => return Ended::Failed { reason: describe(&e), reached: false },
                Err(_) => return Ended::TimedOut("no first token"),
            },
            () = tx.closed() => return Ended::ClientGone,
            () = self.stop.cancelled() => return Ended::ShuttingDown,
        };
        *opened = true;
        let mut finish: Option<String> = None;
        // The first-token deadline holds until the model shows any output (reasoning included);
        // from then on, only gaps longer than the idle timeout count.
        let mut producing = false;
        loop {
            let deadline = if producing {
                tokio::time::Instant::now() + self.idle_timeout
            } else {
                first_deadline
            };
            let item = tokio::select! {
                item = tokio::time::timeout_at(deadline, stream.next()) => match item {
                    Ok(item) => item,
                    Err(_) => return Ended::TimedOut(if producing { "idle" } else { "no first token" }),
                },
                // Gone after the upstream finished (waiting for its usage chunk): the call is complete.
                () = tx.closed() => return finish.map_or(Ended::ClientGone, Ended::Finished),
                () = self.stop.cancelled() => return Ended::ShuttingDown,
            };
            let chunk = match item {
                None => break,
                Some(Ok(chunk)) => chunk,
                Some(Err(e)) => {
                    return Ended::Failed {
                        reason: describe(&e),
                        reached: true,
                    };
                }
            };
            if let Some(error) = chunk.error {
                let message = error["message"]
                    .as_str()
                    .unwrap_or("error event")
                    .chars()
                    .take(300)
                    .collect::<String>();
                return Ended::Failed {
                    reason: format!("upstream error event: {message}"),
                    reached: true,
                };
            }
            if let Some(u) = chunk.usage {
                *usage = Some(u);
            }
            for choice in chunk.choices {
                if choice
                    .delta
                    .reasoning_content
                    .as_ref()
                    .or(choice.delta.reasoning.as_ref())
                    .is_some_and(|r| !r.is_empty())
                {
                    producing = true;
                }
                if let Some(delta) = choice.delta.content.filter(|d| !d.is_empty()) {
                    producing = true;
                    first_token.get_or_insert_with(|| started.elapsed().as_millis() as u64);
                    text.push_str(&delta);
                    if tx.send(CallEvent::Delta(delta)).is_err() {
                        return Ended::ClientGone;
                    }
                }
                if let Some(reason) = choice.finish_reason {
                    finish = Some(reason);
                }
            }
        }
        match finish {
            Some(reason) => Ended::Finished(reason),
            None => Ended::Failed {
                reason: "the upstream ended the stream without finishing".into(),
                reached: true,
            },
        }
    }
}

/// `metadata` helpers for clients reading a log.
pub fn error_of(log: &prompt_logs::Model) -> Option<String> {
    log.metadata
        .as_ref()
        .and_then(|m| m.get("error"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// The built-in upstream's description, for start-up logs and `models`.
pub fn describe_upstream(info: &UpstreamInfo) -> String {
    if info.local {
        format!(
            "built-in local upstream at {} (deterministic test tokens, not a real model; set OPENAI_BASE_URL)",
            info.base_url
        )
    } else {
        info.base_url.clone()
    }
}
