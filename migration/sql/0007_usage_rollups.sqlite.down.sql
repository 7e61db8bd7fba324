-- Back to 0006 (see the PostgreSQL file).
DROP TRIGGER "token_usage_rollups";
CREATE TRIGGER "token_usage_rollup_daily" AFTER INSERT ON "token_usage"
BEGIN
	INSERT INTO "usage_daily" ("user_id", "day", "model", "calls", "prompt_tokens", "completion_tokens", "cost_microcents")
	VALUES (NEW."user_id", substr(NEW."created_at", 1, 10), NEW."model", 1,
	        NEW."prompt_tokens", NEW."completion_tokens", NEW."cost_microcents")
	ON CONFLICT ("user_id", "day", "model") DO UPDATE SET
		"calls" = "calls" + 1,
		"prompt_tokens" = "prompt_tokens" + excluded."prompt_tokens",
		"completion_tokens" = "completion_tokens" + excluded."completion_tokens",
		"cost_microcents" = "cost_microcents" + excluded."cost_microcents";
END;
