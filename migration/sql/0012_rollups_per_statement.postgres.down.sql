-- Back to 0009's trigger: once per inserted row.
DROP TRIGGER "token_usage_rollups" ON "token_usage";

CREATE OR REPLACE FUNCTION "usage_rollups_add"() RETURNS trigger LANGUAGE plpgsql
	SECURITY DEFINER SET search_path = pg_catalog, "public", pg_temp AS $$
BEGIN
	IF NEW."prompt_tokens" < 0 OR NEW."completion_tokens" < 0 OR NEW."cost_microcents" < 0 THEN
		RAISE EXCEPTION 'token_usage: tokens and cost cannot be negative'
			USING ERRCODE = 'check_violation';
	END IF;
	INSERT INTO "public"."usage_daily" AS d ("user_id", "day", "model", "calls", "prompt_tokens", "completion_tokens", "cost_microcents")
	VALUES (NEW."user_id", to_char(NEW."created_at" AT TIME ZONE 'UTC', 'YYYY-MM-DD'), NEW."model", 1,
	        NEW."prompt_tokens", NEW."completion_tokens", NEW."cost_microcents")
	ON CONFLICT ("user_id", "day", "model") DO UPDATE SET
		"calls" = d."calls" + 1,
		"prompt_tokens" = d."prompt_tokens" + EXCLUDED."prompt_tokens",
		"completion_tokens" = d."completion_tokens" + EXCLUDED."completion_tokens",
		"cost_microcents" = d."cost_microcents" + EXCLUDED."cost_microcents";
	INSERT INTO "public"."usage_monthly" AS m ("user_id", "month", "calls", "prompt_tokens", "completion_tokens", "cost_microcents")
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
