// usePresence and the client's presence API over the REAL wasm client, with the scripted server
// of `@tidings/client/testing` (its snapshots are what a tidings server sends after a subscribe
// with `presence`): members rendered, the subscribe's presence mode, leaving on unmount, one
// subscription per topic with the strongest mode, and no flicker across a reconnect.

import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { StrictMode, useState, type ReactNode } from "react";
import { act, cleanup, render, screen, waitFor } from "@testing-library/react";
import { QueryClient } from "@tanstack/react-query";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { TidingsClient, type PresenceChange } from "../src/index.ts";
import { TidingsProvider, usePresence } from "../src/react/index.tsx";
import { FakeWebSocket } from "../src/testing/fake-websocket.ts";
import { installFakeServer, loadWasm, type FakeServer } from "../src/testing/index.ts";

const OPTIONS = { initialDelayMs: 10, maxDelayMs: 20 };

let server: FakeServer;
beforeAll(async () => {
  await loadWasm(join(dirname(fileURLToPath(import.meta.url)), "../../pkg/tidings_client_bg.wasm"));
});
beforeEach(() => {
  server = installFakeServer();
});
afterEach(() => {
  cleanup();
  server.restore();
});

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function member(userId: string, name: string, connections = 1) {
  return { user_id: userId, info: { name }, connections };
}

/** The subscribe/unsubscribe frames a socket sent for `topic`, as `sub:<presence>` / `unsub`. */
function frames(ws: FakeWebSocket, topic: string): string[] {
  return ws.sent
    .map((f) => JSON.parse(f) as { action: string; topic?: string; presence?: string })
    .filter((m) => m.topic === topic)
    .map((m) => (m.action === "subscribe" ? `sub:${m.presence ?? "none"}` : "unsub"));
}

/** Renders the present users' names, and records every list it rendered. */
function Avatars({ topic, join, renders }: { topic: string; join?: boolean; renders?: string[][] }): ReactNode {
  const members = usePresence(topic, { join });
  const names = members.map((m) => String(m.info.name));
  renders?.push(names);
  return <span data-testid={`${topic}-${join ? "join" : "watch"}`}>{names.join(",")}</span>;
}

function provider(children: ReactNode): ReactNode {
  return (
    <TidingsProvider url="ws://test/ws" token="t" queryClient={new QueryClient()} options={OPTIONS}>
      {children}
    </TidingsProvider>
  );
}

describe("usePresence", () => {
  it("joins, renders the members and their changes, and leaves on unmount", async () => {
    server.setPresence("list:1", [member("1", "Mom")]);
    function Page(): ReactNode {
      const [shown, setShown] = useState(true);
      return (
        <>
          <button onClick={() => setShown(false)}>hide</button>
          {shown ? <Avatars topic="list:1" join /> : null}
        </>
      );
    }
    render(<StrictMode>{provider(<Page />)}</StrictMode>);
    await waitFor(() => expect(screen.getByTestId("list:1-join").textContent).toBe("Mom"));
    const ws = server.latest();
    expect(ws.server.presence.get("list:1")).toBe("join");
    // StrictMode mounts the effect twice before the socket opens: one subscribe on the wire.
    expect(frames(ws, "list:1")).toEqual(["sub:join"]);

    act(() => {
      server.setPresence("list:1", [member("1", "Mom"), member("2", "Dad")]);
    });
    expect(screen.getByTestId("list:1-join").textContent).toBe("Mom,Dad");
    act(() => {
      server.setPresence("list:1", [member("2", "Dad", 2)]);
    });
    expect(screen.getByTestId("list:1-join").textContent).toBe("Dad");

    act(() => screen.getByText("hide").click());
    await waitFor(() => expect(ws.server.subscribed.has("list:1")).toBe(false));
    expect(frames(ws, "list:1")).toEqual(["sub:join", "unsub"]);
  });

  it("a watcher and a joiner share one subscription with the strongest mode", async () => {
    server.setPresence("list:2", [member("3", "Kid")]);
    function Page(): ReactNode {
      const [joined, setJoined] = useState(false);
      return (
        <>
          <button onClick={() => setJoined((j) => !j)}>toggle</button>
          <Avatars topic="list:2" />
          {joined ? <Avatars topic="list:2" join /> : null}
        </>
      );
    }
    render(provider(<Page />));
    await waitFor(() => expect(screen.getByTestId("list:2-watch").textContent).toBe("Kid"));
    const ws = server.latest();
    expect(frames(ws, "list:2")).toEqual(["sub:watch"]);
    // The joiner mounts: the topic is subscribed again with `join` (the server has no
    // "change presence" message), and both see the same members.
    act(() => screen.getByText("toggle").click());
    await waitFor(() => expect(frames(ws, "list:2")).toEqual(["sub:watch", "unsub", "sub:join"]));
    await waitFor(() => expect(screen.getByTestId("list:2-join").textContent).toBe("Kid"));
    expect(ws.server.presence.get("list:2")).toBe("join");
    // The joiner unmounts: back to watching, still subscribed.
    act(() => screen.getByText("toggle").click());
    await waitFor(() =>
      expect(frames(ws, "list:2")).toEqual(["sub:watch", "unsub", "sub:join", "unsub", "sub:watch"]),
    );
    expect(ws.server.presence.get("list:2")).toBe("watch");
    expect(screen.getByTestId("list:2-watch").textContent).toBe("Kid");
  });

  it("keeps the members across a reconnect and changes only the difference (no flicker)", async () => {
    server.setPresence("list:3", [member("1", "Mom"), member("2", "Dad")]);
    const renders: string[][] = [];
    render(provider(<Avatars topic="list:3" join renders={renders} />));
    await waitFor(() => expect(screen.getByTestId("list:3-join").textContent).toBe("Mom,Dad"));
    const ws = server.latest();
    const seen = renders.length;

    // The server restarts; meanwhile Dad left and Kid arrived.
    FakeWebSocket.presence.set("list:3", [member("3", "Kid"), member("1", "Mom")]);
    act(() => server.closeAll(1012, "service restart"));
    await waitFor(() => expect(server.sockets.length).toBe(2));
    await waitFor(() => expect(screen.getByTestId("list:3-join").textContent).toBe("Mom,Kid"));
    const ws2 = server.latest();
    expect(ws2).not.toBe(ws);
    expect(frames(ws2, "list:3")).toEqual(["sub:join"]);
    // Mom was on every render since she first appeared, keeping her place; Dad stayed until
    // the new snapshot (kept while reconnecting).
    for (const names of renders.slice(seen)) expect(names[0]).toBe("Mom");
    expect(renders.slice(seen).map((n) => n.join(","))).not.toContain("");
  });
});

