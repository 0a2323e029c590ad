// The React hooks over the REAL wasm client (loaded from ../pkg, built by ./scripts/build-wasm)
// with a scripted WebSocket (fake-websocket.ts): invalidation on events and once per topic
// after a reconnect, the status hook, and no leaked or duplicated subscription under StrictMode.

import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { StrictMode, useEffect, useState, type ReactNode } from "react";
import { act, cleanup, render, screen, waitFor } from "@testing-library/react";
import { QueryClient } from "@tanstack/react-query";
import { afterEach, beforeAll, beforeEach, describe, expect, it, vi } from "vitest";
import { TidingsClient } from "../src/index.ts";
import {
  TidingsProvider,
  useConnectionStatus,
  useLiveQuery,
  useTidingsClient,
  useTopic,
  type WSEvent,
} from "../src/react/index.tsx";
import { FakeWebSocket, event } from "../src/testing/fake-websocket.ts";
import { loadWasm } from "../src/testing/index.ts";

const OPTIONS = { initialDelayMs: 10, maxDelayMs: 20 };

beforeAll(async () => {
  globalThis.WebSocket = FakeWebSocket as unknown as typeof WebSocket;
  // The package's own loadWasm(), pointed at the built package (this file is not inside it).
  await loadWasm(join(dirname(fileURLToPath(import.meta.url)), "../../pkg/tidings_client_bg.wasm"));
});

beforeEach(() => FakeWebSocket.reset());
afterEach(() => cleanup());

/** A socket's URL without the connection id every socket carries (`cid`, random per client),
 * after checking that it is there and well formed. */
