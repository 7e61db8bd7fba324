"use client";

import { useState, useSyncExternalStore, type ReactNode } from "react";
import { Provider } from "urql";
import { makeClient } from "@/lib/urql";

const subscribeNever = () => () => {};

/**
 * The urql client, one per page load. Everything under it reads the API from the browser with
 * the user's cookie, so it renders on the client only (the server has no cookie to send the
 * API and would fetch for nothing).
 */
export function Providers({ children }: { children: ReactNode }) {
  const [client] = useState(makeClient);
  const onClient = useSyncExternalStore(subscribeNever, () => true, () => false);
  return <Provider value={client}>{onClient ? children : <p className="muted">Loading…</p>}</Provider>;
}
