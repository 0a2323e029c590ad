// Fewer requests: invalidations of one key coalesced per burst, a refetch in flight followed by
// exactly one more, cache updates from events instead of refetches, and read stamps that spare
// the read/ack gap refetch. Real wasm client, scripted WebSocket (as hooks.test.tsx).

import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { ReactNode } from "react";
import { act, cleanup, render, screen, waitFor } from "@testing-library/react";
import { QueryClient } from "@tanstack/react-query";
import { afterEach, beforeAll, beforeEach, expect, it } from "vitest";
import {
  TidingsProvider,
  applyEntityEvent,
  useLiveQuery,
  useTidingsClient,
  type TidingsClient,
  type WSEvent,
} from "../src/react/index.tsx";
import { FakeWebSocket, event } from "../src/testing/fake-websocket.ts";
import { loadWasm } from "../src/testing/index.ts";

const OPTIONS = { initialDelayMs: 10, maxDelayMs: 20 };

beforeAll(async () => {
  globalThis.WebSocket = FakeWebSocket as unknown as typeof WebSocket;
  await loadWasm(join(dirname(fileURLToPath(import.meta.url)), "../../pkg/tidings_client_bg.wasm"));
});
beforeEach(() => FakeWebSocket.reset());
afterEach(() => cleanup());

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

async function openSocket(): Promise<FakeWebSocket> {
  await waitFor(() => expect(FakeWebSocket.instances.length).toBe(1));
  const ws = FakeWebSocket.latest();
  act(() => ws.open());
  return ws;
}

interface Row {
  id: string;
  v?: number;
}

/** A live list of rows whose fetches are counted; its queryFn takes `delayMs` to answer. */
function Rows(props: {
  fetches: number[];
  delayMs?: number;
  update?: (old: Row[] | undefined, e: WSEvent) => Row[] | undefined;
  stamp?: () => string | null;
}): ReactNode {
  const client = useTidingsClient();
  const query = useLiveQuery({
    queryKey: ["rows"],
    queryFn: async () => {
      props.fetches.push(Date.now());
      await sleep(props.delayMs ?? 0);
      // What an app's fetch wrapper does with the response's `tidings-positions` header.
      if (props.stamp) client?.noteReadStamp(props.stamp());
      return [{ id: "1" }];
    },
    topic: "rows:all",
    update: props.update,
    enabled: client !== null,
  });
  return <span data-testid="rows">{JSON.stringify(query.data ?? null)}</span>;
}

function mount(ui: ReactNode) {
  const queryClient = new QueryClient({ defaultOptions: { queries: { retry: false, staleTime: Infinity } } });
  render(
    <TidingsProvider url="ws://test/ws" token="t" queryClient={queryClient} options={OPTIONS}>
      {ui}
    </TidingsProvider>,
  );
  return queryClient;
}

/** The subscribe frames the client sent on `ws` (the client also pings on open). */
function subscribes(ws: FakeWebSocket): { action: string; since?: unknown }[] {
  return ws.sent
    .map((f) => JSON.parse(f) as { action: string; since?: unknown })
    .filter((f) => f.action === "subscribe");
}

/** Opens the socket, acks with a position, and waits until the first read and its gap check are done. */
async function ready(fetches: number[], expected: number): Promise<FakeWebSocket> {
  FakeWebSocket.autoReply = false;
  const ws = await openSocket();
  await waitFor(() => expect(ws.server.subscribed.has("rows:all")).toBe(true));
  await waitFor(() => expect(fetches.length).toBeGreaterThan(0));
  // As the server answers: `recovered` for a subscribe with `since` (the replay, if any, is
  // not scripted here).
  const last = subscribes(ws).at(-1)!;
  const recovered = last.since ? { recovered: true } : {};
  act(() => ws.push({ action: "subscribed", topic: "rows:all", ...recovered, seq: 4, epoch: "e" }));
  await sleep(200);
  expect(fetches).toHaveLength(expected);
  return ws;
}

it("a burst of events refetches once, after the last event", async () => {
  const fetches: number[] = [];
  mount(<Rows fetches={fetches} stamp={() => '[{"topic":"rows:all","seq":4,"epoch":"e"}]'} />);
  const ws = await ready(fetches, 1); // stamped at the ack's position: no gap refetch
  let last = 0;
  for (let i = 0; i < 10; i++) {
    act(() => {
      ws.publish({ ...event("rows:all", String(i)), seq: 5 + i, epoch: "e" } as never);
    });
    last = Date.now();
    await sleep(5);
  }
  await sleep(300);
  expect(fetches).toHaveLength(2);
  expect(fetches[1]).toBeGreaterThanOrEqual(last);
});

