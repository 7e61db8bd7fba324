import type { CombinedError } from "urql";

/** An error as the API reported it: its message and `extensions.code`. */
export interface ApiError {
  message: string;
  code?: string;
  retryAfter?: number;
  /** The call's log, for a call that reached the upstream and failed there. */
  logId?: string;
}

/**
 * The server's own words for a failed operation. GraphQL errors (over HTTP, or over graphql-ws
 * as an `error` message or a `next` carrying `errors`) keep their message and code; a transport
 * failure says what broke (an HTTP status, or the WebSocket close code and reason).
 */
export function apiErrors(error: CombinedError): ApiError[] {
  if (error.graphQLErrors.length > 0) {
    return error.graphQLErrors.map((e) => ({
      message: e.message,
      code: typeof e.extensions.code === "string" ? e.extensions.code : undefined,
      retryAfter: typeof e.extensions.retryAfter === "number" ? e.extensions.retryAfter : undefined,
      logId: typeof e.extensions.logId === "string" ? e.extensions.logId : undefined,
    }));
  }
  const network: unknown = error.networkError;
  if (isCloseEvent(network)) {
    return [{ message: `connection closed (${network.code}${network.reason ? `: ${network.reason}` : ""})` }];
  }
  return [{ message: error.networkError?.message ?? error.message }];
}

function isCloseEvent(value: unknown): value is { code: number; reason: string } {
  return typeof value === "object" && value !== null && "code" in value && "reason" in value
    && typeof (value as { code: unknown }).code === "number";
}
