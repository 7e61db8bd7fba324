DROP TABLE "conversation_turns";
DROP FUNCTION "conversation_turns_append_only"();
DROP TABLE "conversations";
