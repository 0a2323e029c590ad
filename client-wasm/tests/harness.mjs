// Control harness for the browser tests (tests/web.rs): runs a REAL `tidings` server (with a
// JWT leeway of 0) and lets the test, which cannot touch processes, drive it over CORS-enabled
// HTTP.
//
//   node client-wasm/tests/harness.mjs        (env: TIDINGS_BIN, HARNESS_PIDFILE optional)
//
// Prints `harness listening on http://127.0.0.1:PORT` once the server is up. Endpoints:
//   GET  /info                 → {"ws": "ws://127.0.0.1:P/ws", "http": "http://127.0.0.1:P"}
//   GET  /token?sub=u1[&scope=publish][&ttl=SECS]  → a JWT (text), from `tidings token`
//   GET  /token?sub=u1&name=Mom[&ttl=SECS]  → a JWT with a `name` claim (what the server puts in
//                              a present user's `info`), signed here with the server's secret
//   POST /publish              body: one WSEvent → {"status": 202, "body": {...}} (publish token)
//   POST /restart[?signal=KILL|TERM]  → kills the server and starts it again on the SAME port
//   POST /stop[?signal=KILL|TERM]     → kills the server and leaves it down (TERM: clients get 1012)
//   POST /start                → starts it again on the same port → {"listeningAt": ms since epoch}
//                                (also done by GET /info when the server is down, so a test that
//                                failed while it was stopped does not take the next ones down)
//   POST /freeze, POST /thaw   → SIGSTOP / SIGCONT (a server that stops answering pings)
// A SCRIPTED WebSocket server (not tidings) on the harness's own port, for what a real server
// never does on its own (skip a seq, change epoch on a live connection). Sessions by name:
//   ws://127.0.0.1:HPORT/script/ws?name=N   accepts any client; answers ping → pong and
//                              unsubscribe → unsubscribed; everything else is up to the test
//   POST /script/send?name=N   body: a JSON array of frames → sent as text to N's sockets
//   GET  /script/received?name=N  → the text frames N's clients sent, in order
//   POST /script/loop?name=N   from now on answers every subscribe: `subscribed`, and for one
//                              with `since` also `recovered: true` and then an event with a
//                              gap (seq since+2): a server whose recovery never succeeds
// The server's pid goes to $HARNESS_PIDFILE (so the caller can kill it even if we die).
// SIGTERM/SIGINT: kills the server, then exits. No dependencies beyond Node 20.

import { spawn, spawnSync } from "node:child_process";
import { createHash, createHmac, randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { createInterface } from "node:readline";

const BIN = process.env.TIDINGS_BIN ?? "target/release/tidings";
const SECRET = randomBytes(24).toString("hex");
const PIDFILE = process.env.HARNESS_PIDFILE;
// No JWT leeway: a token is dead exactly at its `exp`, so the refresh tests see a connection
// that did not refresh in time closed at once (4002), not up to 30 s later.
const env = {
  ...process.env,
  JWT_SECRET: SECRET,
  JWT_LEEWAY_SECS: process.env.JWT_LEEWAY_SECS ?? "0",
  RUST_LOG: process.env.RUST_LOG ?? "warn",
};

let server = null; // the child process
let port = 0; // fixed after the first start

function log(...args) {
  console.error("[harness]", ...args);
}

/** Starts `tidings --bind 127.0.0.1:PORT` and resolves with the port it listens on. */
function startServer(bindPort) {
  return new Promise((resolve, reject) => {
    const child = spawn(BIN, ["--bind", `127.0.0.1:${bindPort}`], {
      env,
      stdio: ["ignore", "pipe", "inherit"],
    });
    const timer = setTimeout(() => reject(new Error("tidings did not start within 20 s")), 20_000);
    child.once("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`tidings exited before listening (code ${code}, signal ${signal})`));
    });
    createInterface({ input: child.stdout }).on("line", (line) => {
      const m = /^tidings listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(line);
      if (m) {
        clearTimeout(timer);
        child.removeAllListeners("exit");
        server = child;
        if (PIDFILE) writeFileSync(PIDFILE, `${child.pid}\n`);
        resolve(Number(m[1]));
      }
    });
  });
}

function stopServer(signal) {
  const child = server;
  server = null;
  if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once("exit", () => resolve());
    child.kill("SIGCONT"); // a frozen process cannot handle SIGTERM
    child.kill(signal);
  });
}

async function restart(signal) {
  await stopServer(signal);
  await startAgain();
}

