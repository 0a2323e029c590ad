// The browser part of scripts/test-compat: opens each page of one matrix row in ONE headless
// Chromium (Debian's /usr/bin/chromium through playwright-core, no downloaded browser), waits
// for the app to be live against the real tidings server (`#live[data-status=open]` and a first
// fetch), publishes an event over HTTP on the page's topic and waits for the live query to
// refetch (data-fetches 1 → 2). Prints one line per page, `LIVE <name> ok|FAIL <detail>`, and
// exits non-zero if any page failed.
//
// Usage: node scripts/compat-live.mjs <name>=<url> ...
// Environment: TIDINGS_HTTP (http://127.0.0.1:PORT), TIDINGS_WS (ws://…/ws), TIDINGS_TOKEN
// (subscriber), TIDINGS_PUBLISHER (publisher token), PLAYWRIGHT_CORE (path of playwright-core),
// COMPAT_SSR_CHECK=1 (also fetch each page's server-rendered HTML and check it).

import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { chromium } = require(process.env.PLAYWRIGHT_CORE ?? "playwright-core");

const http = process.env.TIDINGS_HTTP;
const ws = process.env.TIDINGS_WS;
const token = process.env.TIDINGS_TOKEN;
const publisher = process.env.TIDINGS_PUBLISHER;
if (!http || !ws || !token || !publisher) {
  console.error("TIDINGS_HTTP, TIDINGS_WS, TIDINGS_TOKEN and TIDINGS_PUBLISHER are required");
  process.exit(2);
}
const pages = process.argv.slice(2).map((arg) => {
  const i = arg.indexOf("=");
  return { name: arg.slice(0, i), url: arg.slice(i + 1) };
});

async function publish(topic, n) {
  const response = await fetch(`${http}/publish`, {
    method: "POST",
    headers: { authorization: `Bearer ${publisher}`, "content-type": "application/json" },
    body: JSON.stringify({
      topic,
      event: "UPDATED",
      data: {
        entity_id: String(n),
        payload: { n },
        user_id: "compat",
        timestamp: new Date().toISOString(),
      },
    }),
  });
  if (!response.ok) throw new Error(`publish: HTTP ${response.status} ${await response.text()}`);
}

async function live(browser, { name, url }) {
  const topic = `compat.${name.replace(/[^A-Za-z0-9_.-]/g, "-")}.${Date.now()}`;
  const target = new URL(url);
  target.searchParams.set("ws", ws);
  target.searchParams.set("token", token);
  target.searchParams.set("topic", topic);
  if (process.env.COMPAT_SSR_CHECK === "1") {
    // Server rendering ran the hooks without a wasm or a socket, and the react-server import.
    const html = await (await fetch(target)).text();
    for (const want of [/id="live"/, /data-status="connecting"/, /server import ok: (<!-- -->)?function/]) {
      if (!want.test(html)) throw new Error(`server-rendered HTML does not match ${want}`);
    }
  }
  const context = await browser.newContext();
  const page = await context.newPage();
  const logs = [];
  page.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warning") logs.push(`${m.type()}: ${m.text()}`);
  });
  page.on("pageerror", (e) => logs.push(`pageerror: ${e.message}`));
  const started = Date.now();
  try {
    await page.goto(target.href, { waitUntil: "load", timeout: 60_000 });
    const state = async () =>
      page.evaluate(() => {
        const el = document.getElementById("live");
        return el
          ? { status: el.dataset.status, fetches: Number(el.dataset.fetches), text: el.textContent }
          : null;
      });
    const until = async (ok, ms, what) => {
      const deadline = Date.now() + ms;
      for (;;) {
        const s = await state().catch(() => null);
        if (s && ok(s)) return s;
        if (s?.status === "failed") {
          // The wasm did not load: final, no need to wait out the timeout.
          throw new Error(`${what}: ${s.text}; console: ${logs.slice(-5).join(" | ")}`);
        }
        if (Date.now() > deadline) {
          throw new Error(`${what}: last ${JSON.stringify(s)}; console: ${logs.slice(-5).join(" | ")}`);
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    await until((s) => s.status === "open" && s.fetches >= 1, 60_000, "not live");
    // The subscription may not be acknowledged yet: publish until the query refetched.
    let n = 0;
    let polls = 0;
    await until(
      (s) => {
        if (s.fetches >= 2) return true;
        if (polls++ % 5 === 0) void publish(topic, ++n).catch((e) => logs.push(String(e)));
        return false;
      },
      30_000,
      "no refetch after publishing",
    );
    return `ok (${Date.now() - started} ms, ${n} publish${n === 1 ? "" : "es"})`;
  } finally {
    await context.close();
  }
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
  ],
});
let failed = 0;
try {
  for (const p of pages) {
    try {
      console.log(`LIVE ${p.name} ${await live(browser, p)}`);
    } catch (error) {
      failed += 1;
      console.log(`LIVE ${p.name} FAIL ${error instanceof Error ? error.message : String(error)}`);
    }
  }
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
