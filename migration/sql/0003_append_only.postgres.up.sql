-- Addition to the app's original tables: token_usage and prompt_logs are the meter and the audit trail, so the
-- database itself refuses to rewrite them (a bug or an ad-hoc statement cannot either):
--   * token_usage: no UPDATE ever; no DELETE except the cascade from deleting the owning user;
--   * prompt_logs: UPDATE only while the call is in flight (completion IS NULL), and never of the
--     columns that identify the call; no DELETE except the cascade from deleting the owning user;
--   * neither can be TRUNCATEd.
-- "The cascade from deleting the owning user" is recognised by its effect: the row's user no
-- longer exists (ON DELETE CASCADE runs after the parent row is gone), so no session flag or
-- trigger-depth trick is needed and a plain DELETE of a live user's row is always refused.
CREATE FUNCTION "token_usage_append_only"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF TG_OP = 'DELETE' THEN
		IF NOT EXISTS (SELECT 1 FROM "public"."user" WHERE "id" = OLD."user_id") THEN
			RETURN OLD;
		END IF;
	END IF;
	RAISE EXCEPTION 'token_usage is append-only: % refused', TG_OP
		USING ERRCODE = 'restrict_violation', HINT = 'rows go away only when their user is deleted';
END;
$$;

CREATE FUNCTION "prompt_logs_append_only"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF TG_OP = 'UPDATE' THEN
		IF OLD."completion" IS NOT NULL THEN
			RAISE EXCEPTION 'prompt_logs row % is final: UPDATE refused', OLD."id"
				USING ERRCODE = 'restrict_violation', HINT = 'a log can change only while completion IS NULL';
		END IF;
		IF NEW."id" IS DISTINCT FROM OLD."id" OR NEW."user_id" IS DISTINCT FROM OLD."user_id"
			OR NEW."model" IS DISTINCT FROM OLD."model" OR NEW."prompt" IS DISTINCT FROM OLD."prompt"
			OR NEW."created_at" IS DISTINCT FROM OLD."created_at" THEN
			RAISE EXCEPTION 'prompt_logs row %: id, user_id, model, prompt and created_at cannot change', OLD."id"
				USING ERRCODE = 'restrict_violation';
		END IF;
		RETURN NEW;
	END IF;
	IF TG_OP = 'DELETE' THEN
		IF NOT EXISTS (SELECT 1 FROM "public"."user" WHERE "id" = OLD."user_id") THEN
			RETURN OLD;
		END IF;
	END IF;
	RAISE EXCEPTION 'prompt_logs is append-only: % refused', TG_OP
		USING ERRCODE = 'restrict_violation', HINT = 'rows go away only when their user is deleted';
END;
$$;

CREATE TRIGGER "token_usage_append_only" BEFORE UPDATE OR DELETE ON "token_usage"
	FOR EACH ROW EXECUTE FUNCTION "token_usage_append_only"();
CREATE TRIGGER "token_usage_no_truncate" BEFORE TRUNCATE ON "token_usage"
	FOR EACH STATEMENT EXECUTE FUNCTION "token_usage_append_only"();
CREATE TRIGGER "prompt_logs_append_only" BEFORE UPDATE OR DELETE ON "prompt_logs"
	FOR EACH ROW EXECUTE FUNCTION "prompt_logs_append_only"();
CREATE TRIGGER "prompt_logs_no_truncate" BEFORE TRUNCATE ON "prompt_logs"
	FOR EACH STATEMENT EXECUTE FUNCTION "prompt_logs_append_only"();
