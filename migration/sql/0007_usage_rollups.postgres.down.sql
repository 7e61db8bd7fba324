-- Back to 0006: the trigger keeps usage_daily only (usage_monthly keeps its rows; the previous
-- server version adds to it itself).
DROP TRIGGER "token_usage_rollups" ON "token_usage";
DROP FUNCTION "usage_rollups_add"();
CREATE FUNCTION "usage_daily_add"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO "usage_daily" AS d ("user_id", "day", "model", "calls", "prompt_tokens", "completion_tokens", "cost_microcents")
	VALUES (NEW."user_id", to_char(NEW."created_at" AT TIME ZONE 'UTC', 'YYYY-MM-DD'), NEW."model", 1,
	        NEW."prompt_tokens", NEW."completion_tokens", NEW."cost_microcents")
	ON CONFLICT ("user_id", "day", "model") DO UPDATE SET
		"calls" = d."calls" + 1,
		"prompt_tokens" = d."prompt_tokens" + EXCLUDED."prompt_tokens",
		"completion_tokens" = d."completion_tokens" + EXCLUDED."completion_tokens",
		"cost_microcents" = d."cost_microcents" + EXCLUDED."cost_microcents";
	RETURN NULL;
END
$$;
CREATE TRIGGER "token_usage_rollup_daily" AFTER INSERT ON "token_usage"
	FOR EACH ROW EXECUTE FUNCTION "usage_daily_add"();
