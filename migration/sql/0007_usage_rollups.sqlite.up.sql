-- One rollup mechanism: the database keeps usage_monthly too (see the PostgreSQL file).
-- Rebuilt from token_usage (timestamps are RFC 3339 text in UTC: the first seven characters
-- are the UTC month).
DELETE FROM "usage_monthly";
INSERT INTO "usage_monthly" ("user_id", "month", "calls", "prompt_tokens", "completion_tokens", "cost_microcents")
SELECT "user_id", substr("created_at", 1, 7), count(*),
       sum("prompt_tokens"), sum("completion_tokens"), sum("cost_microcents")
FROM "token_usage"
GROUP BY 1, 2;

DROP TRIGGER "token_usage_rollup_daily";
CREATE TRIGGER "token_usage_rollups" AFTER INSERT ON "token_usage"
BEGIN
	INSERT INTO "usage_daily" ("user_id", "day", "model", "calls", "prompt_tokens", "completion_tokens", "cost_microcents")
	VALUES (NEW."user_id", substr(NEW."created_at", 1, 10), NEW."model", 1,
	        NEW."prompt_tokens", NEW."completion_tokens", NEW."cost_microcents")
	ON CONFLICT ("user_id", "day", "model") DO UPDATE SET
		"calls" = "calls" + 1,
		"prompt_tokens" = "prompt_tokens" + excluded."prompt_tokens",
		"completion_tokens" = "completion_tokens" + excluded."completion_tokens",
		"cost_microcents" = "cost_microcents" + excluded."cost_microcents";
	INSERT INTO "usage_monthly" ("user_id", "month", "calls", "prompt_tokens", "completion_tokens", "cost_microcents")
	VALUES (NEW."user_id", substr(NEW."created_at", 1, 7), 1,
	        NEW."prompt_tokens", NEW."completion_tokens", NEW."cost_microcents")
	ON CONFLICT ("user_id", "month") DO UPDATE SET
		"calls" = "calls" + 1,
		"prompt_tokens" = "prompt_tokens" + excluded."prompt_tokens",
		"completion_tokens" = "completion_tokens" + excluded."completion_tokens",
		"cost_microcents" = "cost_microcents" + excluded."cost_microcents";
END;
