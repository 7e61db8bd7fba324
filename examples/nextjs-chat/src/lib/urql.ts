// The urql client: queries and mutations over HTTP, subscriptions over graphql-ws, both to the
// Rust API's /graphql with the Better Auth session cookie, and a normalised graphcache.
import { cacheExchange } from "@urql/exchange-graphcache";
import { relayPagination } from "@urql/exchange-graphcache/extras";
import { createClient as createWsClient } from "graphql-ws";
import { Client, fetchExchange, subscriptionExchange } from "urql";

/** The API's GraphQL endpoint (inlined at build time: NEXT_PUBLIC_ variables are). */
export const GRAPHQL_URL = process.env.NEXT_PUBLIC_GRAPHQL_URL ?? "http://localhost:4000/graphql";

/** The WebSocket URL of the same endpoint: http → ws, https → wss. */
export function webSocketUrl(httpUrl: string): string {
  const url = new URL(httpUrl);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.toString();
}

export function makeClient(): Client {
  // Browsers send the cookie on the WebSocket upgrade (the API checks the Origin against
  // TRUSTED_ORIGINS), so no connectionParams are needed; `lazy` (the default) opens the socket
  // at the first subscription and closes it after the last.
  const ws = createWsClient({ url: webSocketUrl(GRAPHQL_URL) });

  return new Client({
    url: GRAPHQL_URL,
    // The session cookie belongs to this app's origin (localhost:3000); cookies are host-scoped,
    // so it reaches the API on another port, and credentialed CORS lets the response through.
    fetchOptions: { credentials: "include" },
    exchanges: [
      cacheExchange({
        keys: {
          // Value types without an id: embedded in their parent, never normalised.
          Profile: () => null,
          UsageSummary: () => null,
          ModelUsage: () => null,
          DailyUsage: () => null,
          CompletionEvent: () => null,
          AuthPayload: () => null,
        },
        resolvers: {
          Query: {
            history: relayPagination(),
            conversations: relayPagination(),
          },
          Conversation: {
            turns: relayPagination(),
          },
        },
      }),
      fetchExchange,
      subscriptionExchange({
        forwardSubscription(request) {
          const input = { ...request, query: request.query ?? "" };
          return {
            subscribe(sink) {
              const unsubscribe = ws.subscribe(input, sink);
              return { unsubscribe };
            },
          };
        },
      }),
    ],
  });
}
