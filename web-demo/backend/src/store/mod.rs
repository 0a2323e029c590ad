//! SQLite storage: the schema, the first-start seed data and every query the API runs.
//!
//! One `rusqlite::Connection` behind a mutex, shared through the cheap `Clone` handle
//! [`Store`]. Queries are plain functions over `&Connection` (or a transaction) so they read
//! top to bottom; [`Store::run`] executes one on the blocking pool, because SQLite calls
//! block (fsync) and must not stall the async workers that also drive the WebSockets.
//!
//! Every mutation returns the entity as it is after the commit, which is what the caller
//! publishes: an event is never sent for a write that did not happen.
//!
//! Here: the handle, the schema, members, settings and the validation rules; the entities'
//! queries live in [`mod@occasions`], [`lists`] (lists, items, comments) and [`mod@gifts`]; the
//! first-start data in `seed`.

pub mod activity;
pub mod gifts;
pub mod lists;
pub mod occasions;
mod seed;

use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::model::Member;

pub use activity::{ActivityRow, MAX_ACTIVITY_ROWS, activity, record_activity};
pub use gifts::{GiftEdit, NewGift, add_gift, delete_gift, edit_gift, gift, gifts};
pub use lists::{
    ItemEdit, ListEdit, NewItem, NewList, add_comment, add_item, add_list, assign_item,
    delete_item, delete_list, edit_item, item, list_detail, list_summaries, list_summary,
    rename_list, set_item_status,
};
pub use occasions::{
    NewOccasion, OccasionEdit, OccasionRemoval, add_occasion, delete_occasion, edit_occasion,
    occasion_detail, occasions,
};

/// Longest accepted name (items, gifts, occasions), in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest accepted notes or comment text, in characters.
pub const MAX_TEXT_CHARS: usize = 2000;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An id that does not exist.
    #[error("{what} {id} not found")]
    NotFound {
        /// Kind of entity ("item").
        what: &'static str,
        /// The id asked for.
        id: i64,
    },
    /// Input that breaks a rule (empty name, unknown member in the body, …).
    #[error("{0}")]
    Invalid(String),
    /// A field whose text is not allowed (control characters, bidirectional overrides).
    #[error("{field}: {why}")]
    Field {
        /// The body field ("name").
        field: String,
        /// What is wrong with it.
        why: String,
    },
    /// SQLite failed.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The blocking task running the query panicked or was cancelled.
    #[error("database task failed: {0}")]
    Task(String),
}

fn not_found(what: &'static str, id: i64) -> StoreError {
    StoreError::NotFound { what, id }
}

/// The shared database handle.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
}

