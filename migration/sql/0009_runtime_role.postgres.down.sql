ALTER FUNCTION "usage_rollups_add"() SECURITY INVOKER RESET search_path;
REVOKE ALL ON "user", "session", "account", "verification", "user_profiles", "token_usage",
	"prompt_log_usage", "prompt_logs", "call_reservations", "usage_monthly", "usage_daily",
	"user_limits", "seaql_migrations" FROM "aiwrapper_runtime";
REVOKE USAGE ON SCHEMA "public" FROM "aiwrapper_runtime";
-- The role itself stays: it is cluster-wide and other databases may use it.
