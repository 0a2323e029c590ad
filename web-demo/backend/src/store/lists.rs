//! Wish lists, their items and the items' comments: reads and every item mutation.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};
use serde::Deserialize;

use super::{StoreError, existing_member, name, not_found, now_rfc3339, text};
use crate::model::{Comment, Item, ItemStatus, ListDetail, ListSummary};

const LIST_SELECT: &str = "
SELECT l.id, l.name, l.occasion_id, o.name, l.recipient_id, m.name,
       (SELECT COUNT(*) FROM items i WHERE i.list_id = l.id),
       (SELECT COUNT(*) FROM items i WHERE i.list_id = l.id AND i.status IN ('PURCHASED', 'RECEIVED'))
FROM lists l
LEFT JOIN occasions o ON o.id = l.occasion_id
LEFT JOIN members m ON m.id = l.recipient_id";

fn list_row(r: &Row<'_>) -> rusqlite::Result<ListSummary> {
    Ok(ListSummary {
        id: r.get(0)?,
        name: r.get(1)?,
        occasion_id: r.get(2)?,
        occasion_name: r.get(3)?,
        recipient_id: r.get(4)?,
        recipient_name: r.get(5)?,
        item_count: r.get(6)?,
        done_count: Some(r.get(7)?),
    })
}

/// Every list (of one occasion when given), by id.
///
/// # Errors
/// [`StoreError::Sqlite`].
pub fn list_summaries(
    conn: &Connection,
    occasion_id: Option<i64>,
) -> Result<Vec<ListSummary>, StoreError> {
    let sql = format!("{LIST_SELECT} WHERE ?1 IS NULL OR l.occasion_id = ?1 ORDER BY l.id");
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map([occasion_id], list_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One list with its items and their comments.
///
/// # Errors
/// [`StoreError::NotFound`] for an unknown id.
pub fn list_detail(conn: &Connection, id: i64) -> Result<ListDetail, StoreError> {
    let list = list_summary(conn, id)?;
    let items = items_where(conn, "i.list_id = ?1", id)?;
    Ok(ListDetail { list, items })
}

/// One list without its items.
///
/// # Errors
/// [`StoreError::NotFound`] for an unknown id.
pub fn list_summary(conn: &Connection, id: i64) -> Result<ListSummary, StoreError> {
    conn.query_row(&format!("{LIST_SELECT} WHERE l.id = ?1"), [id], list_row)
        .optional()?
        .ok_or_else(|| not_found("list", id))
}

/// Body of `POST /api/lists`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewList {
    /// Name ("Sam's Christmas wishes").
    pub name: String,
    /// The occasion it is for (none by default).
    #[serde(default)]
    pub occasion_id: Option<i64>,
    /// Whom the presents are for (nobody in particular by default). Fixed once created: it
    /// decides who must not see the items' status, assignee and comments.
    #[serde(default)]
    pub recipient_id: Option<i64>,
}

/// Body of `PATCH /api/lists/{id}`: a list can be renamed (its occasion and recipient stay).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListEdit {
    /// New name.
    pub name: String,
}

/// Creates an empty list.
///
/// # Errors
/// [`StoreError::Invalid`] for a bad name, an unknown occasion or member.
pub fn add_list(conn: &mut Connection, input: NewList) -> Result<ListSummary, StoreError> {
    let name = name("name", &input.name)?;
    let tx = conn.transaction()?;
    if let Some(occasion) = input.occasion_id {
        super::occasions::occasion(&tx, occasion).map_err(|_| {
            StoreError::Invalid(format!("occasion_id: occasion {occasion} does not exist"))
        })?;
    }
    if let Some(member) = input.recipient_id {
        existing_member(&tx, "recipient_id", member)?;
    }
    tx.execute(
        "INSERT INTO lists (name, occasion_id, recipient_id) VALUES (?1, ?2, ?3)",
        params![name, input.occasion_id, input.recipient_id],
    )?;
    let id = tx.last_insert_rowid();
    tx.commit()?;
    list_summary(conn, id)
}

/// Renames a list.
///
/// # Errors
/// [`StoreError::NotFound`] for an unknown list, [`StoreError::Invalid`] for a bad name.
pub fn rename_list(
    conn: &mut Connection,
    id: i64,
    edit: ListEdit,
) -> Result<ListSummary, StoreError> {
    let name = name("name", &edit.name)?;
    if conn.execute(
        "UPDATE lists SET name = ?2 WHERE id = ?1",
        params![id, name],
    )? == 0
    {
        return Err(not_found("list", id));
    }
    list_summary(conn, id)
}

/// Deletes a list with its items and their comments; returns it as it was.
///
/// # Errors
/// [`StoreError::NotFound`] for an unknown list.
pub fn delete_list(conn: &mut Connection, id: i64) -> Result<ListSummary, StoreError> {
    let tx = conn.transaction()?;
    let before = list_summary(&tx, id)?;
    delete_lists_where(&tx, "id = ?1", id)?;
    tx.commit()?;
    Ok(before)
}

