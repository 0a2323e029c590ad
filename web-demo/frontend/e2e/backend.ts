// Starts the demo backend binary directly (no npx / shell wrapper, so its PID is the real
// process), waits for its "demo listening on" line and stops it by that PID.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const ROOT = resolve(import.meta.dirname, "../../..");
const BIN = process.env.DEMO_BIN ?? join(ROOT, "target/debug/tidings-demo");
const STATIC_DIR = process.env.DEMO_STATIC_DIR ?? join(ROOT, "web-demo/frontend/dist");

/** A throwaway directory for a test's database; removed by `removeTempDir`. */
export function tempDir(): string {
  return mkdtempSync(join(tmpdir(), "tidings-e2e-"));
}
export function removeTempDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

export class Backend {
  private constructor(
    private child: ChildProcess,
    readonly port: number,
    readonly db: string,
    readonly log: string[],
  ) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Starts the backend on `port` (0: a free one) over the SQLite file `db`. */
  static async start(db: string, port = 0): Promise<Backend> {
    const env: NodeJS.ProcessEnv = { ...process.env, RUST_LOG: "info" };
    // The secret is generated and kept in the database, as on a newcomer's machine.
    delete env.JWT_SECRET;
    delete env.DEMO_BIND;
    const child = spawn(BIN, ["--bind", `127.0.0.1:${port}`, "--db", db, "--static-dir", STATIC_DIR], {
      env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    // The harness (scripts/test-e2e) kills whatever is left here if the run is interrupted.
    if (process.env.E2E_PID_DIR && child.pid) writeFileSync(join(process.env.E2E_PID_DIR, String(child.pid)), "");
    const log: string[] = [];
    child.stderr!.on("data", (d: Buffer) => log.push(d.toString()));
    const boundPort = await new Promise<number>((ok, fail) => {
      let out = "";
      const timer = setTimeout(() => fail(new Error(`backend did not start:\n${out}\n${log.join("")}`)), 30_000);
      child.stdout!.on("data", (d: Buffer) => {
        out += d.toString();
        const m = /demo listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(out);
        if (m) {
          clearTimeout(timer);
          ok(Number(m[1]));
        }
      });
      child.on("exit", (code) => {
        clearTimeout(timer);
        fail(new Error(`backend exited with ${code}:\n${out}\n${log.join("")}`));
      });
      child.on("error", (e) => {
        clearTimeout(timer);
        fail(e);
      });
    });
    return new Backend(child, boundPort, db, log);
  }

  /** SIGTERM (graceful: clients get close 1012), then waits for the exit; SIGKILL after 15 s. */
  async stop(): Promise<void> {
    const child = this.child;
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((ok) => child.once("exit", () => ok()));
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
    await exited;
    clearTimeout(timer);
    if (process.env.E2E_PID_DIR && child.pid) rmSync(join(process.env.E2E_PID_DIR, String(child.pid)), { force: true });
  }

  /** Logs in through the API and returns a bearer token. */
  async token(memberId: number): Promise<string> {
    const res = await fetch(`${this.url}/api/login`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ member_id: memberId }),
    });
    if (!res.ok) throw new Error(`login failed: ${res.status}`);
    return ((await res.json()) as { token: string }).token;
  }

  /** Calls the API as the holder of `token`. */
  async call(token: string, method: string, path: string, body?: unknown): Promise<unknown> {
    const res = await fetch(`${this.url}/api${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${await res.text()}`);
    return res.json();
  }
}
