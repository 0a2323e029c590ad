// Control harness for the browser tests (tests/web.rs): runs a REAL `tidings` server (with a
// JWT leeway of 0) and lets the test, which cannot touch processes, drive it over CORS-enabled
// HTTP.
//
//   node client-wasm/tests/harness.mjs        (env: TIDINGS_BIN, HARNESS_PIDFILE optional)
//
// Prints `harness listening on http://127.0.0.1:PORT` once the server is up. Endpoints:
//   GET  /info                 → {"ws": "ws://127.0.0.1:P/ws", "http": "http://127.0.0.1:P"}
//   GET  /token?sub=u1[&scope=publish][&ttl=SECS]  → a JWT (text), from `tidings token`
//   POST /publish              body: one WSEvent → {"status": 202, "body": {...}} (publish token)
//   POST /restart[?signal=KILL|TERM]  → kills the server and starts it again on the SAME port
//   POST /freeze, POST /thaw   → SIGSTOP / SIGCONT (a server that stops answering pings)
// The server's pid goes to $HARNESS_PIDFILE (so the caller can kill it even if we die).
// SIGTERM/SIGINT: kills the server, then exits. No dependencies beyond Node 20.

import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
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
      return send(200, { ws: `ws://127.0.0.1:${port}/ws`, http: `http://127.0.0.1:${port}` });
    case "GET /token":
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
    case "POST /freeze":
      server?.kill("SIGSTOP");
      return send(200, { frozen: true });
    case "POST /thaw":
      server?.kill("SIGCONT");
      return send(200, { frozen: false });
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
http.listen(Number(process.env.HARNESS_PORT ?? 0), "127.0.0.1", () => {
  const address = http.address();
  console.log(`harness listening on http://127.0.0.1:${address.port} (tidings on ${port})`);
});