/// Deletes the lists matching `filter` (one `?1` parameter) with their items and comments.
pub(super) fn delete_lists_where(
    tx: &Transaction<'_>,
    filter: &str,
    param: i64,
) -> Result<(), StoreError> {
    let lists = format!("SELECT id FROM lists WHERE {filter}");
    tx.execute(
        &format!(
            "DELETE FROM comments WHERE item_id IN (SELECT id FROM items WHERE list_id IN ({lists}))"
        ),
        [param],
    )?;
    tx.execute(
        &format!("DELETE FROM items WHERE list_id IN ({lists})"),
        [param],
    )?;
    tx.execute(&format!("DELETE FROM lists WHERE {filter}"), [param])?;
    Ok(())
}

// ---------------------------------------------------------------- items

const ITEM_SELECT: &str = "
SELECT i.id, i.list_id, l.name, i.name, i.notes, i.status, i.assignee_id, a.name,
       i.created_by, c.name, i.created_at, i.updated_at, l.recipient_id,
       COALESCE(i.wish_updated_at, i.created_at)
FROM items i
JOIN lists l ON l.id = i.list_id
JOIN members c ON c.id = i.created_by
LEFT JOIN members a ON a.id = i.assignee_id";

fn item_row(r: &Row<'_>) -> rusqlite::Result<Item> {
    let status: String = r.get(5)?;
    Ok(Item {
        id: r.get(0)?,
        list_id: r.get(1)?,
        list_name: r.get(2)?,
        recipient_id: r.get(12)?,
        name: r.get(3)?,
        notes: r.get(4)?,
        // Only this module writes the column, always from an `ItemStatus`.
        status: ItemStatus::parse(&status).unwrap_or(ItemStatus::Idea),
        assignee_id: r.get(6)?,
        assignee_name: r.get(7)?,
        created_by: r.get(8)?,
        created_by_name: r.get(9)?,
        created_at: r.get(10)?,
        updated_at: r.get(11)?,
        comments: Vec::new(),
        wish_updated_at: r.get(13)?,
    })
}

fn comment_row(r: &Row<'_>) -> rusqlite::Result<Comment> {
    Ok(Comment {
        id: r.get(0)?,
        item_id: r.get(1)?,
        member_id: r.get(2)?,
        member_name: r.get(3)?,
        body: r.get(4)?,
        created_at: r.get(5)?,
    })
}

/// Items matching `filter` (one `?1` parameter), each with its comments.
fn items_where(conn: &Connection, filter: &str, param: i64) -> Result<Vec<Item>, StoreError> {
    let mut stmt = conn.prepare(&format!("{ITEM_SELECT} WHERE {filter} ORDER BY i.id"))?;
    let mut items: Vec<Item> = stmt
        .query_map([param], item_row)?
        .collect::<Result<_, _>>()?;
    let mut stmt = conn.prepare(&format!(
        "SELECT k.id, k.item_id, k.member_id, m.name, k.body, k.created_at
         FROM comments k JOIN members m ON m.id = k.member_id
         WHERE k.item_id IN (SELECT i.id FROM items i WHERE {filter}) ORDER BY k.id"
    ))?;
    let mut by_item: HashMap<i64, Vec<Comment>> = HashMap::new();
    for comment in stmt.query_map([param], comment_row)? {
        let comment = comment?;
        by_item.entry(comment.item_id).or_default().push(comment);
    }
    for item in &mut items {
        item.comments = by_item.remove(&item.id).unwrap_or_default();
    }
    Ok(items)
}

/// One item with its comments.
///
/// # Errors
/// [`StoreError::NotFound`] for an unknown id.
pub fn item(conn: &Connection, id: i64) -> Result<Item, StoreError> {
    items_where(conn, "i.id = ?1", id)?
        .pop()
        .ok_or_else(|| not_found("item", id))
}

/// Body of `POST /api/lists/{id}/items`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewItem {
    /// What it is.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub notes: String,
}

/// Body of `PATCH /api/items/{id}`; absent fields stay as they are.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemEdit {
    /// New name.
    pub name: Option<String>,
    /// New notes.
    pub notes: Option<String>,
}

fn touch_item(tx: &Transaction<'_>, id: i64) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE items SET updated_at = ?2 WHERE id = ?1",
        params![id, now_rfc3339()],
    )?;
    Ok(())
}