impl Store {
    /// Opens (creating if needed) the database at `path` (`":memory:"` for a throwaway one),
    /// creates the schema and seeds the demo family when the database is empty.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] when the file cannot be opened or written.
    pub fn open(path: &str) -> Result<Self, StoreError> {
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // WAL keeps readers and the single writer from blocking each other on a file DB;
        // in-memory databases report "memory" and that is fine.
        let _mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        conn.execute_batch(SCHEMA)?;
        migrate(&conn)?;
        seed::seed_if_empty(&mut conn)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` with the connection on tokio's blocking pool.
    ///
    /// # Errors
    /// Whatever `f` returns, or [`StoreError::Task`] when it panicked.
    pub async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            // A panic in an earlier query poisons the mutex, but the connection itself is
            // still consistent (its transaction rolled back on drop), so keep using it.
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS members (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, color TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS occasions (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, date TEXT NOT NULL, notes TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS lists (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL,
    occasion_id INTEGER REFERENCES occasions(id), recipient_id INTEGER REFERENCES members(id));
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    list_id INTEGER NOT NULL REFERENCES lists(id) ON DELETE CASCADE,
    name TEXT NOT NULL, notes TEXT NOT NULL DEFAULT '', status TEXT NOT NULL DEFAULT 'IDEA',
    assignee_id INTEGER REFERENCES members(id), created_by INTEGER NOT NULL REFERENCES members(id),
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL, wish_updated_at TEXT);
CREATE TABLE IF NOT EXISTS comments (
    id INTEGER PRIMARY KEY, item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    member_id INTEGER NOT NULL REFERENCES members(id), body TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS gifts (
    id INTEGER PRIMARY KEY, occasion_id INTEGER NOT NULL REFERENCES occasions(id),
    recipient_id INTEGER NOT NULL REFERENCES members(id), giver_id INTEGER REFERENCES members(id),
    name TEXT NOT NULL, notes TEXT NOT NULL DEFAULT '', status TEXT NOT NULL DEFAULT 'PLANNED',
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS activity (
    id INTEGER PRIMARY KEY, topic TEXT NOT NULL, event TEXT NOT NULL, entity_id TEXT NOT NULL,
    user_id TEXT NOT NULL, timestamp TEXT NOT NULL, payload TEXT NOT NULL,
    only_member INTEGER, except_member INTEGER);
";

/// Brings a database made by an older demo up to the current schema (columns added since).
fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let has_column: bool = conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM pragma_table_info('items') WHERE name = 'wish_updated_at')",
        [],
        |r| r.get(0),
    )?;
    if !has_column {
        conn.execute("ALTER TABLE items ADD COLUMN wish_updated_at TEXT", [])?;
    }
    Ok(())
}

/// The current time as RFC 3339 UTC with milliseconds (`2026-11-26T10:30:00.123Z`).
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let millis = now.millisecond();
    // Built by hand: a fixed, lexically sortable shape, whatever `time`'s defaults are.
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

/// The value of setting `key`, storing `make()` first if it has none. The demo keeps its
/// generated JWT secret here, so sessions survive a restart of the backend.
///
/// # Errors
/// [`StoreError::Sqlite`].
pub fn setting_or_insert(
    conn: &mut Connection,
    key: &str,
    make: impl FnOnce() -> String,
) -> Result<String, StoreError> {
    let tx = conn.transaction()?;
    let current: Option<String> = tx
        .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
            r.get(0)
        })
        .optional()?;
    let value = match current {
        Some(v) => v,
        None => {
            let v = make();
            tx.execute(
                "INSERT INTO settings (key, value) VALUES (?1, ?2)",
                params![key, v],
            )?;
            v
        }
    };
    tx.commit()?;
    Ok(value)
}

// ---------------------------------------------------------------- validation

/// Why a character may not appear in a name or text, if it may not: control characters (NUL,
/// escapes, C1; in free text line breaks and tabs are fine) and the invisible bidirectional
/// formatting characters, which can make a name read as something else ("Mom" written
/// right-to-left over "Dad's", a file name ending in "gpj.exe" shown as "exe.jpg").
fn forbidden(c: char, multiline: bool) -> Option<&'static str> {
    match c {
        '\n' | '\t' if multiline => None,
        '\r' if multiline => None,
        c if c.is_control() => Some("a control character"),
        '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' => {
            Some("a bidirectional override or isolate")
        }
        '\u{200E}' | '\u{200F}' | '\u{061C}' => Some("a bidirectional mark"),
        '\u{2028}' | '\u{2029}' => Some("a line or paragraph separator"),
        _ => None,
    }
}

/// Checks that `value` has no [forbidden] character.
fn clean(field: &str, value: &str, multiline: bool) -> Result<(), StoreError> {
    match value
        .chars()
        .find_map(|c| forbidden(c, multiline).map(|why| (c, why)))
    {
        None => Ok(()),
        Some((c, why)) => Err(StoreError::Field {
            field: field.to_owned(),
            why: format!(
                "contains U+{:04X}, {why}; control characters and bidirectional overrides are not allowed",
                u32::from(c)
            ),
        }),
    }
}

/// Trims `value` and checks it is 1 to [`MAX_NAME_CHARS`] characters, on one line, without
/// control characters or bidirectional overrides.
pub(crate) fn name(field: &str, value: &str) -> Result<String, StoreError> {
    clean(field, value, false)?;
    let value = value.trim();
    if value.is_empty() {
        return Err(StoreError::Invalid(format!("{field} must not be empty")));
    }
    if value.chars().count() > MAX_NAME_CHARS {
        return Err(StoreError::Invalid(format!(
            "{field} is longer than {MAX_NAME_CHARS} characters"
        )));
    }
    Ok(value.to_owned())
}

/// Trims `value` and checks it is at most [`MAX_TEXT_CHARS`] characters, without control
/// characters (line breaks and tabs are fine) or bidirectional overrides.
pub(crate) fn text(field: &str, value: &str) -> Result<String, StoreError> {
    clean(field, value, true)?;
    let value = value.trim();
    if value.chars().count() > MAX_TEXT_CHARS {
        return Err(StoreError::Invalid(format!(
            "{field} is longer than {MAX_TEXT_CHARS} characters"
        )));
    }
    Ok(value.to_owned())
}

/// Checks that a member referenced from a request body exists (422, not 404: the URL is fine).
fn existing_member(conn: &Connection, field: &str, id: i64) -> Result<(), StoreError> {
    member(conn, id)?
        .map(|_| ())
        .ok_or_else(|| StoreError::Invalid(format!("{field}: member {id} does not exist")))
}

// ---------------------------------------------------------------- members

fn member_row(r: &Row<'_>) -> rusqlite::Result<Member> {
    Ok(Member {
        id: r.get(0)?,
        name: r.get(1)?,
        color: r.get(2)?,
    })
}

/// Every member, by id.
///
/// # Errors
/// [`StoreError::Sqlite`].
pub fn members(conn: &Connection) -> Result<Vec<Member>, StoreError> {
    let mut stmt = conn.prepare("SELECT id, name, color FROM members ORDER BY id")?;
    let rows = stmt.query_map([], member_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One member, if it exists.
///
/// # Errors
/// [`StoreError::Sqlite`].
pub fn member(conn: &Connection, id: i64) -> Result<Option<Member>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT id, name, color FROM members WHERE id = ?1",
            [id],
            member_row,
        )
        .optional()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ItemStatus;

    fn db() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        seed::seed_if_empty(&mut conn).unwrap();
        conn
    }

    #[test]
    fn seed_runs_once() {
        let mut conn = db();
        seed::seed_if_empty(&mut conn).unwrap();
        assert_eq!(members(&conn).unwrap().len(), 4);
        assert_eq!(list_detail(&conn, 1).unwrap().items.len(), 3);
    }

    #[test]
    fn item_lifecycle() {
        let mut conn = db();
        let item = add_item(
            &mut conn,
            1,
            2,
            NewItem {
                name: "  Kite ".into(),
                notes: String::new(),
            },
        )
        .unwrap();
        assert_eq!(item.name, "Kite");
        assert_eq!(item.created_by_name, "Dad");
        let item = set_item_status(&mut conn, item.id, ItemStatus::Purchased).unwrap();
        assert_eq!(item.status, ItemStatus::Purchased);
        let item = assign_item(&mut conn, item.id, Some(3)).unwrap();
        assert_eq!(item.assignee_name.as_deref(), Some("Alex"));
        let (item, comment) = add_comment(&mut conn, item.id, 1, "wrapped").unwrap();
        assert_eq!(item.comments, vec![comment]);
        delete_item(&mut conn, item.id).unwrap();
        assert!(matches!(
            self::item(&conn, item.id),
            Err(StoreError::NotFound { .. })
        ));
    }

    #[test]
    fn rules() {
        let mut conn = db();
        let empty = NewItem {
            name: " ".into(),
            notes: String::new(),
        };
        assert!(matches!(
            add_item(&mut conn, 1, 1, empty),
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            assign_item(&mut conn, 1, Some(99)),
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            set_item_status(&mut conn, 999, ItemStatus::Idea),
            Err(StoreError::NotFound { .. })
        ));
        let bad_date = NewOccasion {
            name: "x".into(),
            date: "2026-02-30".into(),
            notes: String::new(),
        };
        assert!(matches!(
            add_occasion(&mut conn, bad_date),
            Err(StoreError::Invalid(_))
        ));
    }
}
