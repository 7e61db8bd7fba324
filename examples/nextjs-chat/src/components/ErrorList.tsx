import type { ApiError } from "@/lib/errors";

/** Errors as the server worded them, with their code: never a blank page. */
export function ErrorList({ errors, testId }: { errors: ApiError[]; testId?: string }) {
  if (errors.length === 0) return null;
  return (
    <div role="alert" className="error" data-testid={testId}>
      {errors.map((e, i) => (
        <p key={i}>
          {e.message}
          {e.code && <code className="code">{e.code}</code>}
          {e.retryAfter !== undefined && <span className="muted"> (retry in {e.retryAfter} s)</span>}
        </p>
      ))}
    </div>
  );
}
