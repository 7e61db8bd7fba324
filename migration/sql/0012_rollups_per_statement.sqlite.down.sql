-- SQLite has no statement-level triggers; its row trigger (0007) updates rows in place.
SELECT 1;
