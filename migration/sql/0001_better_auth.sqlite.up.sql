-- Better Auth's core tables on SQLite with the nearest types (STRICT tables, so a value of the
-- wrong type is refused as PostgreSQL would): text ids; timestamps as TEXT in UTC; booleans as
-- INTEGER 0/1. Unique constraints are unique indexes named as on PostgreSQL.
CREATE TABLE "user" (
	"id" TEXT PRIMARY KEY NOT NULL,
	"name" TEXT NOT NULL,
	"email" TEXT NOT NULL,
	"email_verified" INTEGER DEFAULT 0 NOT NULL CHECK ("email_verified" IN (0, 1)),
	"image" TEXT,
	"created_at" TEXT DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')) NOT NULL,
	"updated_at" TEXT DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')) NOT NULL
) STRICT;
CREATE UNIQUE INDEX "user_email_unique" ON "user" ("email");

CREATE TABLE "session" (
	"id" TEXT PRIMARY KEY NOT NULL,
	"expires_at" TEXT NOT NULL,
	"token" TEXT NOT NULL,
	"created_at" TEXT DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')) NOT NULL,
	"updated_at" TEXT NOT NULL,
	"ip_address" TEXT,
	"user_agent" TEXT,
	"user_id" TEXT NOT NULL,
	CONSTRAINT "session_user_id_user_id_fk" FOREIGN KEY ("user_id") REFERENCES "user" ("id") ON DELETE CASCADE ON UPDATE NO ACTION
) STRICT;
CREATE UNIQUE INDEX "session_token_unique" ON "session" ("token");
CREATE INDEX "session_userId_idx" ON "session" ("user_id");

CREATE TABLE "account" (
	"id" TEXT PRIMARY KEY NOT NULL,
	"account_id" TEXT NOT NULL,
	"provider_id" TEXT NOT NULL,
	"user_id" TEXT NOT NULL,
	"access_token" TEXT,
	"refresh_token" TEXT,
	"id_token" TEXT,
	"access_token_expires_at" TEXT,
	"refresh_token_expires_at" TEXT,
	"scope" TEXT,
	"password" TEXT,
	"created_at" TEXT DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')) NOT NULL,
	"updated_at" TEXT NOT NULL,
	CONSTRAINT "account_user_id_user_id_fk" FOREIGN KEY ("user_id") REFERENCES "user" ("id") ON DELETE CASCADE ON UPDATE NO ACTION
) STRICT;
CREATE INDEX "account_userId_idx" ON "account" ("user_id");

CREATE TABLE "verification" (
	"id" TEXT PRIMARY KEY NOT NULL,
	"identifier" TEXT NOT NULL,
	"value" TEXT NOT NULL,
	"expires_at" TEXT NOT NULL,
	"created_at" TEXT DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')) NOT NULL,
	"updated_at" TEXT DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')) NOT NULL
) STRICT;
CREATE INDEX "verification_identifier_idx" ON "verification" ("identifier");
