// `@tidings/client/react` under the `react-server` condition (React Server Components, e.g. a
// Next.js App Router server component importing it). The hooks need state, effects and a
// browser, which server components do not have, and React's server build lacks
// `createContext`: importing the real module there would throw. This one imports fine and
// says what to do when used. Types come from ./index.d.ts (the `types` condition).

export { TidingsClient } from "../index.js";
export { applyEntityEvent } from "./cache.js";

function clientOnly(name: string): never {
  throw new Error(
    `@tidings/client/react: ${name} runs in client components only: use it in a file that ` +
      'starts with "use client" (it was imported under the react-server condition)',
  );
}

export function TidingsProvider(): never {
  return clientOnly("<TidingsProvider>");
}

export function useTidingsClient(): never {
  return clientOnly("useTidingsClient()");
}

export function useConnectionStatus(): never {
  return clientOnly("useConnectionStatus()");
}

export function useTopic(): never {
  return clientOnly("useTopic()");
}

export function useLiveQuery(): never {
  return clientOnly("useLiveQuery()");
}

export function usePresence(): never {
  return clientOnly("usePresence()");
}
