-- The metering additions on SQLite (see the PostgreSQL file for why each exists).
CREATE TABLE "usage_monthly" (
	"user_id" TEXT NOT NULL,
	"month" TEXT NOT NULL CHECK ("month" GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]'),
	"calls" INTEGER DEFAULT 0 NOT NULL,
	"prompt_tokens" INTEGER DEFAULT 0 NOT NULL,
	"completion_tokens" INTEGER DEFAULT 0 NOT NULL,
	"cost_microcents" INTEGER DEFAULT 0 NOT NULL,
	PRIMARY KEY ("user_id", "month"),
	CONSTRAINT "usage_monthly_user_id_user_id_fk" FOREIGN KEY ("user_id") REFERENCES "user" ("id") ON DELETE CASCADE ON UPDATE NO ACTION
) STRICT;

CREATE TABLE "call_reservations" (
	"log_id" BLOB PRIMARY KEY NOT NULL,
	"user_id" TEXT NOT NULL,
	"tokens" INTEGER NOT NULL CHECK ("tokens" >= 0),
	"owner" TEXT NOT NULL,
	"heartbeat_at" TEXT DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')) NOT NULL,
	"created_at" TEXT DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')) NOT NULL,
	CONSTRAINT "call_reservations_log_id_prompt_logs_id_fk" FOREIGN KEY ("log_id") REFERENCES "prompt_logs" ("id") ON DELETE CASCADE ON UPDATE NO ACTION,
	CONSTRAINT "call_reservations_user_id_user_id_fk" FOREIGN KEY ("user_id") REFERENCES "user" ("id") ON DELETE CASCADE ON UPDATE NO ACTION
) STRICT;
CREATE INDEX "idx_reservations_user" ON "call_reservations" ("user_id");

CREATE TABLE "prompt_log_usage" (
	"log_id" BLOB PRIMARY KEY NOT NULL,
	"usage_id" BLOB NOT NULL,
	CONSTRAINT "prompt_log_usage_log_id_prompt_logs_id_fk" FOREIGN KEY ("log_id") REFERENCES "prompt_logs" ("id") ON DELETE CASCADE ON UPDATE NO ACTION,
	CONSTRAINT "prompt_log_usage_usage_id_token_usage_id_fk" FOREIGN KEY ("usage_id") REFERENCES "token_usage" ("id") ON DELETE CASCADE ON UPDATE NO ACTION
) STRICT;
CREATE UNIQUE INDEX "prompt_log_usage_usage_id_unique" ON "prompt_log_usage" ("usage_id");

-- The link is part of the meter: append-only like token_usage (see the PostgreSQL file).
CREATE TRIGGER "prompt_log_usage_no_update" BEFORE UPDATE ON "prompt_log_usage"
BEGIN
	SELECT RAISE(ABORT, 'prompt_log_usage is append-only: UPDATE refused');
END;

CREATE TRIGGER "prompt_log_usage_no_delete" BEFORE DELETE ON "prompt_log_usage"
	WHEN EXISTS (SELECT 1 FROM "prompt_logs" WHERE "id" = OLD."log_id")
		AND EXISTS (SELECT 1 FROM "token_usage" WHERE "id" = OLD."usage_id")
BEGIN
	SELECT RAISE(ABORT, 'prompt_log_usage is append-only: DELETE refused');
END;
