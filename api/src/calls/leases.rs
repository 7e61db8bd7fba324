//! Leases and recovery: this process renews the leases of the calls it runs, and finalises calls
//! nobody runs any more (their process crashed or was killed, or could not finalise them).

use std::sync::Arc;

use entity::prompt_logs::CallStatus;
use serde_json::json;

use super::Calls;
use super::store::{self, Outcome};
use crate::error::AppResult;
use crate::time::now_micros;

impl Calls {
    /// Finalise stranded calls: status `error`, with the text relayed up to their last
    /// checkpoint as the completion, metered at their prompt tokens (what the upstream had
    /// certainly received) plus that text counted with the model's tokenizer. Live calls of
    /// other replicas are left alone (see `store::stranded`). Runs at start and then every
    /// third of a lease.
    pub async fn recover(&self) -> AppResult<usize> {
        // The cutoff before the snapshot: see `store::stranded`.
        let cutoff = now_micros();
        let running = self.in_flight.snapshot();
        let stranded = store::stranded(
            &self.sweeps,
            &self.instance,
            self.config.lease,
            &running,
            cutoff,
        )
        .await?;
        // Handed-over outcomes whose call is not stranded here any more were finalised
        // elsewhere (or went with their user): nothing to keep them for.
        self.abandoned
            .retain(&stranded.iter().map(|(log, _)| log.id).collect());
        let mut finalised = 0;
        for (log, checkpoint) in &stranded {
            // An outcome this process's own call task could not record in time is exact.
            let handed_over = self.abandoned.take(&log.id);
            let outcome = match handed_over.clone() {
                Some(outcome) => outcome,
                None => self.outcome_from_checkpoint(log, checkpoint),
            };
            // One call that cannot be finalised now does not hold up the others.
            match store::finalise(&self.sweeps, &self.metrics, log, outcome).await {
                Ok(_) => finalised += 1,
                Err(e) => {
                    tracing::warn!(log_id = %log.id, error = ?e, "could not finalise a stranded call; next sweep");
                    // Kept for the next sweep unless the database refused it: then the next
                    // sweep records the call from its checkpoint instead.
                    if let Some(outcome) = handed_over.filter(|_| !super::driver::refused(&e)) {
                        self.abandoned.hand_over(log.id, outcome);
                    }
                }
            }
        }
        Ok(finalised)
    }

    /// A stranded call's outcome from its last checkpoint.
    fn outcome_from_checkpoint(
        &self,
        log: &entity::prompt_logs::Model,
        checkpoint: &str,
    ) -> Outcome {
        let price = self.config.prices.get(&log.model);
        let prompt_tokens = i64::from(log.prompt_tokens);
        let completion_tokens = tokenizer::count_text(&log.model, checkpoint) as i64;
        let mut metadata = log.metadata.clone().unwrap_or_else(|| json!({}));
        metadata["error"] = json!("interrupted: the server stopped before the call finished");
        if checkpoint.is_empty() {
            metadata["usage_source"] = json!("estimate");
        } else {
            // The completion and its tokens are what the last checkpoint held: the client
            // may have received up to one checkpoint interval more.
            metadata["usage_source"] = json!("checkpoint");
            metadata["recovered_from_checkpoint"] = json!(true);
        }
        Outcome {
            completion: checkpoint.to_owned(),
            prompt_tokens,
            completion_tokens,
            latency_ms: (now_micros() - log.created_at).num_milliseconds(),
            status: CallStatus::Error,
            metadata,
            cost_microcents: price.map_or(0, |p| p.cost(prompt_tokens, completion_tokens)),
        }
    }

    /// Checkpoint every running call's progress at least every `CALL_CHECKPOINT_MS`, until
    /// shutdown (the calls' own finalisation records the rest). The loop ticks once per slice
    /// of that interval and writes the calls that are due (`InFlight::take_due`).
    pub async fn checkpoint_progress(self: Arc<Self>) {
        let tick = self.in_flight.tick();
        loop {
            tokio::select! {
                () = tokio::time::sleep(tick) => {}
                () = self.stop.cancelled() => return,
            }
            let now = std::time::Instant::now();
            self.checkpoint_due(now, now + tick).await;
        }
    }

    /// Checkpoint the running calls due before `horizon` (text that fails to save is kept for
    /// their next one).
    async fn checkpoint_due(&self, now: std::time::Instant, horizon: std::time::Instant) {
        let unsaved = self.in_flight.take_due(now, horizon);
        let mut chunks = Vec::new();
        let mut rest = unsaved;
        while !rest.is_empty() {
            let tail = rest.split_off(rest.len().min(store::CHECKPOINTS_PER_STATEMENT));
            chunks.push(std::mem::replace(&mut rest, tail));
        }
        for chunk in chunks {
            let batch: Vec<(uuid::Uuid, usize, &str)> = chunk
                .iter()
                .map(|(id, _, saved, t)| (*id, *saved, t.as_str()))
                .collect();
            match store::checkpoint(&self.sweeps, &batch).await {
                Ok(()) => {
                    for (_, slot, _, text) in &chunk {
                        slot.saved(text, now);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = ?e, calls = batch.len(), "could not checkpoint running calls");
                    for (_, slot, _, text) in chunk {
                        slot.restore(text);
                    }
                }
            }
        }
    }

    /// Keep this process's leases alive and finalise stranded calls, until shutdown.
    pub async fn maintain(self: Arc<Self>) {
        let every = self.config.lease / 3;
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = self.stop.cancelled() => return,
            }
            // The calls not renewed since the last sweep: at each sweep every lease is at most
            // a third of a lease old, as when each sweep renewed them all.
            let now = std::time::Instant::now();
            let stale = self.in_flight.leases_older_than(now, every);
            let ids: Vec<_> = stale.iter().map(|(id, _)| *id).collect();
            match store::renew(&self.sweeps, &ids).await {
                Ok(()) => stale.iter().for_each(|(_, call)| call.renewed(now)),
                Err(e) => tracing::warn!(error = ?e, "could not renew call leases"),
            }
            match self.recover().await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(calls = n, "finalised stranded calls as errors"),
                Err(e) => tracing::warn!(error = ?e, "could not finalise stranded calls"),
            }
        }
    }
}
