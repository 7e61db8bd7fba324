-- Additions for metering and budgets (beyond the app's original tables; each says why):
--
-- usage_monthly: a per-user, per-UTC-month rollup of token_usage, maintained in the same
-- transaction that appends each token_usage row. Budget admission and tokensUsedThisMonth read
-- one row instead of scanning the user's history, and the admission transaction locks this row
-- so concurrent calls of one user are admitted one at a time.
CREATE TABLE "usage_monthly" (
	"user_id" text NOT NULL,
	"month" text NOT NULL,
	"calls" bigint DEFAULT 0 NOT NULL,
	"prompt_tokens" bigint DEFAULT 0 NOT NULL,
	"completion_tokens" bigint DEFAULT 0 NOT NULL,
	"cost_microcents" bigint DEFAULT 0 NOT NULL,
	CONSTRAINT "usage_monthly_pkey" PRIMARY KEY ("user_id", "month"),
	CONSTRAINT "usage_monthly_month_check" CHECK ("month" ~ '^[0-9]{4}-[0-9]{2}$')
);
ALTER TABLE "usage_monthly" ADD CONSTRAINT "usage_monthly_user_id_user_id_fk" FOREIGN KEY ("user_id") REFERENCES "public"."user"("id") ON DELETE cascade ON UPDATE no action;

-- call_reservations: what each in-flight call may still use (its prompt plus its maxTokens).
-- Admission counts these with the month's usage so that simultaneous calls cannot all slip
-- under the budget; the row goes when the call is finalised. It is also the call's lease: the
-- server process running the call ("owner") renews "heartbeat_at" while it runs, and any
-- process may finalise a call whose lease has lapsed (its process died), but never a live
-- call of another replica.
CREATE TABLE "call_reservations" (
	"log_id" uuid PRIMARY KEY NOT NULL,
	"user_id" text NOT NULL,
	"tokens" bigint NOT NULL,
	"owner" text NOT NULL,
	"heartbeat_at" timestamp with time zone DEFAULT now() NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "call_reservations_tokens_check" CHECK ("tokens" >= 0)
);
ALTER TABLE "call_reservations" ADD CONSTRAINT "call_reservations_log_id_prompt_logs_id_fk" FOREIGN KEY ("log_id") REFERENCES "public"."prompt_logs"("id") ON DELETE cascade ON UPDATE no action;
ALTER TABLE "call_reservations" ADD CONSTRAINT "call_reservations_user_id_user_id_fk" FOREIGN KEY ("user_id") REFERENCES "public"."user"("id") ON DELETE cascade ON UPDATE no action;
CREATE INDEX "idx_reservations_user" ON "call_reservations" USING btree ("user_id");

-- prompt_log_usage: which token_usage row meters which call. The primary key on log_id and the
-- unique usage_id make "exactly one usage row per call" a database fact, and give a log its cost.
CREATE TABLE "prompt_log_usage" (
	"log_id" uuid PRIMARY KEY NOT NULL,
	"usage_id" uuid NOT NULL,
	CONSTRAINT "prompt_log_usage_usage_id_unique" UNIQUE ("usage_id")
);
ALTER TABLE "prompt_log_usage" ADD CONSTRAINT "prompt_log_usage_log_id_prompt_logs_id_fk" FOREIGN KEY ("log_id") REFERENCES "public"."prompt_logs"("id") ON DELETE cascade ON UPDATE no action;
ALTER TABLE "prompt_log_usage" ADD CONSTRAINT "prompt_log_usage_usage_id_token_usage_id_fk" FOREIGN KEY ("usage_id") REFERENCES "public"."token_usage"("id") ON DELETE cascade ON UPDATE no action;

-- The link is part of the meter: append-only like token_usage (it goes only with its log and
-- usage row, that is, with their user).
CREATE FUNCTION "prompt_log_usage_append_only"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF TG_OP = 'DELETE' THEN
		IF NOT EXISTS (SELECT 1 FROM "prompt_logs" WHERE "id" = OLD."log_id")
			OR NOT EXISTS (SELECT 1 FROM "token_usage" WHERE "id" = OLD."usage_id") THEN
			RETURN OLD;
		END IF;
	END IF;
	RAISE EXCEPTION 'prompt_log_usage is append-only: % refused', TG_OP
		USING ERRCODE = 'restrict_violation', HINT = 'rows go away only with their log and usage row';
END;
$$;
CREATE TRIGGER "prompt_log_usage_append_only" BEFORE UPDATE OR DELETE ON "prompt_log_usage"
	FOR EACH ROW EXECUTE FUNCTION "prompt_log_usage_append_only"();
CREATE TRIGGER "prompt_log_usage_no_truncate" BEFORE TRUNCATE ON "prompt_log_usage"
	FOR EACH STATEMENT EXECUTE FUNCTION "prompt_log_usage_append_only"();
