-- Addition to the app's original tables: the same append-only rules as on PostgreSQL (see the PostgreSQL file for
-- the reasoning). SQLite fires these triggers for ON DELETE CASCADE too, after the parent row is
-- gone, so "the owning user no longer exists" recognises the cascade here as well.
-- (SQLite has no TRUNCATE; its "truncate optimisation" is disabled for tables with triggers.)
CREATE TRIGGER "token_usage_no_update" BEFORE UPDATE ON "token_usage"
BEGIN
	SELECT RAISE(ABORT, 'token_usage is append-only: UPDATE refused');
END;

CREATE TRIGGER "token_usage_no_delete" BEFORE DELETE ON "token_usage"
	WHEN EXISTS (SELECT 1 FROM "user" WHERE "id" = OLD."user_id")
BEGIN
	SELECT RAISE(ABORT, 'token_usage is append-only: DELETE refused');
END;

CREATE TRIGGER "prompt_logs_final_no_update" BEFORE UPDATE ON "prompt_logs"
	WHEN OLD."completion" IS NOT NULL
BEGIN
	SELECT RAISE(ABORT, 'prompt_logs row is final: UPDATE refused');
END;

CREATE TRIGGER "prompt_logs_identity_immutable" BEFORE UPDATE ON "prompt_logs"
	WHEN NEW."id" IS NOT OLD."id" OR NEW."user_id" IS NOT OLD."user_id" OR NEW."model" IS NOT OLD."model"
		OR NEW."prompt" IS NOT OLD."prompt" OR NEW."created_at" IS NOT OLD."created_at"
BEGIN
	SELECT RAISE(ABORT, 'prompt_logs: id, user_id, model, prompt and created_at cannot change');
END;

CREATE TRIGGER "prompt_logs_no_delete" BEFORE DELETE ON "prompt_logs"
	WHEN EXISTS (SELECT 1 FROM "user" WHERE "id" = OLD."user_id")
BEGIN
	SELECT RAISE(ABORT, 'prompt_logs is append-only: DELETE refused');
END;