async function startAgain() {
  // The port may stay busy for a moment: retry on the SAME port.
  for (let i = 0; ; i++) {
    try {
      await startServer(port);
      return;
    } catch (e) {
      if (i >= 50) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** An HS256 JWT for `sub` with a `name` claim (`tidings token` mints none), valid `ttl` s. */
function mintNamed(sub, name, ttl) {
  const part = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const exp = Math.floor(Date.now() / 1000) + Number(ttl ?? 3600);
  const unsigned = `${part({ alg: "HS256", typ: "JWT" })}.${part({ sub, name, exp })}`;
  return `${unsigned}.${createHmac("sha256", SECRET).update(unsigned).digest("base64url")}`;
}

function mint(sub, scope, ttl) {
  const args = ["token", "--sub", sub];
  if (scope) args.push("--scope", scope);
  if (ttl) args.push("--ttl", ttl);
  const out = spawnSync(BIN, args, { env, encoding: "utf8" });
  if (out.status !== 0) throw new Error(`tidings token failed: ${out.stderr}`);
  return out.stdout.trim();
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    let body = "";
    req.setEncoding("utf8");
    req.on("data", (c) => (body += c));
    req.on("end", () => resolve(body));
    req.on("error", reject);
  });
}

/** Scripted WebSocket sessions by name: open sockets, frames received, loop mode. */
const sessions = new Map();
function session(name) {
  let s = sessions.get(name);
  if (!s) {
    s = { sockets: new Set(), received: [], loop: false };
    sessions.set(name, s);
  }
  return s;
}

/** One unmasked server frame (FIN set) with `opcode` and `payload` (a Buffer). */
function frame(opcode, payload) {
  const n = payload.length;
  const head = n < 126 ? Buffer.from([0x80 | opcode, n]) : Buffer.alloc(n < 65536 ? 4 : 10);
  if (n >= 126 && n < 65536) {
    head[0] = 0x80 | opcode;
    head[1] = 126;
    head.writeUInt16BE(n, 2);
  } else if (n >= 65536) {
    head[0] = 0x80 | opcode;
    head[1] = 127;
    head.writeBigUInt64BE(BigInt(n), 2);
  }
  return Buffer.concat([head, payload]);
}

function sendText(socket, text) {
  if (!socket.destroyed) socket.write(frame(0x1, Buffer.from(text, "utf8")));
}

/** What the scripted server answers by itself to one text frame of a client. */
function autoReply(s, socket, text) {
  let msg;
  try {
    msg = JSON.parse(text);
  } catch {
    return;
  }
  if (msg.action === "ping") sendText(socket, JSON.stringify({ action: "pong" }));
  if (msg.action === "unsubscribe") sendText(socket, JSON.stringify({ action: "unsubscribed", topic: msg.topic }));
  if (msg.action === "subscribe" && s.loop) {
    if (!msg.since) return sendText(socket, JSON.stringify({ action: "subscribed", topic: msg.topic }));
    sendText(socket, JSON.stringify({ action: "subscribed", topic: msg.topic, recovered: true }));
    sendText(
      socket,
      JSON.stringify({
        topic: msg.topic,
        event: "UPDATED",
        data: { entity_id: `loop${msg.since.seq + 2}`, payload: {}, user_id: "u1", timestamp: "2025-11-26T10:30:00Z" },
        seq: msg.since.seq + 2,
        epoch: msg.since.epoch,
      }),
    );
  }
}

/** RFC 6455 by hand (Node 20 has no WebSocket server): handshake, then masked client frames. */
function acceptScripted(req, socket) {
  const url = new URL(req.url ?? "/", "http://harness");
  const key = req.headers["sec-websocket-key"];
  if (url.pathname !== "/script/ws" || !key) return socket.destroy();
  const s = session(url.searchParams.get("name") ?? "");
  const accept = createHash("sha1").update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest("base64");
  // Like tidings: echo the `tidings` marker when offered (a browser fails a handshake that
  // answers none to a client that offered some), never the token subprotocol.
  const offered = (req.headers["sec-websocket-protocol"] ?? "").split(",").map((p) => p.trim());
  const protocol = offered.includes("tidings") ? "Sec-WebSocket-Protocol: tidings\r\n" : "";
  socket.write(
    `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n${protocol}Sec-WebSocket-Accept: ${accept}\r\n\r\n`,
  );
  socket.setNoDelay(true);
  s.sockets.add(socket);
  let buf = Buffer.alloc(0);
  socket.on("data", (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    for (;;) {
      if (buf.length < 2) return;
      const opcode = buf[0] & 0x0f;
      let len = buf[1] & 0x7f;
      let at = 2;
      if (len === 126) {
        if (buf.length < 4) return;
        len = buf.readUInt16BE(2);
        at = 4;
      } else if (len === 127) {
        if (buf.length < 10) return;
        len = Number(buf.readBigUInt64BE(2));
        at = 10;
      }
      if (buf.length < at + 4 + len) return;
      const mask = buf.subarray(at, at + 4);
      const payload = Buffer.from(buf.subarray(at + 4, at + 4 + len));
      for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i % 4];
      buf = buf.subarray(at + 4 + len);
      if (opcode === 0x1) {
        const text = payload.toString("utf8");
        s.received.push(text);
        autoReply(s, socket, text);
      } else if (opcode === 0x8) {
        socket.end(frame(0x8, payload.subarray(0, 2)));
        return;
      } else if (opcode === 0x9) {
        socket.write(frame(0xa, payload));
      }
    }
  });
  socket.on("close", () => s.sockets.delete(socket));
  socket.on("error", () => s.sockets.delete(socket));
}

