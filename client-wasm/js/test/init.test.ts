// init() with no argument under Node (jsdom): the URL beside the module cannot be fetched
// (file:), so the inlined copy is used; before it, the client says what to do.

import { expect, it } from "vitest";
import init, { isLoaded, TidingsClient } from "../src/index.ts";

it("throws a clear error before init(), then init() loads the wasm with no argument", async () => {
  expect(isLoaded()).toBe(false);
  expect(() => new TidingsClient({ url: "ws://test/ws", token: "t" })).toThrow(
    /the wasm module is not loaded yet: `await init\(\)`/,
  );
  await init();
  expect(isLoaded()).toBe(true);
  expect(init()).toBe(init()); // one load per page
  // A client can be created now (no WebSocket in this environment is needed to construct it).
  globalThis.WebSocket = class {
    onopen = null;
    onmessage = null;
    onclose = null;
    readyState = 0;
    send(): void {}
    close(): void {}
  } as unknown as typeof WebSocket;
  const client = new TidingsClient({ url: "ws://test/ws", token: "t" });
  expect(client.status.state).toBe("connecting");
  client.close();
  expect(client.status.state).toBe("closed");
});
