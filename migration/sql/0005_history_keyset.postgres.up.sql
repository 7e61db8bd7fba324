-- Addition for the history feed: keyset pagination orders a user's logs by (created_at, id), so
-- the index carries id too. A page is then one index range scan, as cheap at page 10,000 as at
-- page 1, and exact when timestamps tie. (idx_log_user_time stays: it is the seed's.)
CREATE INDEX "idx_log_user_time_id" ON "prompt_logs" USING btree ("user_id", "created_at", "id");
