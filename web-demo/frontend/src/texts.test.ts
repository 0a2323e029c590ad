import { describe, expect, test } from "vitest";
import { ApiError, shouldRetry } from "./api";
import { friendlyError, OFFLINE_MESSAGE, requestErrorMessage, statusLabel } from "./texts";
import { GIFT_STATUSES, ITEM_STATUSES } from "./types";

describe("status labels", () => {
  test("every status the API knows has the UI's word, never the code", () => {
    for (const s of [...ITEM_STATUSES, ...GIFT_STATUSES]) {
      const label = statusLabel(s);
      expect(label).not.toBe(s);
      expect(label).toMatch(/^[A-Z][a-z]+$/);
    }
    expect(statusLabel("PURCHASED")).toBe("Purchased");
    expect(statusLabel("WRAPPED")).toBe("Wrapped");
  });
  test("an unknown status is shown in sentence case", () => {
    expect(statusLabel("ON_HOLD")).toBe("On hold");
  });
});

describe("error messages", () => {
  test("a request that never reached the server", () => {
    expect(requestErrorMessage(0, undefined)).toBe(OFFLINE_MESSAGE);
    expect(friendlyError(new TypeError("Failed to fetch"))).toBe(OFFLINE_MESSAGE);
    expect(friendlyError(new TypeError("NetworkError when attempting to fetch resource."))).toBe(OFFLINE_MESSAGE);
    expect(OFFLINE_MESSAGE).not.toMatch(/fetch/i);
  });
  test("the API's own words, capitalised; a 5xx without details", () => {
    expect(requestErrorMessage(422, "name must not be empty")).toBe("Name must not be empty");
    expect(requestErrorMessage(500, "internal error")).toMatch(/server ran into a problem/);
    expect(requestErrorMessage(404, "gift 5 not found")).toBe("This gift no longer exists: someone may have deleted it.");
    expect(requestErrorMessage(404, "")).toBe("It no longer exists: someone may have deleted it.");
    expect(requestErrorMessage(418, undefined)).toBe("The request failed (HTTP 418).");
  });
  test("other errors keep their message", () => {
    expect(friendlyError(new Error("Boom"))).toBe("Boom");
    expect(friendlyError("x")).toMatch(/Something went wrong/);
  });
});

describe("retries", () => {
  test("a 404 is never retried (the not-found page shows at once)", () => {
    expect(shouldRetry(0, new ApiError(404, "Not found"))).toBe(false);
    expect(shouldRetry(0, new ApiError(422, "bad"))).toBe(false);
  });
  test("an unreachable server is retried a few times, a 5xx once", () => {
    expect(shouldRetry(0, new ApiError(0, OFFLINE_MESSAGE))).toBe(true);
    expect(shouldRetry(4, new ApiError(0, OFFLINE_MESSAGE))).toBe(true);
    expect(shouldRetry(5, new ApiError(0, OFFLINE_MESSAGE))).toBe(false);
    expect(shouldRetry(0, new ApiError(500, "x"))).toBe(true);
    expect(shouldRetry(1, new ApiError(500, "x"))).toBe(false);
  });
});
