//! The activity feed's memory: every item and gift event the demo publishes, kept in the
//! database with its audience, so that a reload (or a restart of the backend) shows the feed
//! again (`GET /api/activity`).
//!
//! Why the database and not the tidings topic history: the history is in memory, bounded to
//! minutes ([`tidings_server::Config::with_history_ttl`], 5 by default) and lost on a restart,
//! and it is made for catching up after a short disconnection, not for "what happened today".
//! The rows are the very events that were published (same topic, event name, data and
//! timestamp), so the UI can merge them with live ones without duplicates, and they carry the
//! same audience as the publish, so a recipient's feed never shows their surprises.

use rusqlite::{Connection, params};
use serde_json::{Value, json};

use super::StoreError;

/// How many rows the feed keeps; older ones are deleted as new ones come. The UI shows 50.
pub const MAX_ACTIVITY_ROWS: i64 = 1000;

/// One published event to remember, with its audience: `only_member` (just that member) or
/// `except_member` (everyone but that member), or neither (everyone).
#[derive(Debug)]
pub struct ActivityRow<'a> {
    /// The topic it was published on.
    pub topic: &'a str,
    /// The event name (`STATUS_CHANGED`).
    pub event: &'a str,
    /// The event data's fields.
    pub entity_id: &'a str,
    /// The acting member, as a string.
    pub user_id: &'a str,
    /// RFC 3339 UTC.
    pub timestamp: &'a str,
    /// The payload, as JSON text.
    pub payload: &'a str,
    /// Only this member sees it.
    pub only_member: Option<i64>,
    /// Everyone but this member sees it.
    pub except_member: Option<i64>,
}

/// Remembers published events (and forgets the oldest beyond [`MAX_ACTIVITY_ROWS`]).
///
/// # Errors
/// [`StoreError::Sqlite`].
pub fn record_activity(conn: &mut Connection, rows: &[ActivityRow<'_>]) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    for row in rows {
        tx.execute(
            "INSERT INTO activity (topic, event, entity_id, user_id, timestamp, payload, only_member, except_member)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                row.topic,
                row.event,
                row.entity_id,
                row.user_id,
                row.timestamp,
                row.payload,
                row.only_member,
                row.except_member
            ],
        )?;
    }
    tx.execute(
        "DELETE FROM activity WHERE id <= (SELECT MAX(id) FROM activity) - ?1",
        [MAX_ACTIVITY_ROWS],
    )?;
    tx.commit()?;
    Ok(())
}

/// The newest `limit` events `viewer` may see, newest first, each shaped as the event was
/// published (`{"topic","event","data":{"entity_id","payload","user_id","timestamp"}}`).
///
/// # Errors
/// [`StoreError::Sqlite`].
pub fn activity(conn: &Connection, viewer: i64, limit: i64) -> Result<Vec<Value>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT topic, event, entity_id, user_id, timestamp, payload FROM activity
         WHERE (only_member IS NULL OR only_member = ?1)
           AND (except_member IS NULL OR except_member <> ?1)
         ORDER BY id DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![viewer, limit], |r| {
        let payload: String = r.get(5)?;
        Ok(json!({
            "topic": r.get::<_, String>(0)?,
            "event": r.get::<_, String>(1)?,
            "data": {
                "entity_id": r.get::<_, String>(2)?,
                // Written by `record_activity` from a serialized payload: always JSON.
                "payload": serde_json::from_str::<Value>(&payload).unwrap_or(Value::Null),
                "user_id": r.get::<_, String>(3)?,
                "timestamp": r.get::<_, String>(4)?,
            }
        }))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
