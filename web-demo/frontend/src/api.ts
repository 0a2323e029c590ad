// The demo's REST client. Reads are plain GETs; mutations carry the session's bearer token.
// No mutation refetches anything afterwards: the backend publishes an event and the
// realtime invalidation refreshes every view (this one included).
import type { Session } from "./types";

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

async function request<T>(method: string, path: string, token?: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(`/api${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (method === "GET") noteRead(res);
  const text = await res.text();
  const json: unknown = text ? JSON.parse(text) : null;
  if (!res.ok) {
    const msg = (json as { error?: string } | null)?.error ?? res.statusText;
    throw new ApiError(res.status, msg);
  }
  return json as T;
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

export const get = <T,>(path: string) => request<T>("GET", path);

export function login(memberId: number): Promise<Session> {
  return request<Session>("POST", "/login", undefined, { member_id: memberId });
}

/** Mutations bound to one session. */
export function client(token: string) {
  return {
    post: <T,>(path: string, body: unknown) => request<T>("POST", path, token, body),
    put: <T,>(path: string, body: unknown) => request<T>("PUT", path, token, body),
    patch: <T,>(path: string, body: unknown) => request<T>("PATCH", path, token, body),
    del: <T,>(path: string) => request<T>("DELETE", path, token),
  };
}
export type Client = ReturnType<typeof client>;
