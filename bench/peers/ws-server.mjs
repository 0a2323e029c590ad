// Comparison peer for the tidings load tool: the seed `/ws` protocol on Node.js and `ws`.
//
// It speaks exactly what tidings speaks (see /work/shared/seed-ws-endpoint.md and the
// `protocol` crate): `GET /ws?token=JWT` (a bad token completes the handshake, then closes
// with 4001 "Unauthorized"), `subscribe` / `unsubscribe` / `ping` with the seed's replies and
// error texts, `POST /publish` with a Bearer token carrying `scope: publish` → 202
// {"delivered": N}, and `GET /healthz`. It is written the way a competent Node developer
// would write it, so that the numbers compare two reasonable servers: each event is
// serialized once into a Buffer that every subscriber's socket sends as a text frame, and a
// subscriber whose socket buffers too much is dropped instead of growing memory.
//
// Environment: JWT_SECRET (required), BIND (default 127.0.0.1:8000; port 0 picks one).
// On start it prints `ws-server listening on http://127.0.0.1:PORT`, like tidings.

import { createHmac, timingSafeEqual } from "node:crypto";
import { createServer } from "node:http";
import { WebSocketServer } from "ws";

/** Largest inbound WebSocket frame and largest publish body, in bytes. */
const MAX_MESSAGE_BYTES = 64 * 1024;
/** A subscriber with more than this many bytes queued in its socket is closed with 4003. */
const MAX_BUFFERED_BYTES = 4 * 1024 * 1024;
/** Topic rules of the protocol crate: 1..=256 bytes of these characters. */
const TOPIC_RE = /^[A-Za-z0-9:\-_.@/+=~]{1,256}$/;
const EVENT_TYPES = new Set(["ADDED", "UPDATED", "DELETED", "STATUS_CHANGED", "ASSIGNED", "COMMENT_ADDED"]);

const secret = process.env.JWT_SECRET;
if (!secret) {
  console.error("JWT_SECRET is required");
  process.exit(2);
}
const bind = process.env.BIND ?? "127.0.0.1:8000";
const colon = bind.lastIndexOf(":");
const host = bind.slice(0, colon);
const port = Number(bind.slice(colon + 1));

/**
 * Verifies an HS256 JWT and returns its claims, or null. Requires `sub` (string) and a
 * numeric `exp` in the future, as tidings does.
 */
function verifyToken(token) {
  if (typeof token !== "string") return null;
  const parts = token.split(".");
  if (parts.length !== 3) return null;
  const [h, p, s] = parts;
  try {
    const header = JSON.parse(Buffer.from(h, "base64url").toString("utf8"));
    if (header.alg !== "HS256") return null;
    const expected = createHmac("sha256", secret).update(`${h}.${p}`).digest();
    const given = Buffer.from(s, "base64url");
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return null;
    const claims = JSON.parse(Buffer.from(p, "base64url").toString("utf8"));
    if (typeof claims.sub !== "string" || typeof claims.exp !== "number") return null;
    if (claims.exp <= Date.now() / 1000) return null;
    return claims;
  } catch {
    return null;
  }
}

function hasPublishScope(claims) {
  return typeof claims.scope === "string" && claims.scope.split(" ").includes("publish");
}

/** topic → Set of sockets. */
const topics = new Map();

function subscribe(ws, topic) {
  let subs = topics.get(topic);
  if (!subs) {
    subs = new Set();
    topics.set(topic, subs);
  }
  subs.add(ws);
  ws.topics.add(topic);
}

function unsubscribe(ws, topic) {
  const subs = topics.get(topic);
  if (subs) {
    subs.delete(ws);
    if (subs.size === 0) topics.delete(topic);
  }
  ws.topics.delete(topic);
}

const REPLY_PONG = JSON.stringify({ action: "pong" });

/** Applies the seed's parsing rules to one client frame and answers it. */
function onClientMessage(ws, data, isBinary) {
  if (isBinary) {
    ws.close(1003, "binary frames are not supported");
    return;
  }
  let msg;
  try {
    msg = JSON.parse(data.toString("utf8"));
  } catch (e) {
    ws.send(JSON.stringify({ error: "Invalid message format", details: e.message }));
    return;
  }
  if (msg === null || typeof msg !== "object" || Array.isArray(msg) || typeof msg.action !== "string") {
    ws.send(JSON.stringify({ error: "Invalid message format", details: "action must be a string" }));
    return;
  }
  const { action, topic } = msg;
  if (topic !== undefined && topic !== null && typeof topic !== "string") {
    ws.send(JSON.stringify({ error: "Invalid message format", details: "topic must be a string" }));
    return;
  }
  if (action === "ping") {
    ws.send(REPLY_PONG);
    return;
  }
  if (action !== "subscribe" && action !== "unsubscribe") return; // unknown actions are ignored
  if (!topic) {
    ws.send(JSON.stringify({ error: `Topic is required for ${action} action` }));
    return;
  }
  if (!TOPIC_RE.test(topic)) {
    ws.send(JSON.stringify({ error: "Invalid topic", details: "topic breaks the topic rules", topic }));
    return;
  }
  if (action === "subscribe") subscribe(ws, topic);
  else unsubscribe(ws, topic);
  ws.send(JSON.stringify({ action: `${action}d`, topic }));
}