function withoutCid(url: string): string {
  expect(url).toMatch(/[?&]cid=[A-Za-z0-9_-]{1,64}(&|$)/);
  return url.replace(/([?&])cid=[A-Za-z0-9_-]+(&|$)/, (_m, sep: string, next: string) => (next ? sep : ""));
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function newQueryClient(): QueryClient {
  return new QueryClient({ defaultOptions: { queries: { retry: false, staleTime: Infinity } } });
}

/** Waits for socket number `n` (1-based), opens it, and returns it. */
async function openSocket(n: number): Promise<FakeWebSocket> {
  await waitFor(() => expect(FakeWebSocket.instances.length).toBe(n));
  const ws = FakeWebSocket.latest();
  act(() => ws.open());
  return ws;
}

function Status(): ReactNode {
  const status = useConnectionStatus();
  return <span data-testid="status">{status.state}</span>;
}

function List({ id, fetches }: { id: string; fetches: Map<string, number> }): ReactNode {
  const query = useLiveQuery({
    queryKey: ["lists", id],
    queryFn: async () => {
      fetches.set(id, (fetches.get(id) ?? 0) + 1);
      return `list ${id} v${fetches.get(id)}`;
    },
    topic: `list:${id}`,
  });
  return <span data-testid={`list-${id}`}>{query.data ?? "loading"}</span>;
}

function invalidatedKeys(spy: { mock: { calls: unknown[][] } }): string[] {
  return spy.mock.calls.map((call) => JSON.stringify((call[0] as { queryKey: unknown }).queryKey));
}

describe("TidingsProvider + useLiveQuery", () => {
  it("invalidates the mapped query on events, and once per topic after a reconnect", async () => {
    const queryClient = newQueryClient();
    const fetches = new Map<string, number>();
    const getToken = vi.fn(async () => "tok en");
    render(
      <TidingsProvider
        url="ws://test/ws"
        getToken={getToken}
        queryClient={queryClient}
        options={{ ...OPTIONS, tokenTransport: "query" }}
      >
        <Status />
        <List id="1" fetches={fetches} />
      </TidingsProvider>,
    );
    const ws = await openSocket(1);
    // tokenTransport "query" (for old servers): in the URL, encoded.
    expect(withoutCid(ws.url)).toBe("ws://test/ws?token=tok%20en");
    expect(ws.protocols).toEqual([]);
    await waitFor(() => expect(ws.server.subscribed).toEqual(new Set(["list:1"])));
    // Read before the subscription's ack and without a read stamp: refetched once (an event
    // published between the read and the ack would otherwise be missed).
    await waitFor(() => expect(screen.getByTestId("list-1").textContent).toBe("list 1 v2"));
    expect(screen.getByTestId("status").textContent).toBe("open");
    await sleep(100);
    expect(fetches.get("1")).toBe(2);

    const spy = vi.spyOn(queryClient, "invalidateQueries");
    act(() => {
      expect(ws.publish(event("list:1"))).toBe(true);
    });
    await waitFor(() => expect(invalidatedKeys(spy)).toEqual(['["lists","1"]']));
    await waitFor(() => expect(screen.getByTestId("list-1").textContent).toBe("list 1 v3"));

    // The server restarts: the client reconnects with a fresh token, resubscribes, and
    // invalidates the topic's query exactly once.
    spy.mockClear();
    act(() => ws.serverClose(1012, "service restart"));
    expect(screen.getByTestId("status").textContent).toBe("reconnecting");
    const ws2 = await openSocket(2);
    await waitFor(() => expect(ws2.server.subscribed).toEqual(new Set(["list:1"])));
    await waitFor(() => expect(screen.getByTestId("list-1").textContent).toBe("list 1 v4"), { timeout: 3_000 });
    await sleep(50);
    expect(invalidatedKeys(spy)).toEqual(['["lists","1"]']);
    expect(getToken).toHaveBeenCalledTimes(2);
    expect(screen.getByTestId("status").textContent).toBe("open");
  });

  it("applies custom rules (topic patterns and onEvent)", async () => {
    const queryClient = newQueryClient();
    const spy = vi.spyOn(queryClient, "invalidateQueries");
    const rules = {
      topics: { "list:{id}": [["lists", "{id}"], ["summary"]] },
      onEvent: (e: WSEvent) => (e.event === "DELETED" ? [["deleted", e.data.entity_id]] : undefined),
    };
    function Sub(): ReactNode {
      useTopic("list:7");
      useTopic("gifts:all");
      return null;
    }
    render(
      <TidingsProvider url="ws://test/ws" getToken={async () => "t"} queryClient={queryClient} rules={rules} options={OPTIONS}>
        <Sub />
      </TidingsProvider>,
    );
    const ws = await openSocket(1);
    await waitFor(() => expect(ws.server.subscribed.size).toBe(2));
    act(() => {
      ws.publish(event("list:7"));
      ws.publish(event("gifts:all"));
      ws.publish({ ...event("list:7", "9"), event: "DELETED" });
    });
    await waitFor(() =>
      expect(invalidatedKeys(spy).sort()).toEqual(['["deleted","9"]', '["gifts"]', '["lists","7"]', '["summary"]']),
    );
  });
});

describe("StrictMode", () => {
  it("creates one client and one subscription per topic, and leaks nothing on unmount", async () => {
    const queryClient = newQueryClient();
    const received: string[] = [];
    function Listener({ topic }: { topic: string }): ReactNode {
      useTopic(topic, (e) => received.push(`${topic}:${e.data.entity_id}`));
      return null;
    }
    function Late(): ReactNode {
      // Mounts its subscriber only once the socket is open (StrictMode double effects while open).
      const [shown, setShown] = useState(false);
      const client = useTidingsClient();
      return (
        <>
          <button onClick={() => setShown(true)}>show</button>
          {client && shown ? <Listener topic="occasion:3" /> : null}
        </>
      );
    }
    const { unmount } = render(
      <StrictMode>
        <TidingsProvider url="ws://test/ws" getToken={async () => "t"} queryClient={queryClient} options={OPTIONS}>
          <Listener topic="list:1" />
          <Listener topic="list:1" />
          <List id="2" fetches={new Map()} />
          <Late />
        </TidingsProvider>
      </StrictMode>,
    );
    const ws = await openSocket(1);
    await waitFor(() => expect(ws.server.subscribed).toEqual(new Set(["list:1", "list:2"])));
    act(() => screen.getByText("show").click());
    await waitFor(() =>
      expect(ws.server.subscribed).toEqual(new Set(["list:1", "list:2", "occasion:3"])),
    );
    await sleep(20);
    // Never more than one live server subscription per topic, and exactly one now.
    for (const [topic, n] of ws.netSubscriptions()) expect(n, topic).toBe(1);

    act(() => {
      ws.publish(event("list:1", "a"));
      ws.publish(event("occasion:3", "b"));
    });
    // Two listeners on list:1 (one server subscription), one on occasion:3, each called once.
    expect(received.sort()).toEqual(["list:1:a", "list:1:a", "occasion:3:b"]);
    expect(FakeWebSocket.instances).toHaveLength(1);

    unmount();
    expect(ws.readyState).toBe(FakeWebSocket.CLOSED);
    expect(ws.closedByClient).toEqual({ code: 1000, reason: undefined });
    // Nothing left running: no reconnect ever happens, no timer fires a ping.
    await sleep(100);
    expect(FakeWebSocket.instances).toHaveLength(1);
    expect(FakeWebSocket.live()).toHaveLength(0);
  });
});

describe("useConnectionStatus", () => {
  it("shows reconnecting with an attempt, then unauthorized after two 4001s", async () => {
    const queryClient = newQueryClient();
    const seen: string[] = [];
    function Watch(): ReactNode {
      const s = useConnectionStatus();
      const text = `${s.state}${s.attempt ? `#${s.attempt}` : ""}${s.closeCode ? `/${s.closeCode}` : ""}`;
      if (seen.at(-1) !== text) seen.push(text);
      return <span data-testid="status">{text}</span>;
    }
    render(
      <TidingsProvider url="ws://test/ws?x=1" getToken={async () => "bad"} queryClient={queryClient} options={OPTIONS}>
        <Watch />
      </TidingsProvider>,
    );
    const ws = await openSocket(1);
    // By default the token travels as a subprotocol, never in the URL.
    expect(withoutCid(ws.url)).toBe("ws://test/ws?x=1");
    expect(ws.protocols).toEqual(["tidings", "tidings.token.bad"]);
    await waitFor(() => expect(screen.getByTestId("status").textContent).toBe("open"));
    act(() => ws.serverClose(1006));
    // From here on the server refuses the token as tidings does: it completes the handshake,
    // answers nothing, and closes with 4001.
    FakeWebSocket.autoReply = false;
    const ws2 = await openSocket(2);
    act(() => ws2.serverClose(4001, "Unauthorized"));
    const ws3 = await openSocket(3);
    act(() => ws3.serverClose(4001, "Unauthorized"));
    await waitFor(() => expect(screen.getByTestId("status").textContent).toBe("unauthorized/4001"));
    await sleep(100);
    expect(FakeWebSocket.instances).toHaveLength(3); // no retry loop
    // A handshake the server never answered is not `open`: no "Live" flash.
    expect(seen).toEqual(["connecting", "open", "reconnecting#1/1006", "reconnecting#1/4001", "unauthorized/4001"]);
  });
});

describe("useTopic", () => {
  it("reports an invalid topic instead of throwing, and keeps the other subscriptions", async () => {
    const errors = vi.spyOn(console, "error").mockImplementation(() => {});
    const queryClient = newQueryClient();
    function Sub(): ReactNode {
      useTopic("not a topic");
      useTopic("gifts:all");
      return <span data-testid="alive">alive</span>;
    }
    render(
      <TidingsProvider url="ws://test/ws" getToken={async () => "t"} queryClient={queryClient} options={OPTIONS}>
        <Sub />
      </TidingsProvider>,
    );
    const ws = await openSocket(1);
    await waitFor(() => expect(ws.server.subscribed).toEqual(new Set(["gifts:all"])));
    expect(screen.getByTestId("alive").textContent).toBe("alive");
    expect(String(errors.mock.calls[0]?.[0])).toContain('cannot subscribe to "not a topic"');
    expect(String(errors.mock.calls[0]?.[1])).toContain("invalid topic");
    errors.mockRestore();
  });
});

describe("getToken", () => {
  it("retries with backoff when getToken fails or hangs, then connects", async () => {
    const queryClient = newQueryClient();
    let calls = 0;
    const getToken = () => {
      calls += 1;
      if (calls === 1) return Promise.reject(new Error("auth service down"));
      if (calls === 2) return new Promise<string>(() => {}); // never settles
      return Promise.resolve("good");
    };
    const reasons: string[] = [];
    function Watch(): ReactNode {
      const s = useConnectionStatus();
      if (s.closeReason && reasons.at(-1) !== s.closeReason) reasons.push(s.closeReason);
      return <span data-testid="status">{s.state}</span>;
    }
    render(
      <TidingsProvider
        url="ws://test/ws"
        getToken={getToken}
        queryClient={queryClient}
        options={{ ...OPTIONS, connectTimeoutMs: 200 }}
      >
        <Watch />
      </TidingsProvider>,
    );
    const ws = await openSocket(1);
    expect(withoutCid(ws.url)).toBe("ws://test/ws");
    expect(ws.protocols).toEqual(["tidings", "tidings.token.good"]);
    await waitFor(() => expect(screen.getByTestId("status").textContent).toBe("open"));
    expect(calls).toBe(3);
    expect(reasons).toEqual([
      "getToken failed: auth service down",
      "getToken did not settle within connectTimeoutMs",
    ]);
  });
});

describe("TidingsClient.subscribe().ready", () => {
  it("resolves on the ack (at once for an acknowledged topic) and rejects on close", async () => {
    FakeWebSocket.autoReply = false;
    const client = new TidingsClient({ url: "ws://test/ws", token: "t", ...OPTIONS });
    const first = client.subscribe("list:1", () => {});
    const pending = client.subscribe("list:2", () => {});
    const ws = await openSocket(1);
    expect(ws.sent).toEqual([
      '{"action":"subscribe","topic":"list:1","position":true}',
      '{"action":"subscribe","topic":"list:2","position":true}',
      '{"action":"ping"}', // its answer (or any first frame) is what makes the status `open`
    ]);
    expect(client.status.state).toBe("connecting");
    let settled = false;
    void first.ready.then(() => (settled = true));
    await sleep(20);
    expect(settled).toBe(false); // no ack yet
    ws.push({ action: "subscribed", topic: "list:1" });
    await first.ready;
    // A second listener on an acknowledged topic is ready at once, with no new frame.
    const second = client.subscribe("list:1", () => {});
    await second.ready;
    expect(client.status.state).toBe("open");
    expect(ws.sent).toHaveLength(3);
    expect(client.topics).toEqual(["list:1", "list:2"]);
    client.close();
    await expect(pending.ready).rejects.toThrow("the client was closed");
    expect(client.status.state).toBe("closed");
    expect(() => client.subscribe("list:3", () => {})).toThrow("the client is closed");
  });
});

describe("useLiveQuery keeps its own key live", () => {
  function Todo({ id, fetches }: { id: string; fetches: { n: number } }): ReactNode {
    const query = useLiveQuery({
      queryKey: ["todos", id],
      queryFn: async () => {
        fetches.n += 1;
        return `todo ${id} v${fetches.n}`;
      },
      topic: `todo:${id}`, // no rule maps todo:{id}
    });
    return <span data-testid={`todo-${id}`}>{query.data ?? "loading"}</span>;
  }

  it("refetches on its topic's events and after a reconnect without recovery, once each", async () => {
    const queryClient = newQueryClient();
    const spy = vi.spyOn(queryClient, "invalidateQueries");
    const fetches = { n: 0 };
    render(
      <TidingsProvider url="ws://test/ws" token="t" queryClient={queryClient} options={OPTIONS}>
        <Todo id="1" fetches={fetches} />
        <List id="5" fetches={new Map()} />
      </TidingsProvider>,
    );
    const ws = await openSocket(1);
    expect(withoutCid(ws.url)).toBe("ws://test/ws");
    expect(ws.protocols).toEqual(["tidings", "tidings.token.t"]);
    await waitFor(() => expect(ws.server.subscribed).toEqual(new Set(["todo:1", "list:5"])));
    // The read/ack gap refetch (no read stamp).
    await waitFor(() => expect(screen.getByTestId("todo-1").textContent).toBe("todo 1 v2"));
    await sleep(100);
    spy.mockClear();

    act(() => {
      expect(ws.publish(event("todo:1"))).toBe(true);
    });
    await waitFor(() => expect(screen.getByTestId("todo-1").textContent).toBe("todo 1 v3"));
    // The rule-mapped live query (list:5 → ["lists","5"]) is invalidated once, not twice.
    act(() => {
      ws.publish(event("list:5"));
    });
    await waitFor(() => expect(invalidatedKeys(spy).sort()).toEqual(['["lists","5"]', '["todos","1"]']));

    // A reconnect whose acks do not say `recovered: true`: both are refetched once.
    spy.mockClear();
    act(() => ws.serverClose(1006));
    const ws2 = await openSocket(2);
    await waitFor(() => expect(ws2.server.subscribed).toEqual(new Set(["todo:1", "list:5"])));
    await waitFor(() => expect(screen.getByTestId("todo-1").textContent).toBe("todo 1 v4"), { timeout: 3_000 });
    // Spread over up to a second (jitter), each once.
    await waitFor(() => expect(invalidatedKeys(spy).sort()).toEqual(['["lists","5"]', '["todos","1"]']), {
      timeout: 3_000,
    });
    await sleep(50);
    expect(fetches.n).toBe(4);
  });

  it("reports once, in development, an event that no rule, live query or onEvent handles", async () => {
    const warn = vi.spyOn(console, "warn").mockImplementation(() => {});
    const queryClient = newQueryClient();
    function Sub(): ReactNode {
      useTopic("chat:1"); // subscribed, nothing refetches, no handler
      useTopic("chat:2", () => {}); // handled by the app
      useTopic("list:9"); // a rule maps it
      return null;
    }
    render(
      <TidingsProvider url="ws://test/ws" token="t" queryClient={queryClient} options={OPTIONS}>
        <Sub />
      </TidingsProvider>,
    );
    const ws = await openSocket(1);
    await waitFor(() => expect(ws.server.subscribed.size).toBe(3));
    act(() => {
      for (const topic of ["chat:1", "chat:1", "chat:2", "list:9"]) ws.publish(event(topic));
    });
    const warnings = warn.mock.calls.map((c) => String(c[0]));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain('an event on "chat:1" invalidated no query');
    warn.mockRestore();
  });
});

describe("honest status and the client API (issue 12)", () => {
  it("onStatus gives the current state first, then state changes only; everyChange gives every status", async () => {
    const client = new TidingsClient({ url: "ws://test/ws", token: "t", ...OPTIONS, autoConnect: false });
    const states: string[] = [];
    const every: string[] = [];
    const stop = client.onStatus((s) => states.push(s.state));
    client.onStatus((s) => every.push(`${s.state}:${s.attempts}${s.attempt ? `#${s.attempt}` : ""}`), {
      everyChange: true,
    });
    expect(states).toEqual(["idle"]); // delivered at once
    expect(client.status).toEqual({ state: "idle", attempts: 0 });
    await sleep(30);
    expect(FakeWebSocket.instances).toHaveLength(0); // nothing before connect()

    // The first socket fails before any answer: still `connecting`, never `reconnecting`.
    FakeWebSocket.autoReply = false;
    client.connect();
    const ws = await openSocket(1);
    act(() => ws.serverClose(1006));
    FakeWebSocket.autoReply = true;
    await openSocket(2);
    await waitFor(() => expect(client.status.state).toBe("open"));
    expect(states).toEqual(["idle", "connecting", "open"]);
    expect(every).toEqual(["idle:0", "connecting:1", "connecting:1#1", "connecting:2#1", "open:2"]);
    client.connect(); // no-op while open
    await sleep(30);
    expect(FakeWebSocket.instances).toHaveLength(2);

    stop();
    act(() => FakeWebSocket.latest().serverClose(1012));
    expect(states).toEqual(["idle", "connecting", "open"]); // stopped listening
    expect(client.status.state).toBe("reconnecting");
    client.close();
    expect(() => client.connect()).toThrow("the client is closed");
  });

  it("subscribe().unsubscribe is bound: usable directly as an effect cleanup", async () => {
    const queryClient = newQueryClient();
    const received: string[] = [];
    function Raw(): ReactNode {
      const client = useTidingsClient();
      useEffect(() => client?.subscribe("list:5", (e) => received.push(e.data.entity_id)).unsubscribe, [client]);
      return null;
    }
    function App({ show }: { show: boolean }): ReactNode {
      return (
        <TidingsProvider url="ws://test/ws" getToken={() => "t"} queryClient={queryClient} options={OPTIONS}>
          {show ? <Raw /> : null}
        </TidingsProvider>
      );
    }
    const { rerender } = render(<App show />);
    const ws = await openSocket(1);
    await waitFor(() => expect(ws.server.subscribed).toEqual(new Set(["list:5"])));
    act(() => void ws.publish(event("list:5", "x")));
    expect(received).toEqual(["x"]);
    rerender(<App show={false} />);
    await waitFor(() => expect(ws.server.subscribed).toEqual(new Set()));
    expect(ws.publish(event("list:5", "y"))).toBe(false);
  });

  it("an inline rules object does not rebind the client on every render, and its latest onEvent is called", async () => {
    const queryClient = newQueryClient();
    const proto = Object.getPrototypeOf(TidingsClient.prototype) as TidingsClient;
    const bind = vi.spyOn(proto, "bindQueryClient");
    const calls: string[] = [];
    let bump: () => void = () => {};
    function App(): ReactNode {
      const [n, setN] = useState(0);
      bump = () => setN((v) => v + 1);
      function Sub(): ReactNode {
        useTopic("list:9");
        return null;
      }
      return (
        <TidingsProvider
          url="ws://test/ws"
          getToken={() => "t"}
          queryClient={queryClient}
          options={OPTIONS}
          // A new object and a new function on every render, as people write it.
          rules={{
            topics: { "list:{id}": [["lists", "{id}"]] },
            onEvent: () => {
              calls.push(`render ${n}`);
              return undefined;
            },
          }}
        >
          <Sub />
        </TidingsProvider>
      );
    }
    render(<App />);
    const ws = await openSocket(1);
    await waitFor(() => expect(ws.server.subscribed).toEqual(new Set(["list:9"])));
    const bindsAfterMount = bind.mock.calls.length;
    expect(bindsAfterMount).toBe(2); // the app's rules + the live-query registry
    for (let i = 0; i < 3; i++) act(() => bump());
    act(() => void ws.publish(event("list:9")));
    expect(bind.mock.calls.length).toBe(bindsAfterMount);
    expect(calls).toEqual(["render 3"]);
    bind.mockRestore();
  });

  it("useConnectionStatus: connecting (with attempts) until the first open, never reconnecting", async () => {
    const queryClient = newQueryClient();
    const seen: string[] = [];
    function Watch(): ReactNode {
      const s = useConnectionStatus();
      const text = `${s.state}:${s.attempts ?? "-"}`;
      if (seen.at(-1) !== text) seen.push(text);
      return null;
    }
    FakeWebSocket.autoReply = false;
    render(
      <TidingsProvider url="ws://test/ws" getToken={() => "t"} queryClient={queryClient} options={OPTIONS}>
        <Watch />
      </TidingsProvider>,
    );
    const ws = await openSocket(1);
    act(() => ws.serverClose(1006));
    const ws2 = await openSocket(2);
    await sleep(20);
    expect(seen.at(-1)).toBe("connecting:2"); // handshake done, no answer yet
    act(() => ws2.push({ action: "pong" }));
    expect(seen).toEqual(["connecting:0", "connecting:1", "connecting:2", "open:2"]);
  });
});

describe("autoConnect: false under the provider", () => {
  it("is idle (before and after the client exists) until connect()", async () => {
    const queryClient = newQueryClient();
    function Watch(): ReactNode {
      const s = useConnectionStatus();
      const client = useTidingsClient();
      return (
        <>
          <span data-testid="status">{s.state}</span>
          <button onClick={() => client?.connect()}>connect</button>
        </>
      );
    }
    render(
      <TidingsProvider url="ws://test/ws" token="t" queryClient={queryClient} options={{ ...OPTIONS, autoConnect: false }}>
        <Watch />
      </TidingsProvider>,
    );
    expect(screen.getByTestId("status").textContent).toBe("idle");
    await sleep(30);
    expect(screen.getByTestId("status").textContent).toBe("idle");
    expect(FakeWebSocket.instances).toHaveLength(0);
    act(() => screen.getByText("connect").click());
    await openSocket(1);
    await waitFor(() => expect(screen.getByTestId("status").textContent).toBe("open"));
  });
});
