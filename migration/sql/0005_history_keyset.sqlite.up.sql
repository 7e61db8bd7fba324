-- Addition for the history feed (see the PostgreSQL file).
CREATE INDEX "idx_log_user_time_id" ON "prompt_logs" ("user_id", "created_at", "id");

-- Calls still in flight are found at every start and every lease renewal (to finalise the ones
-- whose process died): a partial index keeps that lookup independent of the history's size.
CREATE INDEX "idx_log_in_flight" ON "prompt_logs" ("created_at") WHERE "completion" IS NULL;
