ALTER TABLE "call_reservations" DROP COLUMN "checkpoint";
