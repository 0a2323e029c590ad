//! Which realtime events each change produces: topics, event type, event data and audience.
//!
//! Item changes go to the item's list (`list:{id}`) and to `list-items:all`; gift changes to
//! `gifts:all`; occasion changes to `occasion:{id}` and the occasion index `occasions:all`;
//! list changes (created, renamed, deleted) to the list index `lists:all`. The payload is the
//! entity as the REST API returns it, plus `actor_id` / `actor_name` so a UI can say "Mom
//! marked 'Lego set' PURCHASED" without another request; a comment event also carries the new
//! `comment`.
//!
//! Each event says whom it is for ([`Share`]): surprises are kept by publishing the full
//! event to everyone but the recipient and, where the recipient may know of the change, a
//! redacted copy to the recipient alone (see [`crate::surprise`]).

use serde::Serialize;
use tidings_protocol::{EventData, EventType, Payload, Topic, WSEvent};

use crate::model::{Comment, Gift, Item, ListSummary, Member, Occasion};
use crate::store::now_rfc3339;
use crate::surprise;

/// `occasions:all`: every occasion created, edited or deleted (the sidebar's index).
pub const OCCASIONS_TOPIC: &str = "occasions:all";
/// `lists:all`: every list created, renamed or deleted (the sidebar's index).
pub const LISTS_TOPIC: &str = "lists:all";

/// Whom an event is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Share {
    /// Every subscriber.
    Everyone,
    /// Every subscriber but this member's connections (the recipient of a surprise).
    AllBut(i64),
    /// This member's connections only (the redacted copy for the recipient).
    Only(i64),
}

/// An event to publish, with its audience.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The event.
    pub event: WSEvent,
    /// Who gets it.
    pub share: Share,
}

fn shared(events: Vec<WSEvent>, share: Share) -> impl Iterator<Item = Outgoing> {
    events
        .into_iter()
        .map(move |event| Outgoing { event, share })
}

/// An event payload: the entity's fields, flattened, and who made the change.
#[derive(Serialize)]
struct ChangePayload<'a, T> {
    #[serde(flatten)]
    entity: &'a T,
    actor_id: i64,
    actor_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    comment: Option<&'a Comment>,
}

fn events<T: Serialize>(
    topics: Vec<Topic>,
    event: EventType,
    entity_id: i64,
    entity: &T,
    actor: &Member,
    comment: Option<&Comment>,
) -> Result<Vec<WSEvent>, serde_json::Error> {
    let payload = Payload::from_value(&ChangePayload {
        entity,
        actor_id: actor.id,
        actor_name: &actor.name,
        comment,
    })?;
    let data = EventData {
        entity_id: entity_id.to_string(),
        payload,
        user_id: actor.id.to_string(),
        timestamp: now_rfc3339(),
    };
    Ok(topics
        .into_iter()
        .map(|topic| WSEvent::new(topic, event.clone(), data.clone()))
        .collect())
}

/// Events for a change of `item` (`comment` for [`EventType::CommentAdded`]): the full
/// event for everyone but the list's recipient, and a redacted one for the recipient when
/// they may know of the change (see [`surprise::recipient_hears`]).
///
/// # Errors
/// Only if serializing the payload fails, which the model types never do.
pub fn item_changed(
    event: EventType,
    item: &Item,
    actor: &Member,
    comment: Option<&Comment>,
) -> Result<Vec<Outgoing>, serde_json::Error> {
    let topics = || vec![Topic::list(item.list_id), Topic::list_items_all()];
    let full = events(topics(), event.clone(), item.id, item, actor, comment)?;
    let Some(recipient) = item.recipient_id else {
        return Ok(shared(full, Share::Everyone).collect());
    };
    let mut out: Vec<Outgoing> = shared(full, Share::AllBut(recipient)).collect();
    if surprise::recipient_hears(&event) {
        let redacted = surprise::redacted_item(item);
        let copy = events(topics(), event, item.id, &redacted, actor, None)?;
        out.extend(shared(copy, Share::Only(recipient)));
    }
    Ok(out)
}

