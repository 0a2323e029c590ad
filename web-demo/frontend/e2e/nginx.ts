// A real nginx in front of the demo backend, with TLS (a self-signed certificate made with
// openssl in a temp dir), configured as docs/DEPLOYMENT.md says: used when E2E_NGINX=1
// (scripts/test-e2e runs the two-member live test through it, over https:// and wss://).
// Everything stays on loopback and in the temp dir; nginx runs in the foreground and is
// stopped by its PID.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, Socket } from "node:net";
import { join } from "node:path";

const NGINX = process.env.NGINX_BIN ?? "/usr/sbin/nginx";

function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const server = createServer();
    server.once("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => ok(port));
    });
  });
}

async function waitForPort(port: number, child: ChildProcess, log: () => string): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`nginx exited with ${child.exitCode}:\n${log()}`);
    const open = await new Promise<boolean>((ok) => {
      const socket = new Socket();
      socket.once("connect", () => (socket.destroy(), ok(true)));
      socket.once("error", () => ok(false));
      socket.connect(port, "127.0.0.1");
    });
    if (open) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`nginx did not listen on ${port}:\n${log()}`);
}

export class Nginx {
  private constructor(
    private child: ChildProcess,
    readonly port: number,
    private dir: string,
  ) {}

  get url(): string {
    return `https://127.0.0.1:${this.port}`;
  }

  /** The access log so far (what a proxy operator would keep). */
  accessLog(): string {
    return readFileSync(join(this.dir, "access.log"), "utf8");
  }

  /** Starts nginx in `dir` (a temp dir the caller removes), proxying to `backendPort`. */
  static async start(dir: string, backendPort: number): Promise<Nginx> {
    const cert = join(dir, "cert.pem");
    const key = join(dir, "key.pem");
    execFileSync("openssl", [
      "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
      "-keyout", key, "-out", cert,
    ], { stdio: "ignore" });
    mkdirSync(join(dir, "tmp"), { recursive: true });
    const port = await freePort();
    const tmp = join(dir, "tmp");
    // As in docs/DEPLOYMENT.md: HTTP/1.1 upgrade to the upstream, Sec-WebSocket-Protocol
    // passed both ways (nginx's default), header buffers for a JWT in it, timeouts above the
    // 25 s heartbeat, /metrics not proxied. The default "combined" access log.
    const conf = `
${process.getuid?.() === 0 ? "user root;" : ""}
worker_processes 1;
daemon off;
pid ${join(dir, "nginx.pid")};
error_log ${join(dir, "error.log")} warn;
events { worker_connections 512; }
http {
  access_log ${join(dir, "access.log")} combined;
  client_body_temp_path ${tmp}/body;
  proxy_temp_path ${tmp}/proxy;
  fastcgi_temp_path ${tmp}/fastcgi;
  uwsgi_temp_path ${tmp}/uwsgi;
  scgi_temp_path ${tmp}/scgi;
  map $http_upgrade $connection_upgrade {
    default upgrade;
    ''      close;
  }
  upstream demo { server 127.0.0.1:${backendPort}; keepalive 8; }
  server {
    listen 127.0.0.1:${port} ssl;
    ssl_certificate ${cert};
    ssl_certificate_key ${key};
    large_client_header_buffers 4 16k;
    location = /ws {
      proxy_pass http://demo;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_read_timeout 75s;
      proxy_send_timeout 75s;
    }
    location = /metrics { return 404; }
    location / {
      proxy_pass http://demo;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
    }
  }
}
`;
    const confPath = join(dir, "nginx.conf");
    writeFileSync(confPath, conf);
    const log: string[] = [];
    const child = spawn(NGINX, ["-p", dir, "-c", confPath, "-e", join(dir, "error.log")], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    if (process.env.E2E_PID_DIR && child.pid) writeFileSync(join(process.env.E2E_PID_DIR, String(child.pid)), "");
    child.stderr!.on("data", (d: Buffer) => log.push(d.toString()));
    child.on("error", (e) => log.push(String(e)));
    await waitForPort(port, child, () => log.join("") + safeRead(join(dir, "error.log")));
    return new Nginx(child, port, dir);
  }

  /** SIGQUIT (graceful), then waits for the exit; SIGKILL after 10 s. */
  async stop(): Promise<void> {
    const child = this.child;
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((ok) => child.once("exit", () => ok()));
      child.kill("SIGQUIT");
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(timer);
    }
    if (process.env.E2E_PID_DIR && child.pid) rmSync(join(process.env.E2E_PID_DIR, String(child.pid)), { force: true });
  }
}

function safeRead(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return "";
  }
}
