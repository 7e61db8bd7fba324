// Database client, as the reference stack writes it: one module-level postgres-js client behind
// Drizzle. `prepare: false` because DATABASE_URL may be a transaction-mode pooler (Neon's
// `-pooler` endpoint, PgBouncer), where server-side prepared statements break across backends.
// This is the same PostgreSQL database the Rust API serves from; the API's migrations create
// every table, Better Auth's included, so this app never runs drizzle-kit.
import { drizzle } from "drizzle-orm/postgres-js";
import postgres from "postgres";
import * as schema from "./auth-schema";

const client = postgres(process.env.DATABASE_URL!, {
  prepare: false,
  max: 1,
  idle_timeout: 20,
  connect_timeout: 10,
});

export const db = drizzle({ client, schema });
