//! SQLite storage: the schema, the first-start seed data and every query the API runs.
//!
//! One `rusqlite::Connection` behind a mutex, shared through the cheap `Clone` handle
//! [`Store`]. Queries are plain functions over `&Connection` (or a transaction) so they read
//! top to bottom; [`Store::run`] executes one on the blocking pool, because SQLite calls
//! block (fsync) and must not stall the async workers that also drive the WebSockets.
//!
//! Every mutation returns the entity as it is after the commit, which is what the caller
//! publishes: an event is never sent for a write that did not happen.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};
use serde::Deserialize;

use crate::model::{
    Comment, Gift, GiftStatus, Item, ItemStatus, ListDetail, ListSummary, Member, Occasion,
    OccasionDetail,
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
        seed_if_empty(&mut conn)?;
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
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS comments (
    id INTEGER PRIMARY KEY, item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    member_id INTEGER NOT NULL REFERENCES members(id), body TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS gifts (
    id INTEGER PRIMARY KEY, occasion_id INTEGER NOT NULL REFERENCES occasions(id),
    recipient_id INTEGER NOT NULL REFERENCES members(id), giver_id INTEGER REFERENCES members(id),
    name TEXT NOT NULL, notes TEXT NOT NULL DEFAULT '', status TEXT NOT NULL DEFAULT 'PLANNED',
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
";

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

fn seed_if_empty(conn: &mut Connection) -> Result<(), StoreError> {
    let members: i64 = conn.query_row("SELECT COUNT(*) FROM members", [], |r| r.get(0))?;
    if members > 0 {
        return Ok(());
    }
    let now = now_rfc3339();
    let tx = conn.transaction()?;
    for (id, name, color) in [
        (1, "Mom", "#e0607e"),
        (2, "Dad", "#3f7fd8"),
        (3, "Alex", "#2fa37a"),
        (4, "Sam", "#e39b2d"),
    ] {
        tx.execute(
            "INSERT INTO members (id, name, color) VALUES (?1, ?2, ?3)",
            params![id, name, color],
        )?;
    }
    tx.execute(
        "INSERT INTO occasions (id, name, date, notes) VALUES
         (1, 'Christmas 2026', '2026-12-25', 'At Grandma''s this year.'),
         (2, 'Sam''s birthday', '2027-03-14', 'Sam turns 10!')",
        [],
    )?;
    tx.execute(
        "INSERT INTO lists (id, name, occasion_id, recipient_id) VALUES
         (1, 'Sam''s Christmas wishes', 1, 4),
         (2, 'Alex''s Christmas wishes', 1, 3),
         (3, 'Sam''s birthday party', 2, 4)",
        [],
    )?;
    // (list, name, notes, status, assignee, created_by)
    type SeedItem = (
        i64,
        &'static str,
        &'static str,
        &'static str,
        Option<i64>,
        i64,
    );
    let items: [SeedItem; 7] = [
        (
            1,
            "Lego set",
            "The big space shuttle one",
            "SELECTED",
            Some(1),
            4,
        ),
        (1, "Sketchbook & pencils", "", "IDEA", None, 4),
        (1, "Bike helmet", "Size M, blue", "PURCHASED", Some(2), 1),
        (2, "Wireless headphones", "Over-ear", "IDEA", None, 3),
        (2, "Board game: Catan", "", "SELECTED", Some(4), 3),
        (3, "Balloons", "Orange and green", "IDEA", Some(3), 1),
        (
            3,
            "Chocolate cake",
            "From the bakery on Main St",
            "SELECTED",
            Some(1),
            2,
        ),
    ];
    for (list, name, notes, status, assignee, by) in items {
        tx.execute(
            "INSERT INTO items (list_id, name, notes, status, assignee_id, created_by, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
            params![list, name, notes, status, assignee, by, now],
        )?;
    }
    tx.execute(
        "INSERT INTO comments (item_id, member_id, body, created_at)
         VALUES (1, 2, 'I saw it on sale at the toy store.', ?1)",
        params![now],
    )?;
    for (occasion, recipient, giver, name, status) in [
        (1, 1, Some(2), "Cookbook", "PURCHASED"),
        (1, 2, Some(1), "Watch", "PLANNED"),
        (2, 4, Some(3), "Skateboard", "PLANNED"),
    ] {
        tx.execute(
            "INSERT INTO gifts (occasion_id, recipient_id, giver_id, name, status, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
            params![occasion, recipient, giver, name, status, now],
        )?;
    }
    tx.commit()?;
    Ok(())
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

/// Trims `value` and checks it is 1 to [`MAX_NAME_CHARS`] characters.
fn name(field: &str, value: &str) -> Result<String, StoreError> {
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

/// Trims `value` and checks it is at most [`MAX_TEXT_CHARS`] characters.
fn text(field: &str, value: &str) -> Result<String, StoreError> {
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

// ---------------------------------------------------------------- occasions

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

fn occasion(conn: &Connection, id: i64) -> Result<Occasion, StoreError> {
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

// ---------------------------------------------------------------- lists

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
        done_count: r.get(7)?,
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
    let list = conn
        .query_row(&format!("{LIST_SELECT} WHERE l.id = ?1"), [id], list_row)
        .optional()?
        .ok_or_else(|| not_found("list", id))?;
    let items = items_where(conn, "i.list_id = ?1", id)?;
    Ok(ListDetail { list, items })
}

// ---------------------------------------------------------------- items

const ITEM_SELECT: &str = "
SELECT i.id, i.list_id, l.name, i.name, i.notes, i.status, i.assignee_id, a.name,
       i.created_by, c.name, i.created_at, i.updated_at
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
        "INSERT INTO items (list_id, name, notes, status, created_by, created_at, updated_at)
         VALUES (?1, ?2, ?3, 'IDEA', ?4, ?5, ?5)",
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
        "UPDATE items SET name = COALESCE(?2, name), notes = COALESCE(?3, notes) WHERE id = ?1",
        params![id, name, notes],
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

// ---------------------------------------------------------------- gifts

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

fn gifts_where(
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

fn gift(conn: &Connection, id: i64) -> Result<Gift, StoreError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        seed_if_empty(&mut conn).unwrap();
        conn
    }

    #[test]
    fn seed_runs_once() {
        let mut conn = db();
        seed_if_empty(&mut conn).unwrap();
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
        assert!(date("2026-02-30").is_err());
        assert!(date("2026-12-25").is_ok());
    }
}
