DROP TABLE "verification";
DROP TABLE "session";
DROP TABLE "account";
DROP TABLE "user";
