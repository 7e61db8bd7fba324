DROP TRIGGER "token_usage_rollup_daily" ON "token_usage";
DROP FUNCTION "usage_daily_add"();
DROP TABLE "usage_daily";
