DROP TRIGGER "prompt_logs_no_delete";
DROP TRIGGER "prompt_logs_identity_immutable";
DROP TRIGGER "prompt_logs_final_no_update";
DROP TRIGGER "token_usage_no_delete";
DROP TRIGGER "token_usage_no_update";
