// A server component. It imports @tidings/client/react under the `react-server` condition
// (that must not throw) and server-renders the client component <Live>, which uses the hooks
// (that must not load the wasm or open a socket on the server).
import * as tidingsReact from "@tidings/client/react";
import { Live } from "./live";

export const dynamic = "force-dynamic";

export default async function Page({
  searchParams,
}: {
  searchParams: Promise<Record<string, string | string[] | undefined>>;
}) {
  const params = await searchParams;
  const one = (v: string | string[] | undefined, fallback: string) =>
    typeof v === "string" ? v : fallback;
  return (
    <main>
      <p id="server">server import ok: {typeof tidingsReact.useLiveQuery}</p>
      <Live
        url={one(params.ws, "ws://127.0.0.1:8000/ws")}
        token={one(params.token, "")}
        topic={one(params.topic, "todo:compat")}
      />
    </main>
  );
}