/** Checks the WSEvent shape and rebuilds it with exactly the wire keys. */
function toEvent(body) {
  if (body === null || typeof body !== "object") return null;
  const { topic, event, data } = body;
  if (typeof topic !== "string" || !TOPIC_RE.test(topic) || !EVENT_TYPES.has(event)) return null;
  if (data === null || typeof data !== "object") return null;
  const { entity_id, payload, user_id, timestamp } = data;
  if (typeof entity_id !== "string" || typeof user_id !== "string" || typeof timestamp !== "string") return null;
  if (payload === null || typeof payload !== "object" || Array.isArray(payload)) return null;
  return { topic, event, data: { entity_id, payload, user_id, timestamp } };
}

function json(res, status, value) {
  const body = JSON.stringify(value);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
  res.end(body);
}

/** Serializes the event once and hands the same Buffer to every subscriber's socket. */
function publish(event) {
  const subs = topics.get(event.topic);
  if (!subs) return 0;
  const frame = Buffer.from(JSON.stringify(event), "utf8");
  let delivered = 0;
  for (const ws of subs) {
    if (ws.bufferedAmount > MAX_BUFFERED_BYTES) {
      ws.close(4003, "slow consumer");
      continue;
    }
    ws.send(frame, { binary: false });
    delivered++;
  }
  return delivered;
}

function onPublish(req, res, batch) {
  const auth = req.headers.authorization ?? "";
  const claims = auth.startsWith("Bearer ") ? verifyToken(auth.slice(7)) : null;
  if (!claims) {
    req.resume();
    return json(res, 401, { error: "Unauthorized" });
  }
  if (!hasPublishScope(claims)) {
    req.resume();
    return json(res, 403, { error: "Forbidden", details: "token lacks the publish scope" });
  }
  const chunks = [];
  let size = 0;
  req.on("data", (chunk) => {
    size += chunk.length;
    if (size > MAX_MESSAGE_BYTES) {
      json(res, 413, { error: "Payload too large" });
      req.destroy();
      return;
    }
    chunks.push(chunk);
  });
  req.on("end", () => {
    let body;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    } catch (e) {
      return json(res, 400, { error: "Invalid JSON", details: e.message });
    }
    if (batch) {
      // POST /publish/batch: a JSON array of events, one result each (as tidings answers).
      if (!Array.isArray(body)) return json(res, 400, { error: "Invalid JSON", details: "expected an array" });
      const results = body.map((item) => {
        const event = toEvent(item);
        return event ? { delivered: publish(event) } : { status: 422, error: "Invalid event" };
      });
      return json(res, 200, { results });
    }
    const event = toEvent(body);
    if (!event) return json(res, 422, { error: "Invalid event", details: "body is not a WSEvent" });
    json(res, 202, { delivered: publish(event) });
  });
}

const server = createServer((req, res) => {
  const path = req.url.split("?", 1)[0];
  if (req.method === "POST" && path === "/publish") return onPublish(req, res, false);
  if (req.method === "POST" && path === "/publish/batch") return onPublish(req, res, true);
  if (req.method === "GET" && path === "/healthz") return json(res, 200, { status: "ok" });
  req.resume();
  json(res, 404, { error: "Not found" });
});
server.keepAliveTimeout = 60_000;

const wss = new WebSocketServer({ noServer: true, maxPayload: MAX_MESSAGE_BYTES, perMessageDeflate: false });

server.on("upgrade", (req, socket, head) => {
  const url = new URL(req.url, "http://localhost");
  if (url.pathname !== "/ws") {
    socket.end("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
    return;
  }
  const claims = verifyToken(url.searchParams.get("token"));
  wss.handleUpgrade(req, socket, head, (ws) => {
    if (!claims) {
      ws.close(4001, "Unauthorized");
      return;
    }
    ws.topics = new Set();
    ws.on("message", (data, isBinary) => onClientMessage(ws, data, isBinary));
    ws.on("close", () => {
      for (const topic of ws.topics) unsubscribe(ws, topic);
    });
    ws.on("error", () => ws.terminate());
  });
});

function shutdown() {
  for (const ws of wss.clients) ws.close(1012, "service restart");
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);

server.listen(port, host, () => {
  const addr = server.address();
  console.log(`ws-server listening on http://${addr.address}:${addr.port}`);
});
