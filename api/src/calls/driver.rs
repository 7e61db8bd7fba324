//! Runs one admitted call to the end: relays the upstream's chunks to whoever started the call,
//! stops at once when that receiver goes away, at a timeout or at shutdown, and finalises the
//! log and its usage row with what was received.

use std::time::{Duration, Instant};

use entity::prompt_logs::{self, CallStatus};
use futures_util::StreamExt;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::CallEvent;
use super::store::Outcome;
use crate::error::{AppError, AppResult};
use crate::llm::{self, LlmClient, UpstreamRequest, describe};
use crate::metering::prices::Price;

/// Whether a failed finalisation was the database refusing the outcome's values (retrying
/// cannot help); anything else may pass and is retried.
pub(super) fn refused(e: &AppError) -> bool {
    match e {
        AppError::Internal(source) => source
            .downcast_ref::<sea_orm::DbErr>()
            .is_some_and(crate::db::is_refusal),
        _ => false,
    }
}

/// The outcome to record when the database refused the real one: the same tokens (what was
/// consumed is billed), status `error`, no text, and why; the metadata is the call's own from
/// admission (anything the upstream wrote into it may be what was refused).
fn unstorable(log: &prompt_logs::Model, outcome: &Outcome) -> Outcome {
    let mut metadata = log.metadata.clone().unwrap_or_else(|| json!({}));
    if !metadata.is_object() {
        metadata = json!({});
    }
    metadata["error"] =
        json!("the call's result could not be stored; it is recorded without its text");
    metadata["unstorable"] = json!(true);
    Outcome {
        completion: String::new(),
        status: CallStatus::Error,
        metadata,
        ..*outcome
    }
}

/// The most completion text `max_tokens` tokens can decode to: no token of OpenAI's encodings
/// is longer than 128 bytes (cl100k and o200k); twice that, for other models' vocabularies.
fn max_completion_bytes(max_tokens: u32) -> usize {
    (max_tokens as usize)
        .saturating_mul(256)
        .saturating_add(4096)
}

/// The most reasoning (`reasoning_content`) a call may receive: 65,536 tokens of 256 bytes,
/// past what any model reasons (DeepSeek's reasoner: 32K tokens).
const MAX_REASONING_BYTES: usize = 16 << 20;

/// Runs one call to the end.
pub(super) struct Driver {
    /// Finalisations, written for the calls that end together (`store::finalise_many`).
    pub finalisations: super::Finalisations,
    pub client: LlmClient,
    pub first_token_timeout: Duration,
    pub idle_timeout: Duration,
    pub stop: CancellationToken,
    pub price: Price,
    pub finalise_retry: Duration,
    /// What this call relayed since its last checkpoint (see `leases`).
    pub unsaved: std::sync::Arc<super::tracker::Unsaved>,
    /// Where an outcome goes that could not be recorded in time (see `leases`).
    pub abandoned: std::sync::Arc<super::tracker::Abandoned>,
}

/// What a call received before it ended.
#[derive(Default)]
struct Progress {
    /// The completion so far.
    text: String,
    /// Usage, if the upstream reported it.
    usage: Option<llm::Usage>,
    /// Milliseconds to the first token.
    first_token: Option<u64>,
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
    pub async fn run(
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
        } = progress;
        // PostgreSQL stores no U+0000 in text or jsonb: an answer carrying one could never be
        // finalised. It is replaced (the count says how many), never dropped silently.
        let nuls = text.matches('\0').count();
        let text = if nuls > 0 {
            text.replace('\0', "\u{FFFD}")
        } else {
            text
        };
        let latency_ms = started.elapsed().as_millis() as i64;

