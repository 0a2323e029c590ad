//! A recovering subscriber for the recovery tests: remembers the last position per topic,
//! resubscribes with `since` and checks that events arrive exactly once, in order.

use serde_json::json;
use tidings_server::protocol::{ServerMessage, WSEvent, WSReply};

use super::{Ws, recv_raw, send};

/// The ack and the events that came before it (the replay, plus anything queued earlier).
pub struct Subscribed {
    pub events: Vec<WSEvent>,
    pub recovered: Option<bool>,
}

/// The next frame, which must be an event.
pub async fn next_event(ws: &mut Ws) -> WSEvent {
    let text = recv_raw(ws).await;
    match ServerMessage::parse(&text) {
        Ok(ServerMessage::Event(e)) => e,
        other => panic!("expected an event, got {other:?}"),
    }
}

/// Sends a subscribe (with `since` when given) and reads up to its ack.
pub async fn subscribe_since(ws: &mut Ws, topic: &str, since: Option<(u64, &str)>) -> Subscribed {
    let msg = match since {
        Some((seq, epoch)) => {
            json!({"action": "subscribe", "topic": topic, "since": {"seq": seq, "epoch": epoch}})
        }
        None => json!({"action": "subscribe", "topic": topic}),
    };
    send(ws, &msg.to_string()).await;
    let mut events = Vec::new();
    loop {
        let text = recv_raw(ws).await;
        match ServerMessage::parse(&text) {
            Ok(ServerMessage::Event(e)) => events.push(e),
            Ok(ServerMessage::Reply(WSReply::Subscribed {
                topic: t,
                recovered,
                ..
            })) if t.as_str() == topic => {
                return Subscribed { events, recovered };
            }
            other => panic!("unexpected while subscribing: {other:?} ({text})"),
        }
    }
}

/// What one client saw on one topic.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    pub epoch: Option<String>,
    pub last_seq: u64,
    /// Entity ids, in arrival order.
    pub entities: Vec<String>,
}

impl Seen {
    /// Records `event`; panics on a gap or a duplicate within one epoch.
    pub fn record(&mut self, event: &WSEvent) {
        let seq = event.seq.expect("event without seq");
        let epoch = event.epoch.clone().expect("event without epoch");
        if self.epoch.as_deref() == Some(epoch.as_str()) {
            assert_eq!(
                seq,
                self.last_seq + 1,
                "gap or duplicate on {} (entities so far {})",
                event.topic,
                self.entities.len()
            );
        } else {
            assert!(self.epoch.is_none(), "epoch changed on {}", event.topic);
            assert_eq!(seq, 1, "first event of {} is not seq 1", event.topic);
            self.epoch = Some(epoch);
        }
        self.last_seq = seq;
        self.entities.push(event.data.entity_id.clone());
    }

    /// The position to resubscribe with.
    pub fn since(&self) -> Option<(u64, &str)> {
        self.epoch.as_deref().map(|e| (self.last_seq, e))
    }
}
