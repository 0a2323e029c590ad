//! Which realtime events each change produces: topics, event type and event data.
//!
//! Item changes go to the item's list (`list:{id}`) and to `list-items:all`; gift changes to
//! `gifts:all`; occasion changes to `occasion:{id}`. The payload is the entity as the REST API
//! returns it, plus `actor_id` / `actor_name` so a UI can say "Mom marked 'Lego set'
//! PURCHASED" without another request; a comment event also carries the new `comment`.

use serde::Serialize;
use tidings_protocol::{EventData, EventType, Payload, Topic, WSEvent};

use crate::model::{Comment, Gift, Item, Member, Occasion};
use crate::store::now_rfc3339;

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

/// Events for a change of `item` (`comment` for [`EventType::CommentAdded`]).
///
/// # Errors
/// Only if serializing the payload fails, which the model types never do.
pub fn item_changed(
    event: EventType,
    item: &Item,
    actor: &Member,
    comment: Option<&Comment>,
) -> Result<Vec<WSEvent>, serde_json::Error> {
    let topics = vec![Topic::list(item.list_id), Topic::list_items_all()];
    events(topics, event, item.id, item, actor, comment)
}

/// Events for a change of `gift`.
///
/// # Errors
/// Only if serializing the payload fails, which the model types never do.
pub fn gift_changed(
    event: EventType,
    gift: &Gift,
    actor: &Member,
) -> Result<Vec<WSEvent>, serde_json::Error> {
    events(vec![Topic::gifts_all()], event, gift.id, gift, actor, None)
}

/// Events for a change of `occasion`.
///
/// # Errors
/// Only if serializing the payload fails, which the model types never do.
pub fn occasion_changed(
    event: EventType,
    occasion: &Occasion,
    actor: &Member,
) -> Result<Vec<WSEvent>, serde_json::Error> {
    let topics = vec![Topic::occasion(occasion.id)];
    events(topics, event, occasion.id, occasion, actor, None)
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
        };
        let events = item_changed(EventType::StatusChanged, &item, &mom, None).unwrap();
        let topics: Vec<_> = events.iter().map(|e| e.topic.as_str()).collect();
        assert_eq!(topics, ["list:3", "list-items:all"]);
        let data = &events[0].data;
        assert_eq!((data.entity_id.as_str(), data.user_id.as_str()), ("7", "1"));
        let payload = data.payload.to_value().unwrap();
        assert_eq!(payload["status"], "PURCHASED");
        assert_eq!(payload["actor_name"], "Mom");
        assert!(payload.get("comment").is_none());
        assert!(data.timestamp.ends_with('Z'));
    }
}
