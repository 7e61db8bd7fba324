// graphql-http's GraphQL-over-HTTP server audit against a running server.
//   node audit.mjs http://127.0.0.1:PORT/graphql
// Prints every result and a summary line; exits 1 if any MUST or SHOULD fails (error or warn).
import { auditServer } from "graphql-http";

const url = process.argv[2];
const results = await auditServer({ url });
const counts = { ok: 0, notice: 0, warn: 0, error: 0 };
for (const r of results) {
  counts[r.status]++;
  const detail = r.status === "ok" ? "" : ` — ${r.reason}`;
  console.log(`${r.status.padEnd(6)} ${r.name}${detail}`);
}
console.log(`graphql-http audit: ${counts.ok} ok, ${counts.notice} notice, ${counts.warn} warn, ${counts.error} error of ${results.length}`);
process.exitCode = counts.error + counts.warn > 0 ? 1 : 0;
