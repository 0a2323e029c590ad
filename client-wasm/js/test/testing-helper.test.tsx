// The recipe of the package README ("Testing"), with `@tidings/client/testing`: the wasm
// loaded from disk, a fake server behind globalThis.WebSocket, an event refetching a query.

import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { ReactNode } from "react";
import { act, cleanup, render, screen, waitFor } from "@testing-library/react";
import { QueryClient } from "@tanstack/react-query";
import { afterAll, afterEach, beforeAll, expect, it } from "vitest";
import { TidingsProvider, useConnectionStatus, useLiveQuery } from "../src/react/index.tsx";
import { event, installFakeServer, loadWasm, type FakeServer } from "../src/testing/index.ts";

let server: FakeServer;
beforeAll(async () => {
  // In an app: `await loadWasm()` (the package's own .wasm).
  await loadWasm(join(dirname(fileURLToPath(import.meta.url)), "../../pkg/tidings_client_bg.wasm"));
  server = installFakeServer();
});
afterEach(() => cleanup());
afterAll(() => server.restore());

let fetches = 0;
function Todo(): ReactNode {
  const status = useConnectionStatus();
  const todo = useLiveQuery({ queryKey: ["todo", 1], queryFn: async () => `v${++fetches}`, topic: "todo:1" });
  return <p data-testid="todo">{`${status.state} ${todo.data ?? "…"}`}</p>;
}

it("goes live against the fake server and refetches on an event", async () => {
  render(
    <TidingsProvider url="ws://test/ws" token="t" queryClient={new QueryClient()}>
      <Todo />
    </TidingsProvider>,
  );
  await waitFor(() => expect(screen.getByTestId("todo").textContent).toBe("open v1"));
  await waitFor(() => expect(server.latest().server.subscribed.has("todo:1")).toBe(true));
  act(() => {
    expect(server.publish(event("todo:1"))).toBe(1);
  });
  await waitFor(() => expect(screen.getByTestId("todo").textContent).toBe("open v2"));
  expect(server.sockets).toHaveLength(1);
});
