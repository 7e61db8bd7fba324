DROP TABLE "prompt_log_usage";
DROP FUNCTION "prompt_log_usage_append_only"();
DROP TABLE "call_reservations";
DROP TABLE "usage_monthly";
