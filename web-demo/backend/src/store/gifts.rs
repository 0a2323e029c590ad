//! Planned gifts per occasion: reads, creation, edits and deletion.

use rusqlite::{Connection, Row, params};
use serde::Deserialize;

use super::occasions::occasion;
use super::{StoreError, existing_member, name, not_found, now_rfc3339, text};
use crate::model::{Gift, GiftStatus};

const GIFT_SELECT: &str = "
SELECT g.id, g.occasion_id, o.name, g.recipient_id, r.name, g.giver_id, v.name,
       g.name, g.notes, g.status, g.created_at, g.updated_at
FROM gifts g
JOIN occasions o ON o.id = g.occasion_id
JOIN members r ON r.id = g.recipient_id
LEFT JOIN members v ON v.id = g.giver_id";

fn gift_row(r: &Row<'_>) -> rusqlite::Result<Gift> {
    let status: String = r.get(9)?;
    Ok(Gift {
        id: r.get(0)?,
        occasion_id: r.get(1)?,
        occasion_name: r.get(2)?,
        recipient_id: r.get(3)?,
        recipient_name: r.get(4)?,
        giver_id: r.get(5)?,
        giver_name: r.get(6)?,
        name: r.get(7)?,
        notes: r.get(8)?,
        // Only this module writes the column, always from a `GiftStatus`.
        status: GiftStatus::parse(&status).unwrap_or(GiftStatus::Planned),
        created_at: r.get(10)?,
        updated_at: r.get(11)?,
    })
}

pub(super) fn gifts_where(
    conn: &Connection,
    filter: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<Gift>, StoreError> {
    let mut stmt = conn.prepare(&format!("{GIFT_SELECT} WHERE {filter} ORDER BY g.id"))?;
    let rows = stmt.query_map(params, gift_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Every gift, by id.
///
/// # Errors
/// [`StoreError::Sqlite`].
pub fn gifts(conn: &Connection) -> Result<Vec<Gift>, StoreError> {
    gifts_where(conn, "1 = 1", [])
}

/// One gift.
///
/// # Errors
/// [`StoreError::NotFound`] for an unknown id.
pub fn gift(conn: &Connection, id: i64) -> Result<Gift, StoreError> {
    gifts_where(conn, "g.id = ?1", [id])?
        .pop()
        .ok_or_else(|| not_found("gift", id))
}

/// Body of `POST /api/gifts`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewGift {
    /// The occasion.
    pub occasion_id: i64,
    /// Who receives it.
    pub recipient_id: i64,
    /// Who gives it (defaults to nobody yet).
    #[serde(default)]
    pub giver_id: Option<i64>,
    /// What it is.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub notes: String,
}

/// Body of `PATCH /api/gifts/{id}`; absent fields stay as they are.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GiftEdit {
    /// New name.
    pub name: Option<String>,
    /// New notes.
    pub notes: Option<String>,
    /// New status.
    pub status: Option<GiftStatus>,
    /// New giver.
    pub giver_id: Option<i64>,
}

/// Plans a gift.
///
/// # Errors
/// [`StoreError::Invalid`] for bad fields or unknown occasion / members.
pub fn add_gift(conn: &mut Connection, input: NewGift) -> Result<Gift, StoreError> {
    let name = name("name", &input.name)?;
    let notes = text("notes", &input.notes)?;
    let tx = conn.transaction()?;
    occasion(&tx, input.occasion_id).map_err(|_| {
        StoreError::Invalid(format!(
            "occasion_id: occasion {} does not exist",
            input.occasion_id
        ))
    })?;
    existing_member(&tx, "recipient_id", input.recipient_id)?;
    if let Some(giver) = input.giver_id {
        existing_member(&tx, "giver_id", giver)?;
    }
    let now = now_rfc3339();
    tx.execute(
        "INSERT INTO gifts (occasion_id, recipient_id, giver_id, name, notes, status, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, 'PLANNED', ?6, ?6)",
        params![input.occasion_id, input.recipient_id, input.giver_id, name, notes, now],
    )?;
    let id = tx.last_insert_rowid();
    tx.commit()?;
    gift(conn, id)
}

/// Edits a gift.
///
/// # Errors
/// [`StoreError::NotFound`] for an unknown gift, [`StoreError::Invalid`] for bad fields or an
/// empty edit.
pub fn edit_gift(conn: &mut Connection, id: i64, edit: GiftEdit) -> Result<Gift, StoreError> {
    if edit.name.is_none()
        && edit.notes.is_none()
        && edit.status.is_none()
        && edit.giver_id.is_none()
    {
        return Err(StoreError::Invalid(
            "nothing to update: give name, notes, status or giver_id".into(),
        ));
    }
    let name = edit.name.as_deref().map(|v| name("name", v)).transpose()?;
    let notes = edit
        .notes
        .as_deref()
        .map(|v| text("notes", v))
        .transpose()?;
    let tx = conn.transaction()?;
    gift(&tx, id)?;
    if let Some(giver) = edit.giver_id {
        existing_member(&tx, "giver_id", giver)?;
    }
    tx.execute(
        "UPDATE gifts SET name = COALESCE(?2, name), notes = COALESCE(?3, notes),
                status = COALESCE(?4, status), giver_id = COALESCE(?5, giver_id), updated_at = ?6
         WHERE id = ?1",
        params![
            id,
            name,
            notes,
            edit.status.map(GiftStatus::as_str),
            edit.giver_id,
            now_rfc3339()
        ],
    )?;
    tx.commit()?;
    gift(conn, id)
}

/// Deletes a gift; returns it as it was.
///
/// # Errors
/// [`StoreError::NotFound`] for an unknown gift.
pub fn delete_gift(conn: &mut Connection, id: i64) -> Result<Gift, StoreError> {
    let tx = conn.transaction()?;
    let before = gift(&tx, id)?;
    tx.execute("DELETE FROM gifts WHERE id = ?1", [id])?;
    tx.commit()?;
    Ok(before)
}
