-- The rollup trigger (0007, hardened in 0009) ran once per inserted usage row, each run an
-- upsert of the user's day and month rows. Within one transaction those upserts pile up
-- versions of the same two rows, and each upsert walks the versions before it: a statement
-- that inserts n usage rows of one user costs O(n²). The server inserts a few rows at a time and
-- never noticed; another writer importing or backfilling usage does (200,000 rows of one user
-- in one statement ran for over 17 minutes of CPU without finishing). From here on the trigger
-- runs once per statement over the rows it inserted (a transition table), adding each (user,
-- day, model) and (user, month) group once, in key order: O(n), and the same rows in the same
-- order whichever writer inserts. Same owner's rights and search_path as 0009, same refusal of
-- negative figures.
DROP TRIGGER "token_usage_rollups" ON "token_usage";

CREATE OR REPLACE FUNCTION "usage_rollups_add"() RETURNS trigger LANGUAGE plpgsql
	SECURITY DEFINER SET search_path = pg_catalog, "public", pg_temp AS $$
BEGIN
	IF EXISTS (SELECT 1 FROM "inserted"
	           WHERE "prompt_tokens" < 0 OR "completion_tokens" < 0 OR "cost_microcents" < 0) THEN
		RAISE EXCEPTION 'token_usage: tokens and cost cannot be negative'
			USING ERRCODE = 'check_violation';
	END IF;
	INSERT INTO "public"."usage_daily" AS d ("user_id", "day", "model", "calls", "prompt_tokens", "completion_tokens", "cost_microcents")
	SELECT "user_id", to_char("created_at" AT TIME ZONE 'UTC', 'YYYY-MM-DD'), "model", count(*),
	       sum("prompt_tokens"), sum("completion_tokens"), sum("cost_microcents")
	FROM "inserted"
	GROUP BY 1, 2, 3
	ORDER BY 1, 2, 3
	ON CONFLICT ("user_id", "day", "model") DO UPDATE SET
		"calls" = d."calls" + EXCLUDED."calls",
		"prompt_tokens" = d."prompt_tokens" + EXCLUDED."prompt_tokens",
		"completion_tokens" = d."completion_tokens" + EXCLUDED."completion_tokens",
		"cost_microcents" = d."cost_microcents" + EXCLUDED."cost_microcents";
	INSERT INTO "public"."usage_monthly" AS m ("user_id", "month", "calls", "prompt_tokens", "completion_tokens", "cost_microcents")
	SELECT "user_id", to_char("created_at" AT TIME ZONE 'UTC', 'YYYY-MM'), count(*),
	       sum("prompt_tokens"), sum("completion_tokens"), sum("cost_microcents")
	FROM "inserted"
	GROUP BY 1, 2
	ORDER BY 1, 2
	ON CONFLICT ("user_id", "month") DO UPDATE SET
		"calls" = m."calls" + EXCLUDED."calls",
		"prompt_tokens" = m."prompt_tokens" + EXCLUDED."prompt_tokens",
		"completion_tokens" = m."completion_tokens" + EXCLUDED."completion_tokens",
		"cost_microcents" = m."cost_microcents" + EXCLUDED."cost_microcents";
	RETURN NULL;
END
$$;

CREATE TRIGGER "token_usage_rollups" AFTER INSERT ON "token_usage"
	REFERENCING NEW TABLE AS "inserted"
	FOR EACH STATEMENT EXECUTE FUNCTION "usage_rollups_add"();
