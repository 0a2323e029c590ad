import { expect, test } from "vitest";
import { viewFromHash } from "./routes";

test("the addresses of the pages", () => {
  for (const home of ["", "#", "#/"]) expect(viewFromHash(home)).toBeNull();
  expect(viewFromHash("#/lists/2")).toEqual({ kind: "list", id: 2 });
  expect(viewFromHash("#/lists/99999")).toEqual({ kind: "list", id: 99999 });
  expect(viewFromHash("#/gifts")).toEqual({ kind: "gifts" });
});

test("an address with no page is not-found, never the first list", () => {
  for (const bad of ["#/lists/abc", "#/lists/", "#/lists/1x", "#/lists/-1", "#/nope", "#/lists/1234567890123456789"])
    expect(viewFromHash(bad)).toEqual({ kind: "not-found" });
});