async function handle(req, res) {
  const url = new URL(req.url ?? "/", "http://harness");
  const send = (status, body, type = "application/json") => {
    res.writeHead(status, {
      "content-type": type,
      "access-control-allow-origin": "*",
      "access-control-allow-methods": "GET, POST, OPTIONS",
      "access-control-allow-headers": "content-type",
    });
    res.end(typeof body === "string" ? body : JSON.stringify(body));
  };
  if (req.method === "OPTIONS") return send(204, "");
  const route = `${req.method} ${url.pathname}`;
  switch (route) {
    case "GET /info":
      if (!server) await startAgain();
      return send(200, { ws: `ws://127.0.0.1:${port}/ws`, http: `http://127.0.0.1:${port}` });
    case "GET /token":
      if (url.searchParams.has("name")) {
        const p = url.searchParams;
        return send(200, mintNamed(p.get("sub") ?? "u1", p.get("name"), p.get("ttl")), "text/plain");
      }
      return send(
        200,
        mint(url.searchParams.get("sub") ?? "u1", url.searchParams.get("scope"), url.searchParams.get("ttl")),
        "text/plain",
      );
    case "POST /publish": {
      const body = await readBody(req);
      const r = await fetch(`http://127.0.0.1:${port}/publish`, {
        method: "POST",
        headers: { authorization: `Bearer ${mint("harness", "publish")}`, "content-type": "application/json" },
        body,
      });
      const text = await r.text();
      let parsed;
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = text;
      }
      return send(200, { status: r.status, body: parsed });
    }
    case "POST /restart":
      await restart(url.searchParams.get("signal") === "TERM" ? "SIGTERM" : "SIGKILL");
      return send(200, { restarted: true, port });
    case "POST /stop":
      await stopServer(url.searchParams.get("signal") === "TERM" ? "SIGTERM" : "SIGKILL");
      return send(200, { stopped: true });
    case "POST /start":
      if (!server) await startAgain();
      return send(200, { listeningAt: Date.now() });
    case "POST /freeze":
      server?.kill("SIGSTOP");
      return send(200, { frozen: true });
    case "POST /thaw":
      server?.kill("SIGCONT");
      return send(200, { frozen: false });
    case "POST /script/send": {
      const s = session(url.searchParams.get("name") ?? "");
      const frames = JSON.parse(await readBody(req));
      for (const socket of s.sockets) for (const f of frames) sendText(socket, JSON.stringify(f));
      return send(200, { sockets: s.sockets.size });
    }
    case "GET /script/received":
      return send(200, session(url.searchParams.get("name") ?? "").received);
    case "POST /script/loop":
      session(url.searchParams.get("name") ?? "").loop = true;
      return send(200, { loop: true });
    default:
      return send(404, { error: `no route ${route}` });
  }
}

async function shutdown(code) {
  await stopServer("SIGKILL");
  process.exit(code);
}
process.on("SIGTERM", () => shutdown(0));
process.on("SIGINT", () => shutdown(0));

try {
  port = await startServer(0);
} catch (e) {
  log(String(e));
  process.exit(1);
}
const http = createServer((req, res) =>
  handle(req, res).catch((e) => {
    log(String(e));
    res.writeHead(500, { "access-control-allow-origin": "*" });
    res.end(String(e));
  }),
);
http.on("upgrade", acceptScripted);
http.listen(Number(process.env.HARNESS_PORT ?? 0), "127.0.0.1", () => {
  const address = http.address();
  console.log(`harness listening on http://127.0.0.1:${address.port} (tidings on ${port})`);
});
