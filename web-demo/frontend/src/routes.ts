// The pages of the UI and the addresses (`location.hash`) that name them.

export type View = { kind: "list"; id: number } | { kind: "gifts" } | { kind: "not-found" };

/**
 * The view an address names; `null` (no route: "", "#", "#/") opens the first list. Anything
 * else this UI has no page for (`#/lists/abc`, `#/nope`) is a not-found page, never another
 * list; an id that looks right but does not exist is found out by the API (ListView).
 */
export function viewFromHash(hash: string): View | null {
  if (hash === "" || hash === "#" || hash === "#/") return null;
  const m = /^#\/lists\/(\d{1,15})$/.exec(hash);
  if (m) return { kind: "list", id: Number(m[1]) };
  if (hash === "#/gifts") return { kind: "gifts" };
  return { kind: "not-found" };
}
