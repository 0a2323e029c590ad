// The demo's REST client. Reads are plain GETs; mutations carry the session's bearer token
// and this tab's realtime connection id. No mutation refetches anything afterwards: the
// backend publishes the change's events to every other tab, and this tab applies the change
// from the response (echo.ts) instead of from its own echo.
import type { Member, Session } from "./types";
import { requestErrorMessage } from "./texts";
import { loadSession } from "./session";

/**
 * A failed request, with a message for people (texts.ts). `status` is the HTTP status, or 0
 * when the server could not be reached at all.
 */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** Whether `error` is the API saying the thing asked for does not exist. */
export const isNotFound = (error: unknown) => error instanceof ApiError && error.status === 404;

async function request<T>(method: string, path: string, session?: Session, body?: unknown): Promise<T> {
  const headers: Record<string, string> = {};
  if (session) headers.Authorization = `Bearer ${session.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  // Read once: the tab that sent the header is the one that must apply the change.
  const own = session && method !== "GET" ? ownChanges : null;
  if (own) headers[own.header] = own.connectionId;
  let res: Response;
  let text: string;
  try {
    res = await fetch(`/api${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (method === "GET") noteRead(res);
    text = await res.text();
  } catch {
    // fetch rejects only when no answer came back ("Failed to fetch"): say so in words.
    throw new ApiError(0, requestErrorMessage(0, undefined));
  }
  let json: unknown = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    // Not JSON (a proxy's HTML error page): the status says enough.
    if (res.ok) throw new ApiError(res.status, "The server sent an answer this page cannot read.");
  }
  if (!res.ok) {
    const msg = (json as { error?: string } | null)?.error;
    throw new ApiError(res.status, requestErrorMessage(res.status, msg));
  }
  if (own && session) own.apply(method, path, body, json, session.member);
  return json as T;
}

/**
 * This tab's realtime connection, for mutations: its id goes in the header named
 * `header` (`client.connectionIdHeader`, `tidings-connection-id`), so the backend leaves this
 * connection out of the change's events; `apply` then applies the change from the response.
 * `null` (no realtime client yet): no header, and the tab follows its echo like anyone else.
 */
export interface OwnChanges {
  header: string;
  connectionId: string;
  apply(method: string, path: string, body: unknown, result: unknown, actor: Member): void;
}
let ownChanges: OwnChanges | null = null;

/** Sets (or, with `null`, clears) this tab's realtime connection for mutations. */
export function setOwnChanges(own: OwnChanges | null): void {
  ownChanges = own;
}

/**
 * Reads carry a read stamp (the `tidings-positions` header: where each topic they reflect
 * stood before the read). The realtime client resumes those topics from there, so a change
 * committed between a read and its subscription is replayed instead of lost. Reads that
 * finish before the client exists wait here (a few).
 */
type ReadSink = (response: Response) => void;
let readSink: ReadSink | null = null;
const unnoted: Response[] = [];

function noteRead(response: Response): void {
  if (readSink) return readSink(response);
  unnoted.push(response);
  if (unnoted.length > 32) unnoted.shift();
}

/** Where reads are noted: `client.noteResponse` of the realtime client (`null`: none yet). */
export function setReadSink(sink: ReadSink | null): void {
  readSink = sink;
  if (sink) for (const response of unnoted.splice(0)) sink(response);
}

/** A read, as this tab's member: the server leaves out what is a surprise for them, so reads
 * carry the token too. */
export const get = <T,>(path: string) => request<T>("GET", path, loadSession() ?? undefined);

export function login(memberId: number): Promise<Session> {
  return request<Session>("POST", "/login", undefined, { member_id: memberId });
}

/** Mutations bound to one session. */
export function client(session: Session) {
  return {
    post: <T,>(path: string, body: unknown) => request<T>("POST", path, session, body),
    put: <T,>(path: string, body: unknown) => request<T>("PUT", path, session, body),
    patch: <T,>(path: string, body: unknown) => request<T>("PATCH", path, session, body),
    del: <T,>(path: string) => request<T>("DELETE", path, session),
  };
}
export type Client = ReturnType<typeof client>;

/**
 * Whether a failed read is tried again (TanStack Query's `retry`): never when the API answered
 * with a 4xx (an unknown id stays unknown: the not-found page shows at once instead of after a
 * retry's delay), a few times when the server could not be reached (status 0), once on a 5xx.
 */
export function shouldRetry(failureCount: number, error: unknown): boolean {
  if (!(error instanceof ApiError)) return failureCount < 1;
  if (error.status === 0) return failureCount < 5;
  if (error.status >= 400 && error.status < 500) return false;
  return failureCount < 1;
}
