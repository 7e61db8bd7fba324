-- Addition for conversations (see the PostgreSQL file for why each part exists).
CREATE TABLE "conversations" (
	"id" BLOB PRIMARY KEY NOT NULL CHECK (length("id") = 16),
	"user_id" TEXT NOT NULL,
	"title" TEXT,
	"model" TEXT NOT NULL,
	"system_prompt" TEXT,
	"archived" INTEGER DEFAULT 0 NOT NULL CHECK ("archived" IN (0, 1)),
	"turn_count" INTEGER DEFAULT 0 NOT NULL CHECK ("turn_count" BETWEEN 0 AND 2147483647),
	"created_at" TEXT DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')) NOT NULL,
	"updated_at" TEXT DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')) NOT NULL,
	CONSTRAINT "conversations_id_user_id_unique" UNIQUE ("id", "user_id"),
	CONSTRAINT "conversations_user_id_user_id_fk" FOREIGN KEY ("user_id") REFERENCES "user" ("id") ON DELETE CASCADE ON UPDATE NO ACTION
) STRICT;
CREATE INDEX "idx_conversation_user_activity" ON "conversations" ("user_id", "archived", "updated_at", "id");

CREATE TABLE "conversation_turns" (
	"conversation_id" BLOB NOT NULL,
	"seq" INTEGER NOT NULL CHECK ("seq" BETWEEN 1 AND 2147483647),
	"log_id" BLOB NOT NULL,
	"user_id" TEXT NOT NULL,
	PRIMARY KEY ("conversation_id", "seq"),
	CONSTRAINT "conversation_turns_log_id_unique" UNIQUE ("log_id"),
	CONSTRAINT "conversation_turns_conversation_fk" FOREIGN KEY ("conversation_id", "user_id") REFERENCES "conversations" ("id", "user_id") ON DELETE CASCADE ON UPDATE NO ACTION,
	CONSTRAINT "conversation_turns_log_id_prompt_logs_id_fk" FOREIGN KEY ("log_id") REFERENCES "prompt_logs" ("id") ON DELETE CASCADE ON UPDATE NO ACTION,
	CONSTRAINT "conversation_turns_user_id_user_id_fk" FOREIGN KEY ("user_id") REFERENCES "user" ("id") ON DELETE CASCADE ON UPDATE NO ACTION
) STRICT;

CREATE TRIGGER "conversation_turns_owner" BEFORE INSERT ON "conversation_turns"
	WHEN NOT EXISTS (SELECT 1 FROM "prompt_logs" WHERE "id" = NEW."log_id" AND "user_id" = NEW."user_id")
BEGIN
	SELECT RAISE(ABORT, 'conversation_turns: the log is not a log of the conversation''s owner');
END;

CREATE TRIGGER "conversation_turns_no_update" BEFORE UPDATE ON "conversation_turns"
BEGIN
	SELECT RAISE(ABORT, 'conversation_turns is append-only: UPDATE refused');
END;

CREATE TRIGGER "conversation_turns_no_delete" BEFORE DELETE ON "conversation_turns"
	WHEN EXISTS (SELECT 1 FROM "user" WHERE "id" = OLD."user_id")
BEGIN
	SELECT RAISE(ABORT, 'conversation_turns is append-only: DELETE refused');
END;
