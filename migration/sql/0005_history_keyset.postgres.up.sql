-- Addition for the history feed: keyset pagination orders a user's logs by (created_at, id), so
-- the index carries id too. A page is then one index range scan, as cheap at page 10,000 as at
-- page 1, and exact when timestamps tie. (idx_log_user_time stays: it is part of the app's original schema.)
CREATE INDEX "idx_log_user_time_id" ON "prompt_logs" USING btree ("user_id", "created_at", "id");

-- Calls still in flight are found at every start and every lease renewal (to finalise the ones
-- whose process died): a partial index keeps that lookup independent of the history's size.
CREATE INDEX "idx_log_in_flight" ON "prompt_logs" USING btree ("created_at") WHERE "completion" IS NULL;
