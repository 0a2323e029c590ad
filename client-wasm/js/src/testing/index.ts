// `@tidings/client/testing`: what a test of an app that uses @tidings/client needs under
// Vitest or Jest with jsdom (or plain Node): the wasm loaded from the file system, and a
// scripted server behind a fake `WebSocket`, so the REAL client (reconnects, acks, rules)
// runs with no network. See the package README ("Testing").

import init from "../index.js";
import { FakeWebSocket, event, type FakePresenceMember } from "./fake-websocket.js";

export { FakeWebSocket, event };
export type { FakePresenceMember, FakeServerState } from "./fake-websocket.js";

/**
 * Loads the wasm module from the package's folder on disk (Node's `fs`, no fetch), or from
 * `path`. Call it once, e.g. in `beforeAll`. (`init()` alone also works under Node: it falls
 * back to an inlined copy; this is the faster, explicit way.)
 */
export async function loadWasm(path?: string): Promise<void> {
  const { readFile } = await import("node:fs/promises");
  const { fileURLToPath } = await import("node:url");
  const { dirname, join } = await import("node:path");
  // Paths, not `new URL(…, import.meta.url)`: under jsdom `URL` is jsdom's, which does not
  // resolve against file: URLs.
  const file = path ?? join(dirname(fileURLToPath(import.meta.url)), "..", "tidings_client_bg.wasm");
  await init({ module_or_path: await readFile(file) });
}

/** A scripted tidings server behind `globalThis.WebSocket`; see {@link installFakeServer}. */
export interface FakeServer {
  /** Every socket the client opened, oldest first. */
  readonly sockets: readonly FakeWebSocket[];
  /** The newest socket (throws if none yet). */
  latest(): FakeWebSocket;
  /**
   * Delivers an event to every open socket subscribed to its topic, as the server would;
   * returns how many sockets got it.
   */
  publish(message: { topic: string; event: string; data: object }): number;
  /**
   * Sets who is present on `topic` and sends the new snapshot to every open socket watching
   * it (as a server does when it resynchronizes; the client tells the app only what changed).
   * Also the snapshot later subscribes with `presence` get. Returns how many sockets got it.
   */
  setPresence(topic: string, members: FakePresenceMember[]): number;
  /** Closes every open socket from the server side (e.g. 1012 = restart, 4001 = bad token). */
  closeAll(code: number, reason?: string): void;
  /** Puts the previous `globalThis.WebSocket` back. */
  restore(): void;
}

/**
 * Replaces `globalThis.WebSocket` with {@link FakeWebSocket}: sockets open at once (unless
 * `autoOpen: false`), subscribe/unsubscribe/ping are answered like a tidings server, and the
 * returned {@link FakeServer} publishes events and closes sockets.
 */
export function installFakeServer(options: { autoOpen?: boolean; autoReply?: boolean } = {}): FakeServer {
  const previous = globalThis.WebSocket;
  FakeWebSocket.reset();
  FakeWebSocket.autoOpen = options.autoOpen ?? true;
  FakeWebSocket.autoReply = options.autoReply ?? true;
  globalThis.WebSocket = FakeWebSocket as unknown as typeof WebSocket;
  const open = () => FakeWebSocket.instances.filter((ws) => ws.readyState === FakeWebSocket.OPEN);
  return {
    get sockets() {
      return FakeWebSocket.instances;
    },
    latest: () => FakeWebSocket.latest(),
    publish: (message) => open().filter((ws) => ws.publish(message)).length,
    setPresence: (topic, members) => {
      FakeWebSocket.presence.set(topic, members);
      return open().filter((ws) => ws.pushPresence(topic)).length;
    },
    closeAll: (code, reason = "") => {
      for (const ws of open()) ws.serverClose(code, reason);
    },
    restore: () => {
      globalThis.WebSocket = previous;
      FakeWebSocket.reset();
    },
  };
}
