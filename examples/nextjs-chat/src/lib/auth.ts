// Better Auth, self-hosted inside this app, on the SAME database and secret as the Rust API:
// the session cookie it sets (`better-auth.session_token`, signed with BETTER_AUTH_SECRET) is
// the one the API accepts, so the browser calls the API's /graphql directly with it.
import { betterAuth } from "better-auth";
import { drizzleAdapter } from "better-auth/adapters/drizzle";
import { db } from "./db";
import * as schema from "./auth-schema";

export const auth = betterAuth({
  database: drizzleAdapter(db, { provider: "pg", schema }),
  emailAndPassword: { enabled: true },
  secret: process.env.BETTER_AUTH_SECRET,
  baseURL: process.env.BETTER_AUTH_URL,
});

export type Session = typeof auth.$Infer.Session;
