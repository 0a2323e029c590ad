// A wasm that fails to load is a status the hooks expose, not an eternal "connecting".

import type { ReactNode } from "react";
import { cleanup, render, screen, waitFor } from "@testing-library/react";
import { QueryClient } from "@tanstack/react-query";
import { afterEach, expect, it, vi } from "vitest";

vi.mock("../src/index.ts", async (importOriginal) => ({
  ...(await importOriginal<typeof import("../src/index.ts")>()),
  default: () => Promise.reject(new Error("CompileError: expected magic word 00 61 73 6d")),
}));

const { TidingsProvider, useConnectionStatus } = await import("../src/react/index.tsx");

afterEach(() => cleanup());

it("reports { state: 'failed' } with the reason when init() rejects", async () => {
  const errors = vi.spyOn(console, "error").mockImplementation(() => {});
  function Status(): ReactNode {
    const s = useConnectionStatus();
    return <span data-testid="status">{`${s.state}: ${s.closeReason ?? ""}`}</span>;
  }
  render(
    <TidingsProvider url="ws://test/ws" token="t" queryClient={new QueryClient()}>
      <Status />
    </TidingsProvider>,
  );
  await waitFor(() =>
    expect(screen.getByTestId("status").textContent).toBe(
      "failed: could not load the wasm module: Error: CompileError: expected magic word 00 61 73 6d",
    ),
  );
  expect(String(errors.mock.calls[0]?.[0])).toContain("could not load the wasm module");
  errors.mockRestore();
});
