//! The demo's domain values as the REST API and the event payloads show them.
//!
//! Ids are SQLite integer ids (JSON numbers); event topics and `entity_id`s carry them as
//! strings, as the seed protocol does. Statuses travel as their upper-case names.

use serde::{Deserialize, Serialize};

/// Where a wish-list item is on its way from an idea to a present under the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ItemStatus {
    /// Someone would like it.
    Idea,
    /// A giver picked it.
    Selected,
    /// It has been bought.
    Purchased,
    /// The recipient has it.
    Received,
    /// What the item's recipient sees instead of the real status: whether it was picked or
    /// bought is a surprise (see [`crate::surprise`]). Never accepted as input and never stored.
    #[serde(skip_deserializing)]
    Hidden,
}

impl ItemStatus {
    /// Every status, in workflow order.
    pub const ALL: [ItemStatus; 4] = [
        ItemStatus::Idea,
        ItemStatus::Selected,
        ItemStatus::Purchased,
        ItemStatus::Received,
    ];

    /// The stored and wire name (`"IDEA"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ItemStatus::Idea => "IDEA",
            ItemStatus::Selected => "SELECTED",
            ItemStatus::Purchased => "PURCHASED",
            ItemStatus::Received => "RECEIVED",
            ItemStatus::Hidden => "HIDDEN",
        }
    }

    /// Parses a stored name; `None` for anything else.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// Where a planned gift is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum GiftStatus {
    /// Decided on, not bought yet.
    Planned,
    /// Bought.
    Purchased,
    /// Wrapped and hidden.
    Wrapped,
    /// Handed over.
    Given,
}

impl GiftStatus {
    /// Every status, in workflow order.
    pub const ALL: [GiftStatus; 4] = [
        GiftStatus::Planned,
        GiftStatus::Purchased,
        GiftStatus::Wrapped,
        GiftStatus::Given,
    ];

    /// The stored and wire name (`"PLANNED"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            GiftStatus::Planned => "PLANNED",
            GiftStatus::Purchased => "PURCHASED",
            GiftStatus::Wrapped => "WRAPPED",
            GiftStatus::Given => "GIVEN",
        }
    }

    /// Parses a stored name; `None` for anything else.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// A family member; logging in means picking one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Member {
    /// Member id (the JWT `sub` and every event's `user_id`, as a string).
    pub id: i64,
    /// Display name ("Mom").
    pub name: String,
    /// Avatar colour, a CSS hex colour.
    pub color: String,
}

/// Something the family gives presents for.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Occasion {
    /// Occasion id (topic `occasion:{id}`).
    pub id: i64,
    /// Name ("Christmas 2026").
    pub name: String,
    /// The day, `YYYY-MM-DD`.
    pub date: String,
    /// Free text.
    pub notes: String,
}

/// An occasion with its lists and gifts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OccasionDetail {
    /// The occasion itself.
    #[serde(flatten)]
    pub occasion: Occasion,
    /// Its shopping lists.
    pub lists: Vec<ListSummary>,
    /// Its planned gifts.
    pub gifts: Vec<Gift>,
}

/// A shopping (wish) list without its items.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ListSummary {
    /// List id (topic `list:{id}`).
    pub id: i64,
    /// Name ("Sam's Christmas wishes").
    pub name: String,
    /// The occasion it is for, if any.
    pub occasion_id: Option<i64>,
    /// That occasion's name.
    pub occasion_name: Option<String>,
    /// Whom the presents are for, if anyone in particular.
    pub recipient_id: Option<i64>,
    /// That member's name.
    pub recipient_name: Option<String>,
    /// Number of items.
    pub item_count: i64,
    /// Number of items PURCHASED or RECEIVED; `null` for the list's recipient (a surprise).
    pub done_count: Option<i64>,
}

/// A list with its items.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ListDetail {
    /// The list itself.
    #[serde(flatten)]
    pub list: ListSummary,
    /// Its items, oldest first.
    pub items: Vec<Item>,
}

/// One wish on a list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Item {
    /// Item id (an event's `entity_id`).
    pub id: i64,
    /// The list it is on.
    pub list_id: i64,
    /// That list's name.
    pub list_name: String,
    /// Whom the list is for (`null`: nobody in particular). That member gets the item without
    /// its status, assignee and comments (see [`crate::surprise`]).
    pub recipient_id: Option<i64>,
    /// What it is ("Lego set").
    pub name: String,
    /// Free text (size, shop, link).
    pub notes: String,
    /// Where it is in the workflow.
    pub status: ItemStatus,
    /// Who takes care of it.
    pub assignee_id: Option<i64>,
    /// That member's name.
    pub assignee_name: Option<String>,
    /// Who added it.
    pub created_by: i64,
    /// That member's name.
    pub created_by_name: String,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// RFC 3339 UTC.
    pub updated_at: String,
    /// Its comments, oldest first.
    pub comments: Vec<Comment>,
    /// The last change of what the recipient may see (creation, name, notes): the
    /// `updated_at` the recipient gets, so that a purchase does not show as a newer stamp.
    #[serde(skip)]
    pub wish_updated_at: String,
}

/// A comment on an item.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comment {
    /// Comment id.
    pub id: i64,
    /// The item it is on.
    pub item_id: i64,
    /// Who wrote it.
    pub member_id: i64,
    /// That member's name.
    pub member_name: String,
    /// The text.
    pub body: String,
    /// RFC 3339 UTC.
    pub created_at: String,
}

/// A present someone plans to give at an occasion.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Gift {
    /// Gift id.
    pub id: i64,
    /// The occasion.
    pub occasion_id: i64,
    /// That occasion's name.
    pub occasion_name: String,
    /// Who receives it.
    pub recipient_id: i64,
    /// That member's name.
    pub recipient_name: String,
    /// Who gives it, if decided.
    pub giver_id: Option<i64>,
    /// That member's name.
    pub giver_name: Option<String>,
    /// What it is.
    pub name: String,
    /// Free text.
    pub notes: String,
    /// Where it is in the workflow.
    pub status: GiftStatus,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// RFC 3339 UTC.
    pub updated_at: String,
}
