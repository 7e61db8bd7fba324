-- Addition for crash recovery (see the PostgreSQL file).
ALTER TABLE "call_reservations" ADD COLUMN "checkpoint" TEXT DEFAULT '' NOT NULL;