/// Adds an item to a list, by `actor`.
///
/// # Errors
/// [`StoreError::NotFound`] for an unknown list, [`StoreError::Invalid`] for bad fields.
pub fn add_item(
    conn: &mut Connection,
    list_id: i64,
    actor: i64,
    input: NewItem,
) -> Result<Item, StoreError> {
    let name = name("name", &input.name)?;
    let notes = text("notes", &input.notes)?;
    let tx = conn.transaction()?;
    let exists: bool = tx.query_row(
        "SELECT EXISTS(SELECT 1 FROM lists WHERE id = ?1)",
        [list_id],
        |r| r.get(0),
    )?;
    if !exists {
        return Err(not_found("list", list_id));
    }
    let now = now_rfc3339();
    tx.execute(
        "INSERT INTO items (list_id, name, notes, status, created_by, created_at, updated_at, wish_updated_at)
         VALUES (?1, ?2, ?3, 'IDEA', ?4, ?5, ?5, ?5)",
        params![list_id, name, notes, actor, now],
    )?;
    let id = tx.last_insert_rowid();
    tx.commit()?;
    item(conn, id)
}

/// Edits an item's name and/or notes.
///
/// # Errors
/// [`StoreError::NotFound`] for an unknown item, [`StoreError::Invalid`] for bad fields or an
/// empty edit.
pub fn edit_item(conn: &mut Connection, id: i64, edit: ItemEdit) -> Result<Item, StoreError> {
    if edit.name.is_none() && edit.notes.is_none() {
        return Err(StoreError::Invalid(
            "nothing to update: give name and/or notes".into(),
        ));
    }
    let name = edit.name.as_deref().map(|v| name("name", v)).transpose()?;
    let notes = edit
        .notes
        .as_deref()
        .map(|v| text("notes", v))
        .transpose()?;
    let tx = conn.transaction()?;
    let changed = tx.execute(
        "UPDATE items SET name = COALESCE(?2, name), notes = COALESCE(?3, notes),
                wish_updated_at = ?4 WHERE id = ?1",
        params![id, name, notes, now_rfc3339()],
    )?;
    if changed == 0 {
        return Err(not_found("item", id));
    }
    touch_item(&tx, id)?;
    tx.commit()?;
    item(conn, id)
}

/// Moves an item to `status`.
///
/// # Errors
/// [`StoreError::NotFound`] for an unknown item.
pub fn set_item_status(
    conn: &mut Connection,
    id: i64,
    status: ItemStatus,
) -> Result<Item, StoreError> {
    let tx = conn.transaction()?;
    let changed = tx.execute(
        "UPDATE items SET status = ?2 WHERE id = ?1",
        params![id, status.as_str()],
    )?;
    if changed == 0 {
        return Err(not_found("item", id));
    }
    touch_item(&tx, id)?;
    tx.commit()?;
    item(conn, id)
}

/// Assigns an item to a member, or unassigns it with `None`.
///
/// # Errors
/// [`StoreError::NotFound`] for an unknown item, [`StoreError::Invalid`] for an unknown
/// member.
pub fn assign_item(
    conn: &mut Connection,
    id: i64,
    assignee: Option<i64>,
) -> Result<Item, StoreError> {
    let tx = conn.transaction()?;
    if let Some(member) = assignee {
        existing_member(&tx, "assignee_id", member)?;
    }
    let changed = tx.execute(
        "UPDATE items SET assignee_id = ?2 WHERE id = ?1",
        params![id, assignee],
    )?;
    if changed == 0 {
        return Err(not_found("item", id));
    }
    touch_item(&tx, id)?;
    tx.commit()?;
    item(conn, id)
}

/// Adds a comment by `actor` to an item; returns the item (with the comment) and the comment.
///
/// # Errors
/// [`StoreError::NotFound`] for an unknown item, [`StoreError::Invalid`] for an empty body.
pub fn add_comment(
    conn: &mut Connection,
    item_id: i64,
    actor: i64,
    body: &str,
) -> Result<(Item, Comment), StoreError> {
    let body = text("body", body)?;
    if body.is_empty() {
        return Err(StoreError::Invalid("body must not be empty".into()));
    }
    let tx = conn.transaction()?;
    let exists: bool = tx.query_row(
        "SELECT EXISTS(SELECT 1 FROM items WHERE id = ?1)",
        [item_id],
        |r| r.get(0),
    )?;
    if !exists {
        return Err(not_found("item", item_id));
    }
    tx.execute(
        "INSERT INTO comments (item_id, member_id, body, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![item_id, actor, body, now_rfc3339()],
    )?;
    let comment_id = tx.last_insert_rowid();
    touch_item(&tx, item_id)?;
    tx.commit()?;
    let item = item(conn, item_id)?;
    let comment = item
        .comments
        .iter()
        .find(|c| c.id == comment_id)
        .cloned()
        .ok_or_else(|| not_found("comment", comment_id))?;
    Ok((item, comment))
}

/// Deletes an item (and its comments); returns it as it was.
///
/// # Errors
/// [`StoreError::NotFound`] for an unknown item.
pub fn delete_item(conn: &mut Connection, id: i64) -> Result<Item, StoreError> {
    let tx = conn.transaction()?;
    let before = item(&tx, id)?;
    tx.execute("DELETE FROM items WHERE id = ?1", [id])?;
    tx.commit()?;
    Ok(before)
}
