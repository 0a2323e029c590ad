// A stand-in for the browser's WebSocket, installed as globalThis.WebSocket so the REAL wasm
// client runs under jsdom (or Node) against a scripted server: it records what the client
// sends, answers subscribe/unsubscribe/ping like a tidings server, and lets a test open, push
// and close. Shipped as part of `@tidings/client/testing`.

type Handler<E> = ((event: E) => void) | null;

export interface FakeServerState {
  /** Topics subscribed on this socket (what the server would deliver). */
  subscribed: Set<string>;
  /** Topics subscribed with `presence` on this socket, and the mode asked for. */
  presence: Map<string, "join" | "watch">;
}

/** A present user as the server sends it (`PresenceMember`). */
export interface FakePresenceMember {
  user_id: string;
  info: Record<string, unknown>;
  connections: number;
}

export class FakeWebSocket {
  static readonly CONNECTING = 0;
  static readonly OPEN = 1;
  static readonly CLOSING = 2;
  static readonly CLOSED = 3;
  /** Every socket created, oldest first. */
  static instances: FakeWebSocket[] = [];
  /** Answer subscribe/unsubscribe/ping automatically. */
  static autoReply = true;
  /** Open every new socket on the next microtask (as if the server accepted it). */
  static autoOpen = false;
  /**
   * Who the scripted server says is present on each topic: the snapshot sent after the ack of
   * a subscribe with `presence` (when `autoReply`). Set it with `FakeServer.setPresence`.
   */
  static presence = new Map<string, FakePresenceMember[]>();

  readonly url: string;
  /** The subprotocols the client offered (`["tidings", "tidings.token.<token>"]` by default). */
  readonly protocols: string[];
  /** The subprotocol a tidings server answers with: `tidings` when offered. */
  readonly protocol: string;
  readyState = FakeWebSocket.CONNECTING;
  onopen: Handler<Event> = null;
  onmessage: Handler<{ data: string }> = null;
  onclose: Handler<{ code: number; reason: string }> = null;
  onerror: Handler<Event> = null;
  readonly sent: string[] = [];
  readonly server: FakeServerState = { subscribed: new Set(), presence: new Map() };
  closedByClient: { code?: number; reason?: string } | null = null;

  constructor(url: string, protocols?: string | string[]) {
    this.url = url;
    this.protocols = protocols === undefined ? [] : [protocols].flat();
    this.protocol = this.protocols.includes("tidings") ? "tidings" : "";
    FakeWebSocket.instances.push(this);
    if (FakeWebSocket.autoOpen) {
      queueMicrotask(() => {
        if (this.readyState === FakeWebSocket.CONNECTING) this.open();
      });
    }
  }

  static reset(): void {
    FakeWebSocket.instances = [];
    FakeWebSocket.autoReply = true;
    FakeWebSocket.autoOpen = false;
    FakeWebSocket.presence = new Map();
  }

  static latest(): FakeWebSocket {
    const ws = FakeWebSocket.instances.at(-1);
    if (!ws) throw new Error("no socket yet");
    return ws;
  }

  /** Sockets not closed (by either side). */
  static live(): FakeWebSocket[] {
    return FakeWebSocket.instances.filter((ws) => ws.readyState !== FakeWebSocket.CLOSED);
  }

  send(data: string): void {
    if (this.readyState !== FakeWebSocket.OPEN) throw new Error("InvalidStateError");
    this.sent.push(data);
    const msg = JSON.parse(data) as { action: string; topic?: string; presence?: unknown };
    const mode = msg.presence === "join" || msg.presence === "watch" ? msg.presence : undefined;
    if (msg.action === "subscribe" && msg.topic) {
      this.server.subscribed.add(msg.topic);
      if (mode) this.server.presence.set(msg.topic, mode);
      else this.server.presence.delete(msg.topic);
    }
    if (msg.action === "unsubscribe" && msg.topic) {
      this.server.subscribed.delete(msg.topic);
      this.server.presence.delete(msg.topic);
    }
    if (!FakeWebSocket.autoReply) return;
    const reply =
      msg.action === "subscribe"
        ? { action: "subscribed", topic: msg.topic }
        : msg.action === "unsubscribe"
          ? { action: "unsubscribed", topic: msg.topic }
          : { action: "pong" };
    const topic = msg.topic;
    queueMicrotask(() => {
      this.push(reply);
      if (msg.action === "subscribe" && mode && topic) this.pushPresence(topic);
    });
  }

  close(code?: number, reason?: string): void {
    if (this.readyState === FakeWebSocket.CLOSED) return;
    this.closedByClient = { code, reason };
    this.readyState = FakeWebSocket.CLOSED;
  }

  // ---- driven by tests (the "server") ----

  open(): void {
    this.readyState = FakeWebSocket.OPEN;
    this.onopen?.(new Event("open"));
  }

  push(message: object): void {
    if (this.readyState !== FakeWebSocket.OPEN) return;
    this.onmessage?.({ data: JSON.stringify(message) });
  }

  /**
   * Sends `topic`'s presence snapshot (`FakeWebSocket.presence`) if this socket watches it;
   * returns whether it did.
   */
  pushPresence(topic: string): boolean {
    if (!this.server.presence.has(topic)) return false;
    this.push({ action: "presence", topic, members: FakeWebSocket.presence.get(topic) ?? [] });
    return true;
  }

  /** Delivers an event if this socket is subscribed to its topic, as the server would. */
  publish(event: { topic: string; event: string; data: object }): boolean {
    if (!this.server.subscribed.has(event.topic)) return false;
    this.push(event);
    return true;
  }

  serverClose(code: number, reason = ""): void {
    this.readyState = FakeWebSocket.CLOSED;
    this.onclose?.({ code, reason });
  }

  /** Subscribe frames minus unsubscribe frames per topic (must be 0 or 1). */
  netSubscriptions(): Map<string, number> {
    const net = new Map<string, number>();
    for (const frame of this.sent) {
      const msg = JSON.parse(frame) as { action: string; topic?: string };
      if (!msg.topic) continue;
      const d = msg.action === "subscribe" ? 1 : msg.action === "unsubscribe" ? -1 : 0;
      net.set(msg.topic, (net.get(msg.topic) ?? 0) + d);
    }
    return net;
  }
}

/** An event of the protocol's shape (`WSEvent`) on `topic`, e.g. for `FakeWebSocket.publish`. */
export function event(topic: string, entityId = "1", eventType = "UPDATED") {
  return {
    topic,
    event: eventType,
    data: {
      entity_id: entityId,
      payload: { id: entityId },
      user_id: "u1",
      timestamp: "2025-11-26T10:30:00Z",
    },
  };
}
