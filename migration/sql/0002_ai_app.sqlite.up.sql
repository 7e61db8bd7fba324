-- The AI-app tables on SQLite with the nearest types (STRICT tables):
--   uuid         -> BLOB (16 bytes, as the driver binds a Uuid); the default builds a version-4 UUID
--   bigint/int   -> INTEGER (64-bit in SQLite either way)
--   timestamptz  -> TEXT holding RFC 3339 in UTC ("+00:00"), the form the driver writes
--   jsonb        -> TEXT that must be valid JSON
-- Constraints, cascades and index names are the same as on PostgreSQL.
CREATE TABLE "user_profiles" (
	"id" BLOB PRIMARY KEY NOT NULL DEFAULT (unhex(hex(randomblob(6)) || '4' || substr(hex(randomblob(2)), 2) || substr('89AB', 1 + (abs(random()) % 4), 1) || substr(hex(randomblob(2)), 2) || hex(randomblob(6)))) CHECK (length("id") = 16),
	"user_id" TEXT NOT NULL,
	"display_name" TEXT,
	"default_model" TEXT DEFAULT 'gpt-4o-mini' NOT NULL,
	"monthly_token_budget" INTEGER DEFAULT 0 NOT NULL,
	"created_at" TEXT DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')) NOT NULL,
	CONSTRAINT "user_profiles_user_id_user_id_fk" FOREIGN KEY ("user_id") REFERENCES "user" ("id") ON DELETE CASCADE ON UPDATE NO ACTION
) STRICT;
CREATE UNIQUE INDEX "user_profiles_user_id_unique" ON "user_profiles" ("user_id");
CREATE INDEX "idx_profile_model" ON "user_profiles" ("default_model");

CREATE TABLE "token_usage" (
	"id" BLOB PRIMARY KEY NOT NULL DEFAULT (unhex(hex(randomblob(6)) || '4' || substr(hex(randomblob(2)), 2) || substr('89AB', 1 + (abs(random()) % 4), 1) || substr(hex(randomblob(2)), 2) || hex(randomblob(6)))) CHECK (length("id") = 16),
	"user_id" TEXT NOT NULL,
	"model" TEXT NOT NULL,
	"prompt_tokens" INTEGER DEFAULT 0 NOT NULL CHECK ("prompt_tokens" BETWEEN -2147483648 AND 2147483647),
	"completion_tokens" INTEGER DEFAULT 0 NOT NULL CHECK ("completion_tokens" BETWEEN -2147483648 AND 2147483647),
	"cost_microcents" INTEGER DEFAULT 0 NOT NULL,
	"created_at" TEXT DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')) NOT NULL,
	CONSTRAINT "token_usage_user_id_user_id_fk" FOREIGN KEY ("user_id") REFERENCES "user" ("id") ON DELETE CASCADE ON UPDATE NO ACTION
) STRICT;
CREATE INDEX "idx_usage_user_time" ON "token_usage" ("user_id", "created_at");
CREATE INDEX "idx_usage_model" ON "token_usage" ("model");

CREATE TABLE "prompt_logs" (
	"id" BLOB PRIMARY KEY NOT NULL DEFAULT (unhex(hex(randomblob(6)) || '4' || substr(hex(randomblob(2)), 2) || substr('89AB', 1 + (abs(random()) % 4), 1) || substr(hex(randomblob(2)), 2) || hex(randomblob(6)))) CHECK (length("id") = 16),
	"user_id" TEXT NOT NULL,
	"model" TEXT NOT NULL,
	"prompt" TEXT NOT NULL,
	"completion" TEXT,
	"prompt_tokens" INTEGER DEFAULT 0 NOT NULL CHECK ("prompt_tokens" BETWEEN -2147483648 AND 2147483647),
	"completion_tokens" INTEGER DEFAULT 0 NOT NULL CHECK ("completion_tokens" BETWEEN -2147483648 AND 2147483647),
	"latency_ms" INTEGER CHECK ("latency_ms" BETWEEN -2147483648 AND 2147483647),
	"status" TEXT DEFAULT 'ok' NOT NULL,
	"metadata" TEXT CHECK ("metadata" IS NULL OR json_valid("metadata")),
	"created_at" TEXT DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')) NOT NULL,
	CONSTRAINT "prompt_logs_user_id_user_id_fk" FOREIGN KEY ("user_id") REFERENCES "user" ("id") ON DELETE CASCADE ON UPDATE NO ACTION,
	CONSTRAINT "prompt_logs_status_check" CHECK ("status" IN ('ok', 'error', 'filtered'))
) STRICT;
CREATE INDEX "idx_log_user_time" ON "prompt_logs" ("user_id", "created_at");
