//! Occasions (Christmas, birthdays): reads, creation and edits.

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::model::{Gift, ListSummary};
use serde::Deserialize;

use super::gifts::gifts_where;
use super::lists::list_summaries;
use super::{StoreError, name, not_found, text};
use crate::model::{Occasion, OccasionDetail};

fn occasion_row(r: &Row<'_>) -> rusqlite::Result<Occasion> {
    Ok(Occasion {
        id: r.get(0)?,
        name: r.get(1)?,
        date: r.get(2)?,
        notes: r.get(3)?,
    })
}

/// Every occasion, soonest first.
///
/// # Errors
/// [`StoreError::Sqlite`].
pub fn occasions(conn: &Connection) -> Result<Vec<Occasion>, StoreError> {
    let mut stmt = conn.prepare("SELECT id, name, date, notes FROM occasions ORDER BY date, id")?;
    let rows = stmt.query_map([], occasion_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn occasion(conn: &Connection, id: i64) -> Result<Occasion, StoreError> {
    conn.query_row(
        "SELECT id, name, date, notes FROM occasions WHERE id = ?1",
        [id],
        occasion_row,
    )
    .optional()?
    .ok_or_else(|| not_found("occasion", id))
}

/// One occasion with its lists and gifts.
///
/// # Errors
/// [`StoreError::NotFound`] for an unknown id.
pub fn occasion_detail(conn: &Connection, id: i64) -> Result<OccasionDetail, StoreError> {
    let occasion = occasion(conn, id)?;
    let lists = list_summaries(conn, Some(id))?;
    let gifts = gifts_where(conn, "g.occasion_id = ?1", params![id])?;
    Ok(OccasionDetail {
        occasion,
        lists,
        gifts,
    })
}

/// Body of `POST /api/occasions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewOccasion {
    /// Name.
    pub name: String,
    /// Day, `YYYY-MM-DD`.
    pub date: String,
    /// Free text.
    #[serde(default)]
    pub notes: String,
}

/// Body of `PATCH /api/occasions/{id}`; absent fields stay as they are.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OccasionEdit {
    /// New name.
    pub name: Option<String>,
    /// New day, `YYYY-MM-DD`.
    pub date: Option<String>,
    /// New notes.
    pub notes: Option<String>,
}

fn date(value: &str) -> Result<String, StoreError> {
    let value = value.trim();
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(value, format)
        .map(|_| value.to_owned())
        .map_err(|_| StoreError::Invalid(format!("date must be YYYY-MM-DD, got {value:?}")))
}

/// Creates an occasion.
///
/// # Errors
/// [`StoreError::Invalid`] for an empty name or a bad date.
pub fn add_occasion(conn: &mut Connection, input: NewOccasion) -> Result<Occasion, StoreError> {
    let name = name("name", &input.name)?;
    let date = date(&input.date)?;
    let notes = text("notes", &input.notes)?;
    conn.execute(
        "INSERT INTO occasions (name, date, notes) VALUES (?1, ?2, ?3)",
        params![name, date, notes],
    )?;
    occasion(conn, conn.last_insert_rowid())
}

/// Edits an occasion.
///
/// # Errors
/// [`StoreError::NotFound`] for an unknown id, [`StoreError::Invalid`] for bad fields or an
/// empty edit.
pub fn edit_occasion(
    conn: &mut Connection,
    id: i64,
    edit: OccasionEdit,
) -> Result<Occasion, StoreError> {
    if edit.name.is_none() && edit.date.is_none() && edit.notes.is_none() {
        return Err(StoreError::Invalid(
            "nothing to update: give name, date or notes".into(),
        ));
    }
    let mut current = occasion(conn, id)?;
    if let Some(v) = edit.name {
        current.name = name("name", &v)?;
    }
    if let Some(v) = edit.date {
        current.date = date(&v)?;
    }
    if let Some(v) = edit.notes {
        current.notes = text("notes", &v)?;
    }
    conn.execute(
        "UPDATE occasions SET name = ?2, date = ?3, notes = ?4 WHERE id = ?1",
        params![id, current.name, current.date, current.notes],
    )?;
    occasion(conn, id)
}

/// What deleting an occasion removed: the occasion, its lists (with their items and comments)
/// and its gifts, each as it was.
#[derive(Debug)]
pub struct OccasionRemoval {
    /// The occasion.
    pub occasion: Occasion,
    /// Its lists.
    pub lists: Vec<ListSummary>,
    /// Its gifts.
    pub gifts: Vec<Gift>,
}

/// Deletes an occasion and everything that belongs to it (its lists with their items and
/// comments, its gifts), in one transaction.
///
/// # Errors
/// [`StoreError::NotFound`] for an unknown id.
pub fn delete_occasion(conn: &mut Connection, id: i64) -> Result<OccasionRemoval, StoreError> {
    let tx = conn.transaction()?;
    let occasion = occasion(&tx, id)?;
    let lists = list_summaries(&tx, Some(id))?;
    let gifts = gifts_where(&tx, "g.occasion_id = ?1", params![id])?;
    super::lists::delete_lists_where(&tx, "occasion_id = ?1", id)?;
    tx.execute("DELETE FROM gifts WHERE occasion_id = ?1", [id])?;
    tx.execute("DELETE FROM occasions WHERE id = ?1", [id])?;
    tx.commit()?;
    Ok(OccasionRemoval {
        occasion,
        lists,
        gifts,
    })
}
