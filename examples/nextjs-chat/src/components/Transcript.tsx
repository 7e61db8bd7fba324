"use client";

import { useEffect, useState } from "react";
import { useQuery } from "urql";
import { graphql } from "@/gql";
import { apiErrors } from "@/lib/errors";
import { ErrorList } from "./ErrorList";

const TurnsQuery = graphql(`
  query ConversationTurns($id: ID!, $last: Int!, $before: String) {
    conversation(id: $id) {
      id
      title
      turns(last: $last, before: $before) {
        edges {
          cursor
          node {
            id
            prompt
            completion
            status
            inFlight
            model
          }
        }
        pageInfo {
          hasPreviousPage
          startCursor
        }
      }
    }
  }
`);

/** The turn being streamed: its prompt and the answer so far. */
export interface LiveTurn {
  conversationId: string;
  prompt: string;
  answer: string;
  logId: string | null;
  state: "streaming" | "done" | "failed";
}

const PAGE_SIZE = 50;

/** A conversation's turns, oldest first (earlier pages on demand), then the live one. */
export function Transcript({
  conversationId,
  live,
  refreshKey,
}: {
  conversationId: string;
  live: LiveTurn | null;
  refreshKey: number;
}) {
  const [before, setBefore] = useState<string | null>(null);
  const [{ data, error }, reexecute] = useQuery({
    query: TurnsQuery,
    variables: { id: conversationId, last: PAGE_SIZE, before },
  });

  useEffect(() => {
    if (refreshKey > 0) reexecute({ requestPolicy: "network-only" });
  }, [refreshKey, reexecute]);

  const conversation = data?.conversation;
  const turns = conversation?.turns.edges.map((e) => e.node).filter((t) => t.id !== live?.logId) ?? [];

  return (
    <div className="transcript" data-testid="transcript">
      {error && <ErrorList errors={apiErrors(error)} />}
      {data && !conversation && <p className="muted">This conversation does not exist.</p>}
      {conversation?.turns.pageInfo.hasPreviousPage && (
        <button type="button" className="link" onClick={() => setBefore(conversation.turns.pageInfo.startCursor ?? null)}>
          Earlier turns
        </button>
      )}
      {turns.map((turn) => (
        <article key={turn.id} className="turn" data-testid="turn">
          <p className="prompt">{turn.prompt}</p>
          <p className={turn.status === "OK" ? "answer" : "answer failed"}>
            {turn.completion}
            {turn.status !== "OK" && <span className="badge">{turn.status.toLowerCase()}</span>}
            {turn.inFlight && <span className="badge">in flight</span>}
          </p>
        </article>
      ))}
      {live && live.conversationId === conversationId && (
        <article className="turn live">
          <p className="prompt">{live.prompt}</p>
          <p className={live.state === "failed" ? "answer failed" : "answer"} data-testid="live-answer" data-state={live.state}>
            {live.answer}
            {live.state === "streaming" && <span className="cursor" aria-hidden>▍</span>}
            {live.state === "failed" && <span className="badge">{live.logId ? "error" : "not sent"}</span>}
          </p>
        </article>
      )}
    </div>
  );
}
