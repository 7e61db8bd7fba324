-- Addition for conversations (API.md, "Conversations"): multi-turn chats over the append-only log.
-- The seed's seven tables keep their exact shape; a conversation and the order of its turns live
-- in two tables of their own.
--   * conversations: a user's chat. Its settings (title, model, system prompt, archived) may be
--     changed by its owner; "updated_at" is its last activity (created, changed, or a turn
--     started) and orders the sidebar, newest first, by keyset on ("updated_at", "id").
--     "turn_count" numbers the turns: admission moves it from N to N + 1 only if it is still N,
--     which both serialises a conversation's turns (a second concurrent turn finds it moved and
--     is refused CONVERSATION_BUSY) and gives the new turn its place.
--   * conversation_turns: the append-only link from a conversation to its turns (prompt_logs
--     rows), in order. Never updated; deleted only by the cascade from deleting the user, like
--     prompt_logs itself. So archiving (a flag) removes nothing, and a conversation that has
--     turns cannot be deleted while its user exists. A turn belongs to the conversation's owner
--     and to the owner of its log (the composite key and the insert trigger check both).
-- Both go with their user (ON DELETE CASCADE), as every table of the app does.
CREATE TABLE "conversations" (
	"id" uuid PRIMARY KEY NOT NULL,
	"user_id" text NOT NULL,
	"title" text,
	"model" text NOT NULL,
	"system_prompt" text,
	"archived" boolean DEFAULT false NOT NULL,
	"turn_count" integer DEFAULT 0 NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "conversations_id_user_id_unique" UNIQUE("id","user_id"),
	CONSTRAINT "conversations_turn_count_check" CHECK ("turn_count" >= 0)
);
ALTER TABLE "conversations" ADD CONSTRAINT "conversations_user_id_user_id_fk" FOREIGN KEY ("user_id") REFERENCES "public"."user"("id") ON DELETE cascade ON UPDATE no action;
-- The sidebar: one user's conversations, archived or not, by last activity (one range scan per page).
CREATE INDEX "idx_conversation_user_activity" ON "conversations" USING btree ("user_id","archived","updated_at","id");

CREATE TABLE "conversation_turns" (
	"conversation_id" uuid NOT NULL,
	"seq" integer NOT NULL,
	"log_id" uuid NOT NULL,
	"user_id" text NOT NULL,
	CONSTRAINT "conversation_turns_pkey" PRIMARY KEY("conversation_id","seq"),
	CONSTRAINT "conversation_turns_log_id_unique" UNIQUE("log_id"),
	CONSTRAINT "conversation_turns_seq_check" CHECK ("seq" >= 1)
);
ALTER TABLE "conversation_turns" ADD CONSTRAINT "conversation_turns_conversation_fk" FOREIGN KEY ("conversation_id","user_id") REFERENCES "public"."conversations"("id","user_id") ON DELETE cascade ON UPDATE no action;
ALTER TABLE "conversation_turns" ADD CONSTRAINT "conversation_turns_log_id_prompt_logs_id_fk" FOREIGN KEY ("log_id") REFERENCES "public"."prompt_logs"("id") ON DELETE cascade ON UPDATE no action;
ALTER TABLE "conversation_turns" ADD CONSTRAINT "conversation_turns_user_id_user_id_fk" FOREIGN KEY ("user_id") REFERENCES "public"."user"("id") ON DELETE cascade ON UPDATE no action;

CREATE FUNCTION "conversation_turns_append_only"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF TG_OP = 'INSERT' THEN
		IF NOT EXISTS (SELECT 1 FROM "public"."prompt_logs" WHERE "id" = NEW."log_id" AND "user_id" = NEW."user_id") THEN
			RAISE EXCEPTION 'conversation_turns: log % is not a log of the conversation''s owner', NEW."log_id"
				USING ERRCODE = 'foreign_key_violation';
		END IF;
		RETURN NEW;
	END IF;
	IF TG_OP = 'DELETE' THEN
		IF NOT EXISTS (SELECT 1 FROM "public"."user" WHERE "id" = OLD."user_id") THEN
			RETURN OLD;
		END IF;
	END IF;
	RAISE EXCEPTION 'conversation_turns is append-only: % refused', TG_OP
		USING ERRCODE = 'restrict_violation', HINT = 'turns go away only when their user is deleted';
END;
$$;

CREATE TRIGGER "conversation_turns_append_only" BEFORE INSERT OR UPDATE OR DELETE ON "conversation_turns"
	FOR EACH ROW EXECUTE FUNCTION "conversation_turns_append_only"();
CREATE TRIGGER "conversation_turns_no_truncate" BEFORE TRUNCATE ON "conversation_turns"
	FOR EACH STATEMENT EXECUTE FUNCTION "conversation_turns_append_only"();

-- The request role (0009): conversations are created and changed by their owner through the
-- API, but never deleted; turns are only ever inserted.
GRANT SELECT, INSERT ON "conversations" TO "aiwrapper_runtime";
GRANT UPDATE ("title", "model", "system_prompt", "archived", "turn_count", "updated_at")
	ON "conversations" TO "aiwrapper_runtime";
GRANT SELECT, INSERT ON "conversation_turns" TO "aiwrapper_runtime";
