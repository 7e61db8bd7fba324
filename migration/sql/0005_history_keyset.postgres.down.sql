DROP INDEX "idx_log_user_time_id";
