// The real better-auth package (Drizzle adapter, provider "pg") on the database the Rust server
// uses. Driven by tests/tests/better_auth_interop.rs; prints one JSON object per command.
//
//   node interop.mjs sign-up <email> <password> <name>  -> { userId, setCookie, passwordHash }
//   node interop.mjs get-session <Cookie header value>    -> { session, user } | null
//
// Environment: DATABASE_URL, BETTER_AUTH_SECRET, BETTER_AUTH_URL.
import { betterAuth } from "better-auth";
import { drizzleAdapter } from "better-auth/adapters/drizzle";
import { drizzle } from "drizzle-orm/node-postgres";
import { boolean, index, pgTable, text, timestamp } from "drizzle-orm/pg-core";
import pg from "pg";

// Better Auth's schema as `auth generate` writes it for Drizzle, with snake_case columns:
// the same tables the Rust migrations create.
const user = pgTable("user", {
  id: text("id").primaryKey(),
  name: text("name").notNull(),
  email: text("email").notNull().unique(),
  emailVerified: boolean("email_verified").default(false).notNull(),
  image: text("image"),
  createdAt: timestamp("created_at").defaultNow().notNull(),
  updatedAt: timestamp("updated_at").defaultNow().notNull(),
});
const session = pgTable("session", {
  id: text("id").primaryKey(),
  expiresAt: timestamp("expires_at").notNull(),
  token: text("token").notNull().unique(),
  createdAt: timestamp("created_at").defaultNow().notNull(),
  updatedAt: timestamp("updated_at").notNull(),
  ipAddress: text("ip_address"),
  userAgent: text("user_agent"),
  userId: text("user_id").notNull().references(() => user.id, { onDelete: "cascade" }),
}, (t) => [index("session_userId_idx").on(t.userId)]);
const account = pgTable("account", {
  id: text("id").primaryKey(),
  accountId: text("account_id").notNull(),
  providerId: text("provider_id").notNull(),
  userId: text("user_id").notNull().references(() => user.id, { onDelete: "cascade" }),
  accessToken: text("access_token"),
  refreshToken: text("refresh_token"),
  idToken: text("id_token"),
  accessTokenExpiresAt: timestamp("access_token_expires_at"),
  refreshTokenExpiresAt: timestamp("refresh_token_expires_at"),
  scope: text("scope"),
  password: text("password"),
  createdAt: timestamp("created_at").defaultNow().notNull(),
  updatedAt: timestamp("updated_at").notNull(),
}, (t) => [index("account_userId_idx").on(t.userId)]);
const verification = pgTable("verification", {
  id: text("id").primaryKey(),
  identifier: text("identifier").notNull(),
  value: text("value").notNull(),
  expiresAt: timestamp("expires_at").notNull(),
  createdAt: timestamp("created_at").defaultNow().notNull(),
  updatedAt: timestamp("updated_at").defaultNow().notNull(),
}, (t) => [index("verification_identifier_idx").on(t.identifier)]);

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 1 });
const db = drizzle({ client: pool });
const auth = betterAuth({
  database: drizzleAdapter(db, { provider: "pg", schema: { user, session, account, verification } }),
  emailAndPassword: { enabled: true },
  secret: process.env.BETTER_AUTH_SECRET,
  baseURL: process.env.BETTER_AUTH_URL,
  // The Rust test drives many requests from one address.
  rateLimit: { enabled: false },
  logger: { level: "error" },
});

async function main() {
  const [command, ...args] = process.argv.slice(2);
  if (command === "sign-up") {
    const [email, password, name] = args;
    const res = await auth.api.signUpEmail({ body: { email, password, name }, asResponse: true });
    if (!res.ok) throw new Error(`signUpEmail: ${res.status} ${await res.text()}`);
    const body = await res.json();
    const { rows } = await pool.query(
      "SELECT password FROM account WHERE user_id = $1 AND provider_id = 'credential'",
      [body.user.id],
    );
    return { userId: body.user.id, setCookie: res.headers.get("set-cookie"), passwordHash: rows[0]?.password };
  }
  if (command === "get-session") {
    const headers = new Headers({ cookie: args[0] });
    const result = await auth.api.getSession({ headers });
    return result ?? null;
  }
  throw new Error(`unknown command ${command}`);
}

main()
  .then((out) => {
    process.stdout.write(JSON.stringify(out) + "\n");
  })
  .catch((e) => {
    process.stderr.write(`${e.stack ?? e}\n`);
    process.exitCode = 1;
  })
  .finally(() => pool.end());
