"use client";

import { usePathname, useRouter, useSearchParams } from "next/navigation";
import { useState } from "react";
import { useQuery } from "urql";
import { graphql } from "@/gql";
import type { CallStatus } from "@/gql/graphql";
import { apiErrors } from "@/lib/errors";
import { formatDateTime, formatMicrocents } from "@/lib/format";
import { ErrorList } from "./ErrorList";

const HistoryQuery = graphql(`
  query History($first: Int!, $after: String, $filter: HistoryFilter) {
    history(first: $first, after: $after, filter: $filter) {
      edges {
        cursor
        node {
          id
          createdAt
          model
          prompt
          completion
          status
          inFlight
          promptTokens
          completionTokens
          latencyMs
          costMicrocents
          conversation {
            id
            title
          }
        }
      }
      pageInfo {
        hasNextPage
        endCursor
      }
    }
  }
`);

const PAGE_SIZES = [10, 20, 50, 100];
const STATUSES: CallStatus[] = ["OK", "ERROR", "FILTERED"];

/** Every call the user made, newest first, a page at a time (relayPagination() merges pages). */
export function History() {
  const router = useRouter();
  const pathname = usePathname();
  const params = useSearchParams();
  const first = clamp(Number(params.get("first") ?? 20), 1, 100);
  const status = STATUSES.find((s) => s === params.get("status")) ?? null;
  const [after, setAfter] = useState<string | null>(null);
  const [{ data, error, fetching }] = useQuery({
    query: HistoryQuery,
    variables: { first, after, filter: status ? { status } : null },
  });

  function setParam(name: string, value: string | null) {
    const next = new URLSearchParams(params);
    if (value === null) next.delete(name);
    else next.set(name, value);
    setAfter(null);
    router.replace(`${pathname}?${next}`);
  }

  const connection = data?.history;
  return (
    <main className="history">
      <div className="toolbar">
        <h1>History</h1>
        <label>
          Status
          <select value={status ?? ""} onChange={(e) => setParam("status", e.target.value || null)}>
            <option value="">all</option>
            {STATUSES.map((s) => (
              <option key={s} value={s}>
                {s.toLowerCase()}
              </option>
            ))}
          </select>
        </label>
        <label>
          Per page
          <select value={first} onChange={(e) => setParam("first", e.target.value)}>
            {[...new Set([...PAGE_SIZES, first])].sort((a, b) => a - b).map((n) => (
              <option key={n} value={n}>
                {n}
              </option>
            ))}
          </select>
        </label>
      </div>
      {error && <ErrorList errors={apiErrors(error)} />}
      <table data-testid="history-table">
        <thead>
          <tr>
            <th>When</th>
            <th>Model</th>
            <th>Prompt</th>
            <th>Answer</th>
            <th>Status</th>
            <th>Tokens</th>
            <th>Latency</th>
            <th>Cost</th>
          </tr>
        </thead>
        <tbody>
          {connection?.edges.map(({ node }) => (
            <tr key={node.id} data-testid="history-row">
              <td className="nowrap">{formatDateTime(node.createdAt)}</td>
              <td>{node.model}</td>
              <td className="clip" title={node.prompt}>
                {node.prompt}
                {node.conversation && <div className="muted small">in “{node.conversation.title}”</div>}
              </td>
              <td className="clip">{node.completion}</td>
              <td>{node.inFlight ? "in flight" : node.status.toLowerCase()}</td>
              <td>
                {node.promptTokens} + {node.completionTokens}
              </td>
              <td>{node.latencyMs === null || node.latencyMs === undefined ? "" : `${node.latencyMs} ms`}</td>
              <td>{node.costMicrocents ? formatMicrocents(node.costMicrocents) : ""}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {connection?.edges.length === 0 && <p className="muted">No calls yet.</p>}
      {connection?.pageInfo.hasNextPage && (
        <button
          type="button"
          data-testid="history-more"
          disabled={fetching}
          onClick={() => setAfter(connection.pageInfo.endCursor ?? null)}
        >
          Load more
        </button>
      )}
    </main>
  );
}

function clamp(n: number, min: number, max: number): number {
  return Number.isInteger(n) ? Math.min(max, Math.max(min, n)) : 20;
}
