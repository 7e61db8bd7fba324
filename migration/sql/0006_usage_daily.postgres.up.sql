-- Addition for the usage summary: a per-user, per-UTC-day, per-model rollup of token_usage.
-- `usage` reads whole days from here (a few rows per day) and only the partial first and last
-- day of a window from token_usage, so its cost does not grow with the user's history.
-- A trigger keeps it: every token_usage insert, whoever writes it, lands in the rollup in the
-- same transaction, and token_usage rows are never updated or deleted (0003) except by the
-- user's cascade, which removes the user's rollup rows too.
-- No usage row may commit between the backfill's snapshot and the trigger's creation (a replica
-- still running the previous version during a rolling deploy): hold inserts off until this
-- migration commits.
LOCK TABLE "token_usage" IN SHARE ROW EXCLUSIVE MODE;

CREATE TABLE "usage_daily" (
	"user_id" text NOT NULL,
	"day" text NOT NULL,
	"model" text NOT NULL,
	"calls" bigint DEFAULT 0 NOT NULL,
	"prompt_tokens" bigint DEFAULT 0 NOT NULL,
	"completion_tokens" bigint DEFAULT 0 NOT NULL,
	"cost_microcents" bigint DEFAULT 0 NOT NULL,
	CONSTRAINT "usage_daily_pkey" PRIMARY KEY ("user_id", "day", "model"),
	CONSTRAINT "usage_daily_day_check" CHECK ("day" ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}$')
);
ALTER TABLE "usage_daily" ADD CONSTRAINT "usage_daily_user_id_user_id_fk" FOREIGN KEY ("user_id") REFERENCES "public"."user"("id") ON DELETE cascade ON UPDATE no action;

-- Existing usage, rolled up.
INSERT INTO "usage_daily" ("user_id", "day", "model", "calls", "prompt_tokens", "completion_tokens", "cost_microcents")
SELECT "user_id", to_char("created_at" AT TIME ZONE 'UTC', 'YYYY-MM-DD'), "model", count(*),
       sum("prompt_tokens"), sum("completion_tokens"), sum("cost_microcents")
FROM "token_usage"
GROUP BY 1, 2, 3;

CREATE FUNCTION "usage_daily_add"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO "usage_daily" AS d ("user_id", "day", "model", "calls", "prompt_tokens", "completion_tokens", "cost_microcents")
	VALUES (NEW."user_id", to_char(NEW."created_at" AT TIME ZONE 'UTC', 'YYYY-MM-DD'), NEW."model", 1,
	        NEW."prompt_tokens", NEW."completion_tokens", NEW."cost_microcents")
	ON CONFLICT ("user_id", "day", "model") DO UPDATE SET
		"calls" = d."calls" + 1,
		"prompt_tokens" = d."prompt_tokens" + EXCLUDED."prompt_tokens",
		"completion_tokens" = d."completion_tokens" + EXCLUDED."completion_tokens",
		"cost_microcents" = d."cost_microcents" + EXCLUDED."cost_microcents";
	RETURN NULL;
END
$$;
CREATE TRIGGER "token_usage_rollup_daily" AFTER INSERT ON "token_usage"
	FOR EACH ROW EXECUTE FUNCTION "usage_daily_add"();
