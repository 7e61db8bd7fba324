"use client";

import { useEffect } from "react";
import { useQuery } from "urql";
import { graphql } from "@/gql";
import { apiErrors } from "@/lib/errors";
import { formatInt64, formatMicrocents } from "@/lib/format";
import { ErrorList } from "./ErrorList";

const UsageQuery = graphql(`
  query UsageMeter {
    me {
      id
      profile {
        monthlyTokenBudget
        tokensUsedThisMonth
      }
    }
    usage {
      calls
      promptTokens
      completionTokens
      costMicrocents
      byModel {
        model
        calls
        costMicrocents
      }
    }
  }
`);

/** This month's tokens against the budget ("0" = unlimited), calls and cost. */
export function UsageMeter({ refreshKey }: { refreshKey: number }) {
  const [{ data, error }, reexecute] = useQuery({ query: UsageQuery });

  useEffect(() => {
    if (refreshKey > 0) reexecute({ requestPolicy: "network-only" });
  }, [refreshKey, reexecute]);

  if (error) return <ErrorList errors={apiErrors(error)} />;
  if (!data?.me) return null;
  const { monthlyTokenBudget, tokensUsedThisMonth } = data.me.profile;
  const budget = BigInt(monthlyTokenBudget);
  const used = BigInt(tokensUsedThisMonth);
  const { usage } = data;

  return (
    <div className="usage" data-testid="usage-meter">
      <div>
        <span data-testid="tokens-used">{formatInt64(tokensUsedThisMonth)}</span>
        {" / "}
        <span data-testid="token-budget">{budget === 0n ? "unlimited" : formatInt64(monthlyTokenBudget)}</span>
        {" tokens this month"}
      </div>
      {budget > 0n && (
        <meter min={0} max={Number(budget)} value={Number(used < budget ? used : budget)} high={Number(budget) * 0.8} />
      )}
      <div className="muted small">
        <span data-testid="usage-calls">{usage.calls}</span> calls · {formatInt64(usage.promptTokens)} prompt +{" "}
        {formatInt64(usage.completionTokens)} completion tokens · {formatMicrocents(usage.costMicrocents)}
        {usage.byModel.length > 1 &&
          ` (${usage.byModel.map((m) => `${m.model}: ${m.calls}`).join(", ")})`}
      </div>
    </div>
  );
}