/// Events for a change of `gift`: for everyone but its recipient, who never hears of it.
///
/// # Errors
/// Only if serializing the payload fails, which the model types never do.
pub fn gift_changed(
    event: EventType,
    gift: &Gift,
    actor: &Member,
) -> Result<Vec<Outgoing>, serde_json::Error> {
    let full = events(vec![Topic::gifts_all()], event, gift.id, gift, actor, None)?;
    Ok(shared(full, Share::AllBut(gift.recipient_id)).collect())
}

/// Events for a change of `occasion`, on `occasion:{id}` and [`OCCASIONS_TOPIC`].
///
/// # Errors
/// Only if serializing the payload fails, which the model types never do.
pub fn occasion_changed(
    event: EventType,
    occasion: &Occasion,
    actor: &Member,
) -> Result<Vec<Outgoing>, serde_json::Error> {
    let topics = vec![Topic::occasion(occasion.id), index_topic(OCCASIONS_TOPIC)];
    let full = events(topics, event, occasion.id, occasion, actor, None)?;
    Ok(shared(full, Share::Everyone).collect())
}

/// Events for a change of a list (created, renamed, deleted) on [`LISTS_TOPIC`]: its
/// recipient gets it without the count of bought items.
///
/// # Errors
/// Only if serializing the payload fails, which the model types never do.
pub fn list_changed(
    event: EventType,
    list: &ListSummary,
    actor: &Member,
) -> Result<Vec<Outgoing>, serde_json::Error> {
    let topics = || vec![index_topic(LISTS_TOPIC)];
    let full = events(topics(), event.clone(), list.id, list, actor, None)?;
    let Some(recipient) = list.recipient_id else {
        return Ok(shared(full, Share::Everyone).collect());
    };
    let redacted = surprise::redacted_list(list);
    let copy = events(topics(), event, list.id, &redacted, actor, None)?;
    Ok(shared(full, Share::AllBut(recipient))
        .chain(shared(copy, Share::Only(recipient)))
        .collect())
}

fn index_topic(name: &'static str) -> Topic {
    match Topic::new(name) {
        Ok(topic) => topic,
        Err(e) => unreachable!("{name} is a valid topic: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ItemStatus;

    #[test]
    fn item_event_shape() {
        let mom = Member {
            id: 1,
            name: "Mom".into(),
            color: "#000".into(),
        };
        let item = Item {
            id: 7,
            list_id: 3,
            list_name: "L".into(),
            recipient_id: Some(4),
            name: "Lego set".into(),
            notes: String::new(),
            status: ItemStatus::Purchased,
            assignee_id: None,
            assignee_name: None,
            created_by: 1,
            created_by_name: "Mom".into(),
            created_at: "t".into(),
            updated_at: "t".into(),
            comments: vec![],
            wish_updated_at: "t".into(),
        };
        let events = item_changed(EventType::StatusChanged, &item, &mom, None).unwrap();
        let topics: Vec<_> = events.iter().map(|e| e.event.topic.as_str()).collect();
        assert_eq!(topics, ["list:3", "list-items:all"]);
        assert!(
            events.iter().all(|e| e.share == Share::AllBut(4)),
            "never to the recipient"
        );
        let data = &events[0].event.data;
        assert_eq!((data.entity_id.as_str(), data.user_id.as_str()), ("7", "1"));
        let payload = data.payload.to_value().unwrap();
        assert_eq!(payload["status"], "PURCHASED");
        assert_eq!(payload["actor_name"], "Mom");
        assert!(payload.get("comment").is_none());
        assert!(data.timestamp.ends_with('Z'));

        // Adding a wish: the recipient hears of it, without status.
        let events = item_changed(EventType::Added, &item, &mom, None).unwrap();
        let shares: Vec<_> = events.iter().map(|e| e.share).collect();
        assert_eq!(
            shares,
            [
                Share::AllBut(4),
                Share::AllBut(4),
                Share::Only(4),
                Share::Only(4)
            ]
        );
        let redacted = events[2].event.data.payload.to_value().unwrap();
        assert_eq!(redacted["status"], "HIDDEN");
    }
}
