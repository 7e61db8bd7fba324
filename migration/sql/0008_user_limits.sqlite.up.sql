-- Addition for per-user call limits (see the PostgreSQL file).
CREATE TABLE "user_limits" (
	"user_id" TEXT PRIMARY KEY NOT NULL,
	"max_concurrent_calls" INTEGER CHECK ("max_concurrent_calls" BETWEEN 0 AND 2147483647),
	"calls_per_minute" INTEGER CHECK ("calls_per_minute" BETWEEN 0 AND 2147483647),
	"updated_at" TEXT DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')) NOT NULL,
	CONSTRAINT "user_limits_user_id_user_id_fk" FOREIGN KEY ("user_id") REFERENCES "user" ("id") ON DELETE CASCADE ON UPDATE NO ACTION
) STRICT;
