-- Addition for defence in depth: the role request traffic runs as may read and write rows, and
-- nothing more. Migrations run as the role that owns the tables (DATABASE_URL_DIRECT); the
-- server's request pool (DATABASE_URL) should log in as a role that is a member of
-- "aiwrapper_runtime" and owns nothing, so a bug or an injected statement on that path cannot
-- change the schema, disable the append-only triggers, rewrite the meter or raise a budget:
--   * no DDL (it owns no table: ALTER, DROP, DISABLE TRIGGER and TRUNCATE need ownership);
--   * token_usage, prompt_log_usage: SELECT and INSERT only (no UPDATE or DELETE at all; rows
--     still go with their user, as the cascade runs with the owner's rights);
--   * prompt_logs: UPDATE only of the columns finalisation writes (the trigger of 0003 still
--     allows it only while the call is in flight);
--   * user_profiles: UPDATE of display_name and default_model only (budgets are the operator's,
--     through `admin`, which uses the direct endpoint);
--   * usage_monthly: a row may be created and locked (its "calls" rewritten with itself), never
--     given tokens or cost; usage_daily read only. The rollup trigger adds usage with the owner's
--     rights (SECURITY DEFINER, with a fixed search_path);
--   * user_limits (operator overrides) and seaql_migrations: read only.
-- Better Auth's four tables get full DML: Better Auth itself writes them as the runtime role of
-- an app that shares this database.
-- The group role is created here when it does not exist (that needs CREATEROLE, as Neon's
-- owner role has; otherwise create it first: CREATE ROLE aiwrapper_runtime NOLOGIN). It is
-- cluster-wide, so databases that share a cluster share it. Every later migration that adds a
-- table grants its rights here too; tests/expected/schema.postgres.txt lists them.
DO $$
BEGIN
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'aiwrapper_runtime') THEN
		BEGIN
			CREATE ROLE "aiwrapper_runtime" NOLOGIN;
		EXCEPTION
			WHEN duplicate_object OR unique_violation THEN NULL; -- created concurrently
			WHEN insufficient_privilege THEN
				RAISE EXCEPTION 'the role "aiwrapper_runtime" does not exist and this role may not create it'
					USING HINT = 'as a role with CREATEROLE: CREATE ROLE aiwrapper_runtime NOLOGIN; then run the migrations again';
		END;
	END IF;
END
$$;

GRANT USAGE ON SCHEMA "public" TO "aiwrapper_runtime";
GRANT SELECT, INSERT, UPDATE, DELETE ON "user", "session", "account", "verification" TO "aiwrapper_runtime";
GRANT SELECT, INSERT ON "user_profiles" TO "aiwrapper_runtime";
GRANT UPDATE ("display_name", "default_model") ON "user_profiles" TO "aiwrapper_runtime";
GRANT SELECT, INSERT ON "token_usage", "prompt_log_usage" TO "aiwrapper_runtime";
GRANT SELECT, INSERT ON "prompt_logs" TO "aiwrapper_runtime";
GRANT UPDATE ("completion", "prompt_tokens", "completion_tokens", "latency_ms", "status", "metadata")
	ON "prompt_logs" TO "aiwrapper_runtime";
GRANT SELECT, INSERT, UPDATE, DELETE ON "call_reservations" TO "aiwrapper_runtime";
GRANT SELECT ON "usage_monthly", "usage_daily", "user_limits", "seaql_migrations" TO "aiwrapper_runtime";
GRANT INSERT ("user_id", "month") ON "usage_monthly" TO "aiwrapper_runtime";
GRANT UPDATE ("calls") ON "usage_monthly" TO "aiwrapper_runtime";

-- Before PostgreSQL 15 every role may create objects in "public"; nobody but the owner should.
REVOKE CREATE ON SCHEMA "public" FROM PUBLIC;

-- The rollup trigger adds usage with the owner's rights, so it checks what it adds: a usage
-- row with negative tokens or cost (which the request role could insert) would lower a user's
-- metered usage and reopen their budget.
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

-- What the request role can still do, by design: write a new profile's budget (the server sets
-- it from DEFAULT_MONTHLY_TOKEN_BUDGET at sign-up), and delete a user, whose rows (usage
-- included) go with them by the seed's cascades, as Better Auth's deleteUser needs.
