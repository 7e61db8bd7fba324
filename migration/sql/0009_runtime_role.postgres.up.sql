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

ALTER FUNCTION "usage_rollups_add"() SECURITY DEFINER SET search_path = "public", pg_temp;
