-- Run once by the postgres image when its data directory is created (as the superuser, in
-- POSTGRES_DB): the two roles the API uses, neither of them a superuser.
--   * aiwrapper_owner owns the schema and runs the migrations (the API's DATABASE_URL_DIRECT)
--     and operator commands (`admin`);
--   * app logs in for request traffic (the API's DATABASE_URL, through PgBouncer) with the
--     rights of aiwrapper_runtime: rows only, granted table by table by migration 0009. It
--     cannot change the schema, switch the append-only triggers off or rewrite the meter.
-- The passwords are for local use only.
CREATE ROLE aiwrapper_owner LOGIN PASSWORD 'owner';
DO $$
BEGIN
	EXECUTE format('ALTER DATABASE %I OWNER TO aiwrapper_owner', current_database());
END
$$;
ALTER SCHEMA public OWNER TO aiwrapper_owner;
CREATE ROLE aiwrapper_runtime NOLOGIN;
CREATE ROLE app LOGIN PASSWORD 'app' IN ROLE aiwrapper_runtime;
