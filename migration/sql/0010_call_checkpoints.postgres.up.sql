-- Addition for crash recovery: what a running call had relayed so far, checkpointed beside its
-- lease. prompt_logs.completion stays NULL while a call runs (the seed's rule), so the text goes
-- here: the owning process appends what it relayed since the last checkpoint, for all its running
-- calls in one statement about once a second (CALL_CHECKPOINT_MS). When the process dies, the
-- lease sweep that finalises the call (any replica, or the next start) records this text as the
-- completion and bills it (counted with the model's tokenizer), so a crash loses at most one
-- checkpoint interval of a stream instead of all of it. The row goes when the call is finalised.
-- The request role already may update call_reservations (0009).
ALTER TABLE "call_reservations" ADD COLUMN "checkpoint" text DEFAULT '' NOT NULL;
