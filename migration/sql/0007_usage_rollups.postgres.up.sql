-- One rollup mechanism. usage_monthly (0004) was kept by the server's finalisation code, so
-- token_usage rows that other writers insert (an app sharing this database) never reached it,
-- and budget admission and tokensUsedThisMonth missed them. From here on the database keeps both
-- rollups, usage_daily and usage_monthly, in the one trigger every token_usage insert fires,
-- whoever inserts it; the server only reads them (and locks a user's month row at admission).
-- As in 0006, no usage row may commit between the rebuild's snapshot and the new trigger.
LOCK TABLE "token_usage" IN SHARE ROW EXCLUSIVE MODE;

-- Rebuilt from token_usage, so rows the old code never counted are counted now.
DELETE FROM "usage_monthly";
INSERT INTO "usage_monthly" ("user_id", "month", "calls", "prompt_tokens", "completion_tokens", "cost_microcents")
SELECT "user_id", to_char("created_at" AT TIME ZONE 'UTC', 'YYYY-MM'), count(*),
       sum("prompt_tokens"), sum("completion_tokens"), sum("cost_microcents")
FROM "token_usage"
GROUP BY 1, 2;

DROP TRIGGER "token_usage_rollup_daily" ON "token_usage";
DROP FUNCTION "usage_daily_add"();

CREATE FUNCTION "usage_rollups_add"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO "usage_daily" AS d ("user_id", "day", "model", "calls", "prompt_tokens", "completion_tokens", "cost_microcents")
	VALUES (NEW."user_id", to_char(NEW."created_at" AT TIME ZONE 'UTC', 'YYYY-MM-DD'), NEW."model", 1,
	        NEW."prompt_tokens", NEW."completion_tokens", NEW."cost_microcents")
	ON CONFLICT ("user_id", "day", "model") DO UPDATE SET
		"calls" = d."calls" + 1,
		"prompt_tokens" = d."prompt_tokens" + EXCLUDED."prompt_tokens",
		"completion_tokens" = d."completion_tokens" + EXCLUDED."completion_tokens",
		"cost_microcents" = d."cost_microcents" + EXCLUDED."cost_microcents";
	INSERT INTO "usage_monthly" AS m ("user_id", "month", "calls", "prompt_tokens", "completion_tokens", "cost_microcents")
	VALUES (NEW."user_id", to_char(NEW."created_at" AT TIME ZONE 'UTC', 'YYYY-MM'), 1,
	        NEW."prompt_tokens", NEW."completion_tokens", NEW."cost_microcents")
	ON CONFLICT ("user_id", "month") DO UPDATE SET
		"calls" = m."calls" + 1,
		"prompt_tokens" = m."prompt_tokens" + EXCLUDED."prompt_tokens",
		"completion_tokens" = m."completion_tokens" + EXCLUDED."completion_tokens",
		"cost_microcents" = m."cost_microcents" + EXCLUDED."cost_microcents";
	RETURN NULL;
END
$$;
CREATE TRIGGER "token_usage_rollups" AFTER INSERT ON "token_usage"
	FOR EACH ROW EXECUTE FUNCTION "usage_rollups_add"();
