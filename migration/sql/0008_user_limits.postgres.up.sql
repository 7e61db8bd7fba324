-- Addition for per-user call limits: an operator's overrides of USER_MAX_CONCURRENT_CALLS and
-- USER_CALLS_PER_MINUTE for one user (`admin set-limits`). A row exists only for users with an
-- override; NULL in a column is the server's default, 0 is unlimited. Goes with its user.
CREATE TABLE "user_limits" (
	"user_id" text PRIMARY KEY NOT NULL,
	"max_concurrent_calls" integer,
	"calls_per_minute" integer,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "user_limits_max_concurrent_calls_check" CHECK ("max_concurrent_calls" >= 0),
	CONSTRAINT "user_limits_calls_per_minute_check" CHECK ("calls_per_minute" >= 0)
);
ALTER TABLE "user_limits" ADD CONSTRAINT "user_limits_user_id_user_id_fk" FOREIGN KEY ("user_id") REFERENCES "public"."user"("id") ON DELETE cascade ON UPDATE no action;
