//! The SQL of the event batch: one transaction per batch of
//! [`StoreEvent`]s (chat appends and deletes, history loads queued among
//! them, session audit rows, revocations), and the deletes that keep the
//! tables bounded.

use std::collections::HashSet;
use std::fmt::Write;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::monitor::row_kind;
use super::query::query_history;
use super::sql_int;
use crate::ids::{ConnId, RoomKey};
use crate::msg::StoreEvent;
use crate::room::StoredChat;

/// Deletes the `revoked_tokens` rows whose token has expired by `now_s`.
pub(super) fn delete_expired_revocations(conn: &Connection, now_s: u64) -> rusqlite::Result<usize> {
    conn.execute("DELETE FROM revoked_tokens WHERE expires_s <= ?1", params![sql_int(now_s)])
}

/// One transaction for the whole batch; history answers in queue order.
/// A batch that writes takes the write lock at its start (`BEGIN
/// IMMEDIATE`), waiting up to the busy timeout for another process that
/// holds it, so it never fails halfway on a lock. Chat rooms written to
/// are pruned to their history limit in the same transaction; returns how
/// many chat rows that deleted.
pub(super) fn write_batch(
    conn: &mut Connection,
    boot: u64,
    chat_history_max: u32,
    batch: &[StoreEvent],
    histories: &mut Vec<Vec<StoredChat>>,
) -> rusqlite::Result<u64> {
    let writes = batch.iter().any(|event| row_kind(event).is_some());
    let behavior = if writes { TransactionBehavior::Immediate } else { TransactionBehavior::Deferred };
    let tx = conn.transaction_with_behavior(behavior)?;
    let mut chat_rooms: HashSet<&RoomKey> = HashSet::new();
    // The audit rows' text columns, formatted into buffers reused across the batch.
    let (mut conn_text, mut peer_text) = (String::new(), String::new());
    for event in batch {
        match event {
            StoreEvent::Chat(record) => {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO chat (tenant, room, epoch, seq, msg_id, author, ts_ms, json)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?;
                insert.execute(params![
                    record.key.tenant(),
                    record.key.room(),
                    &*record.epoch,
                    sql_int(record.seq),
                    &*record.id,
                    &*record.author,
                    sql_int(record.ts_ms),
                    &*record.json,
                ])?;
                chat_rooms.insert(&record.key);
            }
            StoreEvent::ChatDelete { key, id } => {
                let mut delete = tx.prepare_cached(
                    "DELETE FROM chat WHERE rowid = (SELECT max(rowid) FROM chat
                     WHERE tenant = ?1 AND room = ?2 AND msg_id = ?3)",
                )?;
                delete.execute(params![key.tenant(), key.room(), &**id])?;
            }
            StoreEvent::LoadHistory { key, limit, .. } => histories.push(query_history(&tx, key, *limit)?),
            StoreEvent::SessionOpen(open) => {
                // OR IGNORE: a duplicate (boot, conn) must not fail the chat in the batch.
                let mut insert = tx.prepare_cached(
                    "INSERT OR IGNORE INTO sessions (boot, conn, tenant, room, user, peer, connected_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?;
                peer_text.clear();
                if let Some(addr) = open.peer {
                    let _ = write!(peer_text, "{addr}");
                }
                insert.execute(params![
                    boot as i64,
                    conn_text_of(&mut conn_text, open.conn),
                    open.key.tenant(),
                    open.key.room(),
                    open.member.user(),
                    &peer_text,
                    sql_int(open.connected_ms),
                ])?;
            }
            StoreEvent::SessionClose { conn, disconnected_ms, close_code } => {
                let mut update = tx.prepare_cached(
                    "UPDATE sessions SET disconnected_ms = ?1, close_code = ?2
                     WHERE boot = ?3 AND conn = ?4 AND disconnected_ms IS NULL",
                )?;
                let conn = conn_text_of(&mut conn_text, *conn);
                update.execute(params![sql_int(*disconnected_ms), close_code, boot as i64, conn])?;
            }
            StoreEvent::Query(_) => {}
            StoreEvent::Revoke { jti, expires_s, revoked_ms, reason } => {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO revoked_tokens (jti, expires_s, revoked_ms, reason) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![&**jti, sql_int(*expires_s), sql_int(*revoked_ms), *reason])?;
            }
        }
    }
    let mut pruned = 0;
    for key in chat_rooms {
        pruned += prune_chat(&tx, key, chat_history_max)?;
    }
    tx.commit()?;
    Ok(pruned)
}

/// `conn` as the audit rows name it (`shard.slot.generation`), written into `buffer`.
fn conn_text_of(buffer: &mut String, conn: ConnId) -> &str {
    buffer.clear();
    let _ = write!(buffer, "{conn}");
    buffer
}

/// Deletes the oldest chat rows of `key` beyond what the room keeps: its
/// registry entry's `history_max` when set, else `default_max`
/// (`rooms.history_max`). Costs a walk over the kept rows of the room's index.
fn prune_chat(tx: &Connection, key: &RoomKey, default_max: u32) -> rusqlite::Result<u64> {
    let registered: Option<i64> = tx
        .prepare_cached("SELECT history_max FROM rooms WHERE tenant = ?1 AND id = ?2")?
        .query_row(params![key.tenant(), key.room()], |row| row.get(0))
        .optional()?
        .flatten();
    let keep = registered.unwrap_or(i64::from(default_max)).max(0);
    let deleted = tx
        .prepare_cached(
            "DELETE FROM chat WHERE tenant = ?1 AND room = ?2 AND rowid <= (SELECT rowid FROM chat
             WHERE tenant = ?1 AND room = ?2 ORDER BY rowid DESC LIMIT 1 OFFSET ?3)",
        )?
        .execute(params![key.tenant(), key.room(), keep])?;
    Ok(deleted as u64)
}
