"use client";

import { useRouter, useSearchParams } from "next/navigation";
import { useCallback, useEffect, useRef, useState, type FormEvent, type KeyboardEvent } from "react";
import { useClient } from "urql";
import { graphql } from "@/gql";
import { apiErrors, type ApiError } from "@/lib/errors";
import { ConversationList } from "./ConversationList";
import { ErrorList } from "./ErrorList";
import { ModelPicker } from "./ModelPicker";
import { Transcript, type LiveTurn } from "./Transcript";
import { UsageMeter } from "./UsageMeter";

const CreateConversationMutation = graphql(`
  mutation CreateConversation($input: CreateConversationInput!) {
    createConversation(input: $input) {
      id
      title
      model
      turnCount
      updatedAt
    }
  }
`);

const CompletionSubscription = graphql(`
  subscription CompletionStream($input: CompletionInput!) {
    completionStream(input: $input) {
      logId
      delta
      done
      log {
        id
        completion
        status
        promptTokens
        completionTokens
        costMicrocents
      }
    }
  }
`);

export function Chat() {
  const client = useClient();
  const router = useRouter();
  const conversationId = useSearchParams().get("c");
  const [model, setModel] = useState<string | null>(null);
  const [live, setLive] = useState<LiveTurn | null>(null);
  const [errors, setErrors] = useState<ApiError[]>([]);
  const [refreshKey, setRefreshKey] = useState(0);
  const [prompt, setPrompt] = useState("");
  const subscription = useRef<{ unsubscribe(): void } | null>(null);
  const streaming = live?.state === "streaming";

  // Leaving the page unsubscribes, which makes the API abort the upstream call.
  useEffect(() => () => subscription.current?.unsubscribe(), []);

  const open = useCallback(
    (id: string | null) => {
      setErrors([]);
      router.replace(id ? `/chat?c=${id}` : "/chat");
    },
    [router],
  );

  function finished() {
    subscription.current = null;
    // The turn, the meter and the list all changed on the server.
    setRefreshKey((k) => k + 1);
  }

  async function send(text: string) {
    setErrors([]);
    let id = conversationId;
    if (!id) {
      const created = await client.mutation(CreateConversationMutation, { input: { model } }).toPromise();
      if (created.error) {
        setErrors(apiErrors(created.error));
        return;
      }
      id = created.data!.createConversation.id;
      router.replace(`/chat?c=${id}`);
    }
    const conversation = id;
    setPrompt("");
    setLive({ conversationId: conversation, prompt: text, answer: "", logId: null, state: "streaming" });
    subscription.current = client
      .subscription(CompletionSubscription, { input: { prompt: text, model, conversationId: conversation } })
      .subscribe((result) => {
        // A refusal (graphql-ws `error`) or a failure mid-stream (`next` with errors): show the
        // server's message; the data of such a result is the previous event's, so stop here.
        if (result.error) {
          const failure = apiErrors(result.error);
          const logId = failure.find((e) => e.logId)?.logId;
          setErrors(failure);
          setLive((turn) => turn && { ...turn, logId: turn.logId ?? logId ?? null, state: "failed" });
          finished();
          return;
        }
        const event = result.data?.completionStream;
        if (!event) return;
        setLive(
          (turn) =>
            turn && {
              ...turn,
              logId: event.logId,
              answer: turn.answer + event.delta,
              state: event.done ? "done" : "streaming",
            },
        );
        if (event.done) finished();
      });
  }

  function onSubmit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const text = prompt.trim();
    if (text && !streaming) void send(text);
  }

  function onKeyDown(event: KeyboardEvent<HTMLTextAreaElement>) {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      event.currentTarget.form?.requestSubmit();
    }
  }

  return (
    <div className="chat">
      <aside className="sidebar">
        <button type="button" onClick={() => open(null)} disabled={streaming}>
          New chat
        </button>
        <ConversationList
          selectedId={conversationId}
          onSelect={(id, conversationModel) => {
            setModel(conversationModel);
            open(id);
          }}
          refreshKey={refreshKey}
        />
      </aside>
      <section className="main">
        <div className="toolbar">
          <ModelPicker value={model} onChange={setModel} />
          <UsageMeter refreshKey={refreshKey} />
        </div>
        {conversationId ? (
          <Transcript conversationId={conversationId} live={live} refreshKey={refreshKey} />
        ) : (
          <p className="muted transcript">Ask anything to start a conversation.</p>
        )}
        <ErrorList errors={errors} testId="chat-error" />
        <form className="composer" onSubmit={onSubmit}>
          <textarea
            name="prompt"
            data-testid="prompt"
            placeholder="Message (Enter to send, Shift+Enter for a new line)"
            value={prompt}
            onChange={(e) => setPrompt(e.target.value)}
            onKeyDown={onKeyDown}
            rows={3}
          />
          <button type="submit" disabled={streaming || !prompt.trim() || !model}>
            {streaming ? "Answering…" : "Send"}
          </button>
        </form>
      </section>
    </div>
  );
}
