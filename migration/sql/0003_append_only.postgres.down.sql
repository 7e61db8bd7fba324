DROP TRIGGER "prompt_logs_no_truncate" ON "prompt_logs";
DROP TRIGGER "prompt_logs_append_only" ON "prompt_logs";
DROP TRIGGER "token_usage_no_truncate" ON "token_usage";
DROP TRIGGER "token_usage_append_only" ON "token_usage";
DROP FUNCTION "prompt_logs_append_only"();
DROP FUNCTION "token_usage_append_only"();
