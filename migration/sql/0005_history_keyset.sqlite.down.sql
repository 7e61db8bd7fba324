DROP INDEX "idx_log_in_flight";
DROP INDEX "idx_log_user_time_id";
