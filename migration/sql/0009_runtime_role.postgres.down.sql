CREATE OR REPLACE FUNCTION "usage_rollups_add"() RETURNS trigger LANGUAGE plpgsql SECURITY INVOKER AS $$
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
ALTER FUNCTION "usage_rollups_add"() RESET search_path;
REVOKE ALL ON "user", "session", "account", "verification", "user_profiles", "token_usage",
	"prompt_log_usage", "prompt_logs", "call_reservations", "usage_monthly", "usage_daily",
	"user_limits", "seaql_migrations" FROM "aiwrapper_runtime";
REVOKE USAGE ON SCHEMA "public" FROM "aiwrapper_runtime";
GRANT CREATE ON SCHEMA "public" TO PUBLIC;
-- The role itself stays: it is cluster-wide and other databases may use it.
