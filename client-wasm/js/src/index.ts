// The entry point of @tidings/client: wasm-bindgen's module (tidings_client.js) behind an
// `init()` that loads the wasm in every environment an app runs in, and a `TidingsClient`
// that says clearly when it is used before `init()`.
//
// Why not wasm-bindgen's own `init()`: it fetches `new URL("tidings_client_bg.wasm",
// import.meta.url)`. Bundlers that copy the module elsewhere without the wasm (Vite 5–7's
// dependency pre-bundler in dev moves it to node_modules/.vite/deps/) get an HTML page back,
// and Node (Vitest, jsdom) cannot fetch a file: URL. Here the URL is tried first (the normal,
// cacheable path, also what a production build emits), its bytes are checked, and when they
// are not a wasm module the same bytes are imported from wasm-inline.js (base64, a separate
// chunk that is only downloaded in that case).

import wasmBindgenInit, {
  initSync as wasmBindgenInitSync,
  TidingsClient as WasmTidingsClient,
  type InitInput,
  type InitOutput,
  type SyncInitInput,
  type TidingsClientOptions,
} from "./tidings_client.js";

export { Subscription } from "./tidings_client.js";
export type {
  ConnectionState,
  ConnectionStatus,
  EventData,
  EventType,
  GetToken,
  InitInput,
  InitOutput,
  InvalidationRules,
  Payload,
  PresenceChange,
  PresenceInfo,
  PresenceListener,
  PresenceMember,
  PresenceMode,
  QueryClientLike,
  QueryKey,
  ServerMessage,
  StatusListener,
  StatusListenerOptions,
  SubscribeOptions,
  SyncInitInput,
  TidingsClientOptions,
  Topic,
  TopicListener,
  WSClientMessage,
  WSError,
  WSEvent,
  WSReply,
} from "./tidings_client.js";

/** Where `init()` takes the wasm module from (default: next to this file, then inlined). */
export interface InitOptions {
  /** A URL, a `Response`, the bytes or a compiled `WebAssembly.Module` (or a promise of one). */
  module_or_path?: InitInput | Promise<InitInput>;
}

let loading: Promise<InitOutput> | null = null;
let loaded = false;

const WASM_MAGIC = [0x00, 0x61, 0x73, 0x6d];

function isWasm(bytes: ArrayBuffer): boolean {
  const head = new Uint8Array(bytes, 0, Math.min(4, bytes.byteLength));
  return head.length === 4 && WASM_MAGIC.every((b, i) => head[i] === b);
}

/** The wasm next to this module, or `null` when that URL does not give a wasm module. */
async function fetchBeside(): Promise<ArrayBuffer | null> {
  try {
    const response = await fetch(new URL("./tidings_client_bg.wasm", import.meta.url));
    if (!response.ok) return null;
    const bytes = await response.arrayBuffer();
    return isWasm(bytes) ? bytes : null;
  } catch {
    // Node's fetch refuses file: URLs; a network error is retried through the inlined copy.
    return null;
  }
}

async function load(options?: InitOptions): Promise<InitOutput> {
  if (options?.module_or_path !== undefined) {
    return wasmBindgenInit({ module_or_path: options.module_or_path });
  }
  const beside = await fetchBeside();
  if (beside) return wasmBindgenInit({ module_or_path: beside });
  const inline = await import("./wasm-inline.js");
  return wasmBindgenInit({ module_or_path: inline.wasmBytes() });
}

/**
 * Loads the wasm module; call (and await) it once before `new TidingsClient(...)`.
 * `TidingsProvider` does it for you. Later calls share the first load; a failed load can be
 * retried by calling again.
 *
 * With no argument the wasm is fetched from beside this module (what bundlers emit), and
 * taken from an inlined copy where that URL does not serve it (Vite's dev pre-bundler, Node,
 * Vitest/jsdom). Pass `{ module_or_path }` to load it from elsewhere (a URL, bytes, a
 * `WebAssembly.Module`).
 */
export default function init(options?: InitOptions): Promise<InitOutput> {
  loading ??= load(options).then(
    (output) => {
      loaded = true;
      return output;
    },
    (error: unknown) => {
      loading = null;
      throw error;
    },
  );
  return loading;
}

/** Loads the wasm synchronously from bytes or a compiled module (e.g. in a worker or a test). */
export function initSync(module: { module: SyncInitInput } | SyncInitInput): InitOutput {
  const output = wasmBindgenInitSync(
    module instanceof WebAssembly.Module || ArrayBuffer.isView(module) || module instanceof ArrayBuffer
      ? { module }
      : module,
  );
  loaded = true;
  loading ??= Promise.resolve(output);
  return output;
}

/** Whether the wasm module is loaded (`init()` resolved, or `initSync` returned). */
export function isLoaded(): boolean {
  return loaded;
}

/** The message of using the client before the wasm is loaded. */
export const NOT_LOADED =
  "tidings: the wasm module is not loaded yet: `await init()` (the default export of " +
  "@tidings/client) before `new TidingsClient(...)`; <TidingsProvider> does it for you";

/**
 * A WebSocket client for a tidings server: subscriptions with reference counting, reconnects
 * with backoff and fresh tokens, keepalive, and TanStack Query invalidation.
 */
export class TidingsClient extends WasmTidingsClient {
  /**
   * Creates the client and starts connecting (with `autoConnect: false`: the state is `idle`
   * until `connect()`).
   *
   * @throws before `init()` has resolved, and for invalid options (missing `url`, a
   *   non-function `getToken`, a non-positive delay).
   */
  constructor(options: TidingsClientOptions) {
    if (!loaded) throw new Error(NOT_LOADED);
    super(options);
  }
}
