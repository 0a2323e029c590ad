//! The demo family, created on the first start of an empty database: four members, two
//! occasions, three wish lists with a few items, a comment and some planned gifts.

use rusqlite::{Connection, params};

use super::{StoreError, now_rfc3339};

pub(super) fn seed_if_empty(conn: &mut Connection) -> Result<(), StoreError> {
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
