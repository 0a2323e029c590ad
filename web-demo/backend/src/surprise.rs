//! Surprises, kept by the server: whom each thing is for, and what that member never receives.
//!
//! The model:
//! - **A list item** is for the list's recipient (`lists.recipient_id`; a list without one is
//!   for nobody in particular and hides nothing). That member sees the wish itself (name,
//!   notes, who added it, when it was created or edited) but never its status (shown as
//!   `HIDDEN`), its assignee (the buyer) or its comments; their lists' `done_count` is `null`.
//!   They may add, edit and delete their wishes, but not set a status, an assignee or comment
//!   on them (403): those answers would tell them.
//! - **A gift** (the gift planner) is for its `recipient_id`, and its very existence is the
//!   surprise: its recipient never sees it at all (the reads leave it out, a write to it is a
//!   404, and planning a gift for yourself is refused with a 422).
//!
//! The same rule holds on every channel: the REST answers are filtered here ([`item_for`],
//! [`list_for`], [`gifts_for`]), and every event is published with an audience
//! ([`crate::events::Share`]): the full event to everyone but the recipient
//! (`exclude_users`), and for item and list changes the recipient may know of (added, edited,
//! deleted, renamed) a redacted copy to the recipient only (`only_users`). The tidings server
//! applies the audience per subscriber, live and in replays after a reconnect, so the
//! recipient's socket never carries the text. It only sees a `skipped` frame (topic, `seq`,
//! `epoch`, nothing else) where a hidden event took a position, so that its client does not
//! take the gap for a lost event. The activity feed stores the same audiences
//! ([`crate::store::activity`]).

use tidings_protocol::EventType;

use crate::model::{Gift, Item, ItemStatus, ListDetail, ListSummary};

/// Whether `viewer` is the member `recipient` names.
pub fn is_for(recipient: Option<i64>, viewer: i64) -> bool {
    recipient == Some(viewer)
}

/// The item as its recipient may see it: no status, assignee or comments, and the stamp of
/// the last change they may know of.
pub fn redacted_item(item: &Item) -> Item {
    Item {
        status: ItemStatus::Hidden,
        assignee_id: None,
        assignee_name: None,
        comments: Vec::new(),
        updated_at: item.wish_updated_at.clone(),
        ..item.clone()
    }
}

/// The item as `viewer` may see it.
pub fn item_for(item: Item, viewer: i64) -> Item {
    if is_for(item.recipient_id, viewer) {
        redacted_item(&item)
    } else {
        item
    }
}

/// The list summary as its recipient may see it: no count of bought items.
pub fn redacted_list(list: &ListSummary) -> ListSummary {
    ListSummary {
        done_count: None,
        ..list.clone()
    }
}

/// The list summary as `viewer` may see it.
pub fn list_for(list: ListSummary, viewer: i64) -> ListSummary {
    if is_for(list.recipient_id, viewer) {
        redacted_list(&list)
    } else {
        list
    }
}

/// The list with its items as `viewer` may see it.
pub fn detail_for(detail: ListDetail, viewer: i64) -> ListDetail {
    ListDetail {
        list: list_for(detail.list, viewer),
        items: detail
            .items
            .into_iter()
            .map(|i| item_for(i, viewer))
            .collect(),
    }
}

/// The gifts `viewer` may see: all but those for them.
pub fn gifts_for(gifts: Vec<Gift>, viewer: i64) -> Vec<Gift> {
    gifts
        .into_iter()
        .filter(|g| g.recipient_id != viewer)
        .collect()
}

/// Whether the recipient of an item hears of a change of this kind (redacted): adding,
/// editing and deleting a wish, yes; a status, an assignee or a comment, never.
pub fn recipient_hears(event: &EventType) -> bool {
    matches!(
        event,
        EventType::Added | EventType::Updated | EventType::Deleted
    )
}
