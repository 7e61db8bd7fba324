DROP TABLE "conversation_turns";
DROP TABLE "conversations";