it("an event during a refetch is followed by exactly one more", async () => {
  const fetches: number[] = [];
  const stamp = () => '[{"topic":"rows:all","seq":4,"epoch":"e"}]';
  mount(<Rows fetches={fetches} delayMs={150} stamp={stamp} />);
  const ws = await ready(fetches, 1);
  act(() => {
    ws.publish({ ...event("rows:all", "1"), seq: 5, epoch: "e" } as never);
  });
  await sleep(80); // the refetch is in flight now
  expect(fetches).toHaveLength(2);
  act(() => {
    ws.publish({ ...event("rows:all", "2"), seq: 6, epoch: "e" } as never);
  });
  await sleep(600);
  expect(fetches).toHaveLength(3);
});

it("an update rule applies the event to the cache: no refetch", async () => {
  const fetches: number[] = [];
  const update = (old: Row[] | undefined, e: WSEvent) => applyEntityEvent(old, e);
  mount(<Rows fetches={fetches} update={update} stamp={() => '[{"topic":"rows:all","seq":4,"epoch":"e"}]'} />);
  const ws = await ready(fetches, 1);
  act(() => {
    ws.publish({ ...event("rows:all", "2", "ADDED"), seq: 5, epoch: "e" } as never);
    ws.publish({ ...event("rows:all", "1", "DELETED"), seq: 6, epoch: "e" } as never);
  });
  await waitFor(() => expect(screen.getByTestId("rows").textContent).toBe('[{"id":"2"}]'));
  await sleep(200);
  expect(fetches).toHaveLength(1);
});

it("without a read stamp the read/ack gap costs one refetch; a stamp behind the ack replays", async () => {
  const fetches: number[] = [];
  mount(<Rows fetches={fetches} />);
  await ready(fetches, 2);
  cleanup();
  FakeWebSocket.reset();
  // Stamped at seq 3, acked at 4: event 4 came in between. Resubscribed from 3 (replayed),
  // not refetched.
  const again: number[] = [];
  mount(<Rows fetches={again} stamp={() => '[{"topic":"rows:all","seq":3,"epoch":"e"}]'} />);
  const ws = await ready(again, 1);
  // Subscribed (or resubscribed, when the stamp came after the subscribe) from the stamp.
  expect(subscribes(ws).at(-1)).toMatchObject({ action: "subscribe", since: { seq: 3, epoch: "e" }, position: true });
});

it("applyEntityEvent adds, replaces and removes by entity_id", () => {
  const rows = [{ id: 1, n: "a" }];
  const e = (kind: string, id: string, payload: object) =>
    ({ topic: "t", event: kind, data: { entity_id: id, payload, user_id: "u", timestamp: "t" } }) as WSEvent;
  expect(applyEntityEvent(rows, e("ADDED", "2", { id: 2, n: "b" }))).toEqual([rows[0], { id: 2, n: "b" }]);
  expect(applyEntityEvent(rows, e("UPDATED", "1", { id: 1, n: "c" }))).toEqual([{ id: 1, n: "c" }]);
  expect(applyEntityEvent(rows, e("DELETED", "1", {}))).toEqual([]);
  expect(applyEntityEvent(undefined, e("ADDED", "1", {}))).toBeUndefined();
});

export type { TidingsClient };

it("after a reconnect that recovers nothing, the refetches of many topics are spread out", async () => {
  const fetched: Record<string, number[]> = {};
  function Topic({ n }: { n: number }): ReactNode {
    useLiveQuery({
      queryKey: ["t", n],
      queryFn: async () => {
        (fetched[n] ??= []).push(Date.now());
        return n;
      },
      topic: `t:${n}`,
    });
    return null;
  }
  mount(
    <>
      {[0, 1, 2, 3, 4, 5, 6, 7].map((n) => (
        <Topic key={n} n={n} />
      ))}
    </>,
  );
  const ws = await openSocket();
  await waitFor(() => expect(ws.server.subscribed.size).toBe(8));
  await sleep(300); // first reads and their gap refetches
  const before = Object.values(fetched).map((f) => f.length);
  act(() => ws.serverClose(1012, "restart"));
  await waitFor(() => expect(FakeWebSocket.instances.length).toBe(2));
  act(() => FakeWebSocket.latest().open()); // acks without `recovered`: nothing replayed
  await sleep(1_500);
  const refetchedAt = Object.values(fetched).map((f, i) => {
    expect(f.length).toBe(before[i]! + 1); // each topic once
    return f.at(-1)!;
  });
  // Not in one instant: spread over the jitter window (1 s).
  expect(Math.max(...refetchedAt) - Math.min(...refetchedAt)).toBeGreaterThan(50);
});
