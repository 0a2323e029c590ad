// The "live" column of the node-jose row: a token minted by the README recipe is accepted by a
// real tidings (JWT_SECRET from the environment): connect, subscribe, receive an event published
// over HTTP (TIDINGS_HTTP, TIDINGS_PUBLISHER). Node 20 needs --experimental-websocket.
import { subscriberToken } from "./token.js";

const { JWT_SECRET, TIDINGS_WS, TIDINGS_HTTP, TIDINGS_PUBLISHER } = process.env;
if (!JWT_SECRET || !TIDINGS_WS || !TIDINGS_HTTP || !TIDINGS_PUBLISHER) throw new Error("env missing");
const topic = `todo:jose-${Date.now()}`;
const token = await subscriberToken(JWT_SECRET, "compat-user", ["todo:*"]);
const ws = new WebSocket(`${TIDINGS_WS}?token=${encodeURIComponent(token)}`);
const timer = setTimeout(() => {
  console.log("LIVE node-jose FAIL no event within 15 s");
  process.exit(1);
}, 15_000);
ws.onmessage = async (message) => {
  const frame = JSON.parse(String(message.data)) as { action?: string; topic?: string; event?: string };
  if (frame.action === "subscribed" && frame.topic === topic) {
    const response = await fetch(`${TIDINGS_HTTP}/publish`, {
      method: "POST",
      headers: { authorization: `Bearer ${TIDINGS_PUBLISHER}`, "content-type": "application/json" },
      body: JSON.stringify({
        topic,
        event: "UPDATED",
        data: { entity_id: "1", payload: {}, user_id: "compat", timestamp: new Date().toISOString() },
      }),
    });
    if (!response.ok) throw new Error(`publish: HTTP ${response.status}`);
  } else if (frame.event && frame.topic === topic) {
    clearTimeout(timer);
    console.log("LIVE node-jose ok");
    ws.close();
  } else if (!frame.action || frame.action === "error") {
    console.log(`LIVE node-jose FAIL ${JSON.stringify(frame)}`);
    process.exit(1);
  }
};
ws.onopen = () => ws.send(JSON.stringify({ action: "subscribe", topic }));
ws.onclose = (e) => {
  if (e.code !== 1000 && e.code !== 1005) {
    console.log(`LIVE node-jose FAIL closed ${e.code} ${e.reason}`);
    process.exit(1);
  }
};
