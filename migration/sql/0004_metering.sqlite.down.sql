DROP TABLE "prompt_log_usage";
DROP TABLE "call_reservations";
DROP TABLE "usage_monthly";
