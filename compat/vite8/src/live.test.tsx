// @vitest-environment jsdom
// The package README's testing recipe, as an app would write it: the wasm loaded from
// node_modules, a scripted server behind globalThis.WebSocket, an event refetching a query.
import { act, render, screen, waitFor } from "@testing-library/react";
import { QueryClient } from "@tanstack/react-query";
import { TidingsProvider, useLiveQuery } from "@tidings/client/react";
import { event, installFakeServer, loadWasm } from "@tidings/client/testing";
import { afterAll, beforeAll, expect, it } from "vitest";

let server: ReturnType<typeof installFakeServer>;
beforeAll(async () => {
  await loadWasm();
  server = installFakeServer();
});
afterAll(() => server.restore());

let fetches = 0;
function Todo({ id }: { id: string }) {
  const todo = useLiveQuery({ queryKey: ["todos", id], queryFn: async () => `v${++fetches}`, topic: `todo:${id}` });
  return <p>{todo.data}</p>;
}

it("refetches on an event", async () => {
  render(
    <TidingsProvider url="ws://test/ws" token="t" queryClient={new QueryClient()}>
      <Todo id="1" />
    </TidingsProvider>,
  );
  await waitFor(() => expect(server.latest().server.subscribed.has("todo:1")).toBe(true));
  act(() => void server.publish(event("todo:1")));
  await waitFor(() => expect(screen.getByText(/v2/)).toBeTruthy());
});
