-- Addition for the usage summary (see the PostgreSQL file).
CREATE TABLE "usage_daily" (
	"user_id" TEXT NOT NULL,
	"day" TEXT NOT NULL CHECK ("day" GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]'),
	"model" TEXT NOT NULL,
	"calls" INTEGER DEFAULT 0 NOT NULL,
	"prompt_tokens" INTEGER DEFAULT 0 NOT NULL,
	"completion_tokens" INTEGER DEFAULT 0 NOT NULL,
	"cost_microcents" INTEGER DEFAULT 0 NOT NULL,
	PRIMARY KEY ("user_id", "day", "model"),
	CONSTRAINT "usage_daily_user_id_user_id_fk" FOREIGN KEY ("user_id") REFERENCES "user" ("id") ON DELETE CASCADE ON UPDATE NO ACTION
) STRICT;

-- Existing usage, rolled up (timestamps are RFC 3339 text in UTC: the first ten characters
-- are the UTC day).
INSERT INTO "usage_daily" ("user_id", "day", "model", "calls", "prompt_tokens", "completion_tokens", "cost_microcents")
SELECT "user_id", substr("created_at", 1, 10), "model", count(*),
       sum("prompt_tokens"), sum("completion_tokens"), sum("cost_microcents")
FROM "token_usage"
GROUP BY 1, 2, 3;

-- Kept by a trigger on every token_usage insert (see the PostgreSQL file).
CREATE TRIGGER "token_usage_rollup_daily" AFTER INSERT ON "token_usage"
BEGIN
	INSERT INTO "usage_daily" ("user_id", "day", "model", "calls", "prompt_tokens", "completion_tokens", "cost_microcents")
	VALUES (NEW."user_id", substr(NEW."created_at", 1, 10), NEW."model", 1,
	        NEW."prompt_tokens", NEW."completion_tokens", NEW."cost_microcents")
	ON CONFLICT ("user_id", "day", "model") DO UPDATE SET
		"calls" = "calls" + 1,
		"prompt_tokens" = "prompt_tokens" + excluded."prompt_tokens",
		"completion_tokens" = "completion_tokens" + excluded."completion_tokens",
		"cost_microcents" = "cost_microcents" + excluded."cost_microcents";
END;
