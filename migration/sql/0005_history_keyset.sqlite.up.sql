-- Addition for the history feed (see the PostgreSQL file).
CREATE INDEX "idx_log_user_time_id" ON "prompt_logs" ("user_id", "created_at", "id");
