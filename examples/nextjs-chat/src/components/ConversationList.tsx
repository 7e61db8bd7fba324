"use client";

import { useEffect, useState } from "react";
import { useQuery } from "urql";
import { graphql } from "@/gql";
import { apiErrors } from "@/lib/errors";
import { ErrorList } from "./ErrorList";

const ConversationsQuery = graphql(`
  query Conversations($first: Int!, $after: String) {
    conversations(first: $first, after: $after) {
      edges {
        cursor
        node {
          id
          title
          model
          turnCount
          updatedAt
        }
      }
      pageInfo {
        hasNextPage
        endCursor
      }
    }
  }
`);

const PAGE_SIZE = 20;

/** The caller's conversations, most recent activity first; pages merged by relayPagination(). */
export function ConversationList({
  selectedId,
  onSelect,
  refreshKey,
}: {
  selectedId: string | null;
  onSelect: (id: string, model: string) => void;
  refreshKey: number;
}) {
  const [after, setAfter] = useState<string | null>(null);
  const [{ data, error, fetching }, reexecute] = useQuery({
    query: ConversationsQuery,
    variables: { first: PAGE_SIZE, after },
  });

  // A turn moves its conversation to the top and a new one appears: ask the API again.
  useEffect(() => {
    if (refreshKey > 0) reexecute({ requestPolicy: "network-only" });
  }, [refreshKey, reexecute]);

  const connection = data?.conversations;
  return (
    <div className="conversations">
      {error && <ErrorList errors={apiErrors(error)} />}
      <ul data-testid="conversation-list">
        {connection?.edges.map(({ node }) => (
          <li key={node.id}>
            <button
              type="button"
              className={node.id === selectedId ? "conversation selected" : "conversation"}
              onClick={() => onSelect(node.id, node.model)}
            >
              <span className="title">{node.title ?? "New conversation"}</span>
              <span className="muted small">
                {node.turnCount} {node.turnCount === 1 ? "turn" : "turns"} · {node.model}
              </span>
            </button>
          </li>
        ))}
      </ul>
      {connection?.edges.length === 0 && <p className="muted small">No conversations yet.</p>}
      {connection?.pageInfo.hasNextPage && (
        <button
          type="button"
          className="link"
          disabled={fetching}
          onClick={() => setAfter(connection.pageInfo.endCursor ?? null)}
        >
          More
        </button>
      )}
    </div>
  );
}