        let mut metadata = log.metadata.clone().unwrap_or_else(|| json!({}));
        if let Some(ttft) = first_token {
            metadata["ttft_ms"] = json!(ttft);
        }
        let (status, reached) = match &ended {
            Ended::Finished(reason) => {
                // Upstream text: storable like the answer (no U+0000), and bounded.
                let reason: String = reason.replace('\0', "\u{FFFD}").chars().take(64).collect();
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
            // The request went upstream as soon as the call started (see `relay`): the prompt
            // was processed whether or not response headers arrived, so it is billed.
            Ended::ClientGone => {
                metadata["error"] = json!("client disconnected: the upstream request was aborted");
                (CallStatus::Error, true)
            }
            Ended::ShuttingDown => {
                metadata["error"] = json!("server shutting down: the upstream request was aborted");
                (CallStatus::Error, true)
            }
            Ended::TimedOut(which) => {
                metadata["error"] = json!(format!("upstream timed out ({which})"));
                (CallStatus::Error, true)
            }
        };
        // Exact when the upstream reported usage; otherwise counted with the model's tokenizer.
        // A request the upstream refused (HTTP error, no connection) consumed nothing.
        // Upstream figures are bounded to what a log holds: a hostile or broken upstream's
        // negative or enormous usage can neither lower the meter nor overflow it.
        let bounded = |n: i64| n.clamp(0, i64::from(i32::MAX));
        let (prompt_tokens, completion_tokens, source) = match usage {
            Some(u) => (
                bounded(u.prompt_tokens),
                bounded(u.completion_tokens),
                "upstream",
            ),
            None if reached => (
                i64::from(log.prompt_tokens),
                tokenizer::count_text(&req.model, &text) as i64,
                "local",
            ),
            None => (0, 0, "none"),
        };
        metadata["usage_source"] = json!(source);
        if nuls > 0 {
            metadata["nul_replaced"] = json!(nuls);
        }
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
                // Left in flight: the next start finalises it (see `Calls::recover` in `leases`).
                tracing::error!(error = ?e, "could not finalise the call");
            }
        }
    }

    /// Record the outcome. While the database is unreachable or busy, retried with backoff
    /// for at most `finalise_retry` (`CALL_FINALISE_RETRY_SECS`) or until shutdown; then the
    /// outcome is handed to this process's lease sweep (`abandoned`), which records it exactly
    /// once the database is back (a crash before that falls back to the last checkpoint). A
    /// refusal of the outcome's values is not retried: the call is recorded at once as `error`,
    /// billed the same, without the text that could not be stored.
    async fn finalise_with_retry(
        &self,
        log: &prompt_logs::Model,
        outcome: Outcome,
    ) -> AppResult<prompt_logs::Model> {
        let deadline = Instant::now() + self.finalise_retry;
        let mut outcome = outcome;
        let mut fell_back = false;
        let mut wait = Duration::from_millis(100);
        loop {
            let e = match self
                .finalisations
                .answer((log.clone(), outcome.clone()))
                .await
            {
                Ok(done) => return Ok(done),
                Err(e) => e,
            };
            if refused(&e) {
                if fell_back {
                    // Even the plain fallback is refused: left to the lease sweep, which
                    // records the call from its checkpoint.
                    tracing::error!(error = ?e, "the call's fallback outcome was refused too");
                    return Err(e);
                }
                tracing::error!(error = ?e, "the call's outcome cannot be stored; recording it as an error without its text");
                outcome = unstorable(log, &outcome);
                fell_back = true;
                continue;
            }
            if self.stop.is_cancelled() || Instant::now() + wait > deadline {
                self.abandoned.hand_over(log.id, outcome);
                return Err(e);
            }
            tracing::warn!(error = ?e, retry_in = ?wait, "finalising failed, retrying");
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.stop.cancelled() => {}
            }
            wait = (wait * 2).min(Duration::from_secs(5));
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
        } = progress;
        let first_deadline = tokio::time::Instant::from_std(started) + self.first_token_timeout;
        // Biased: the request is handed to the HTTP client before a departed client or shutdown
        // is noticed, so "sent upstream" (and billed) holds from the call's start.
        let mut stream = tokio::select! {
            biased;
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
        let mut finish: Option<String> = None;
        let max_text = max_completion_bytes(req.max_tokens);
        // Bytes of reasoning received (not kept: it is not part of the answer).
        let mut reasoned = 0usize;
        // The first-token deadline holds until the model shows any output (reasoning included);
        // from then on, only gaps longer than the idle timeout count.
        let mut producing = false;
        // Made once for the whole stream, not per chunk: each of these registers with a waiter
        // list or the timer wheel when made, and a later deadline is set without a new entry.
        let deadline = tokio::time::sleep_until(first_deadline);
        let closed = tx.closed();
        let stopping = self.stop.cancelled();
        tokio::pin!(deadline, closed, stopping);
        loop {
            if producing {
                deadline
                    .as_mut()
                    .reset(tokio::time::Instant::now() + self.idle_timeout);
            }
            // In this order: a chunk that is ready wins over a deadline that passed meanwhile
            // (as `timeout_at` would have it), and the deadline is starved only by chunks.
            let item = tokio::select! {
                biased;
                // Gone after the upstream finished (waiting for its usage chunk): the call is complete.
                () = &mut closed => return finish.map_or(Ended::ClientGone, Ended::Finished),
                () = &mut stopping => return Ended::ShuttingDown,
                item = stream.next() => item,
                () = &mut deadline => {
                    return Ended::TimedOut(if producing { "idle" } else { "no first token" });
                }
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
                // The upstream's own words may name keys, organisations or internals: they go
                // to the server log, the client and the log row get a generic reason.
                let detail: String = error["message"]
                    .as_str()
                    .unwrap_or("")
                    .chars()
                    .take(300)
                    .collect();
                tracing::warn!(detail = %detail.escape_debug(), "upstream error event mid-stream");
                return Ended::Failed {
                    reason: "the upstream reported an error event mid-stream".into(),
                    reached: true,
                };
            }
            if let Some(u) = chunk.usage {
                *usage = Some(u);
            }
            for choice in chunk.choices {
                let reasoning = choice
                    .delta
                    .reasoning_content
                    .as_ref()
                    .or(choice.delta.reasoning.as_ref())
                    .map_or(0, String::len);
                if reasoning > 0 {
                    producing = true;
                    // Some models' reasoning is outside `max_tokens` (deepseek-reasoner's), so
                    // it has a bound of its own, past any model's: an upstream that reasons
                    // without end would otherwise hold the call open for ever.
                    reasoned += reasoning;
                    if reasoned > MAX_REASONING_BYTES {
                        return Ended::Failed {
                            reason: "the upstream reasoned past any model's limit".into(),
                            reached: true,
                        };
                    }
                }
                if let Some(delta) = choice.delta.content.filter(|d| !d.is_empty()) {
                    producing = true;
                    first_token.get_or_insert_with(|| started.elapsed().as_millis() as u64);
                    if text.len() + delta.len() > max_text {
                        // More than `max_tokens` could ever decode to: an upstream that ignores
                        // the limit would otherwise grow this call's text (and its row) without
                        // end. What arrived within the bound is kept and metered.
                        return Ended::Failed {
                            reason: "the upstream sent more text than max_tokens allows".into(),
                            reached: true,
                        };
                    }
                    text.push_str(&delta);
                    // For the checkpoints, storable as the final text will be (NUL → U+FFFD).
                    if delta.contains('\0') {
                        self.unsaved.push(&delta.replace('\0', "\u{FFFD}"));
                    } else {
                        self.unsaved.push(&delta);
                    }
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