describe("client.presence / onPresence", () => {
  it("tells joins and leaves, and the same array until a change", async () => {
    server.setPresence("list:4", [member("1", "Mom")]);
    const client = new TidingsClient({ url: "ws://test/ws", token: "t", ...OPTIONS });
    const changes: PresenceChange[] = [];
    const stop = client.onPresence("list:4", (c) => changes.push(c));
    expect(client.presence("list:4")).toEqual([]);
    expect(() => client.subscribe("list:4", () => {}, { presence: "here" as "join" })).toThrow(
      'options.presence must be "join" or "watch"',
    );
    const sub = client.subscribe("list:4", () => {}, { presence: "watch" });
    await sub.ready;
    await waitFor(() => expect(changes).toHaveLength(1));
    expect(changes[0]).toEqual({ topic: "list:4", members: [member("1", "Mom")], joined: [member("1", "Mom")], left: [] });
    const members = client.presence("list:4");
    expect(client.presence("list:4")).toBe(members);
    expect(Object.isFrozen(members)).toBe(true);

    server.setPresence("list:4", [member("1", "Mom")]);
    await sleep(10);
    expect(changes).toHaveLength(1); // nothing changed
    expect(client.presence("list:4")).toBe(members);

    server.setPresence("list:4", [member("2", "Dad")]);
    expect(changes[1]).toEqual({
      topic: "list:4",
      members: [member("2", "Dad")],
      joined: [member("2", "Dad")],
      left: [member("1", "Mom")],
    });
    // A present user's other tab: a change, neither a join nor a leave.
    server.latest().push({ action: "presence_join", topic: "list:4", member: member("2", "Dad", 2) });
    expect(changes[2]).toMatchObject({ joined: [], left: [], members: [member("2", "Dad", 2)] });
    server.latest().push({ action: "presence_leave", topic: "list:4", user_id: "2" });
    expect(changes[3]).toMatchObject({ joined: [], left: [member("2", "Dad", 2)], members: [] });
    server.latest().push({ action: "presence_join", topic: "list:4", member: member("1", "Mom") });
    expect(client.presence("list:4")).toEqual([member("1", "Mom")]);

    // Unsubscribing ends presence: everyone leaves, for the app.
    sub.unsubscribe();
    expect(changes[5]).toMatchObject({ joined: [], left: [member("1", "Mom")], members: [] });
    expect(client.presence("list:4")).toEqual([]);
    stop();
    client.close();
  });

  it("shows nobody present once the connection stopped for good", async () => {
    server.setPresence("list:5", [member("1", "Mom")]);
    const client = new TidingsClient({ url: "ws://test/ws", token: "t", ...OPTIONS });
    const changes: PresenceChange[] = [];
    client.onPresence("list:5", (c) => changes.push(c));
    await client.subscribe("list:5", () => {}, { presence: "join" }).ready;
    await waitFor(() => expect(client.presence("list:5")).toEqual([member("1", "Mom")]));
    // A reconnect keeps the members...
    server.closeAll(1012, "restart");
    expect(client.presence("list:5")).toEqual([member("1", "Mom")]);
    await waitFor(() => expect(client.status.state).toBe("open"));
    expect(changes).toHaveLength(1);
    // ...a terminal close (1008, policy) does not: no connection will tell who comes and goes.
    server.closeAll(1008, "policy");
    expect(client.status.state).toBe("closed");
    expect(client.presence("list:5")).toEqual([]);
    expect(changes.at(-1)).toMatchObject({ joined: [], left: [member("1", "Mom")], members: [] });
    client.close();
  });
});
