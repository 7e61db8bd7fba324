DROP TABLE "prompt_logs";
DROP TABLE "token_usage";
DROP TABLE "user_profiles";
