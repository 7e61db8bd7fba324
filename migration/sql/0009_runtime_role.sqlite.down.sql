-- Roles and privileges are PostgreSQL's; SQLite has one writer with every right.
SELECT 1;
