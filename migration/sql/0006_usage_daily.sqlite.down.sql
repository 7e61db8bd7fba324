DROP TRIGGER "token_usage_rollup_daily";
DROP TABLE "usage_daily";
