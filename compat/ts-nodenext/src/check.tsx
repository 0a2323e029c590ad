// Type-level checks of @tidings/client as an app under nodenext/node16 sees it: every entry
// resolves, and no public type is `any` (each `NotAny<…>` fails to compile on an `any`).
import init, {
  TidingsClient,
  type ConnectionStatus,
  type GetToken,
  type InvalidationRules,
  type Subscription,
  type TidingsClientOptions,
  type WSEvent,
} from "@tidings/client";
import {
  TidingsProvider,
  useConnectionStatus,
  useLiveQuery,
  useTopic,
  type TidingsProviderProps,
  type TidingsStatus,
} from "@tidings/client/react";
import { event, installFakeServer, loadWasm, type FakeServer } from "@tidings/client/testing";
import { QueryClient } from "@tanstack/react-query";

type IsAny<T> = 0 extends 1 & T ? true : false;
type NotAny<T> = IsAny<T> extends true ? never : T;
function notAny<T>(_value: NotAny<T>): void {}
type IsNotAny<T> = 0 extends 1 & T ? false : true;
type Assert<T extends true> = T;
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;

export type Checked = [
  Assert<IsNotAny<WSEvent>>,
  Assert<IsNotAny<WSEvent["data"]>>,
  Assert<IsNotAny<WSEvent["data"]["payload"]>>,
  Assert<IsNotAny<ConnectionStatus>>,
  Assert<IsNotAny<TidingsStatus>>,
  Assert<IsNotAny<TidingsClientOptions>>,
  Assert<IsNotAny<InvalidationRules>>,
  Assert<IsNotAny<Subscription>>,
  Assert<IsNotAny<TidingsProviderProps["queryClient"]>>,
  Assert<IsNotAny<TidingsProviderProps["getToken"]>>,
  // One token type for the client and the provider.
  Assert<Equal<TidingsProviderProps["getToken"], GetToken | undefined>>,
  Assert<Equal<TidingsClientOptions["getToken"], GetToken | undefined>>,
  Assert<IsNotAny<ReturnType<TidingsClient["onStatus"]>>>,
  Assert<IsNotAny<ReturnType<TidingsClient["bindQueryClient"]>>>,
  Assert<IsNotAny<Awaited<ReturnType<typeof init>>>>,
  Assert<IsNotAny<FakeServer>>,
];

export async function useIt(): Promise<void> {
  await init();
  const client = new TidingsClient({ url: "ws://localhost:8000/ws", getToken: async () => "t" });
  const sub = client.subscribe("list:1", (e) => notAny(e.data.entity_id));
  await sub.ready;
  const off: () => void = client.onStatus((s) => notAny(s.state));
  const offEvery: () => void = client.onStatus((s) => notAny(s.attempts), { everyChange: true });
  // A bound function: usable as an effect cleanup as is.
  const stop: () => void = sub.unsubscribe;
  client.connect();
  offEvery();
  stop();
  const unbind: () => void = client.bindQueryClient(new QueryClient());
  off();
  unbind();
  await loadWasm();
  const server = installFakeServer();
  server.publish(event("list:1"));
  server.restore();
}

export function Component() {
  const status = useConnectionStatus();
  useTopic("list:1", (e) => notAny(e.event));
  const query = useLiveQuery({ queryKey: ["todo", 1], queryFn: async () => 42, topic: "todo:1" });
  const n: number | undefined = query.data;
  return (
    <TidingsProvider url="ws://x/ws" token="t" queryClient={new QueryClient()}>
      {status.state} {n}
    </TidingsProvider>
  );
}
