//! The SQL of reads: HTTP API requests (the usage report and the room
//! registry, whose writes come from the API too) and chat history.

use rusqlite::{Connection, OptionalExtension, params};

use super::{DAY_MS, unix_now_ms};
use crate::ids::RoomKey;
use crate::msg::{DayUsage, QueryRequest, StoreAnswer};
use crate::registry::RoomRecord;
use crate::room::StoredChat;

/// Answers an HTTP API read.
pub(super) fn run_query(conn: &Connection, request: &QueryRequest) -> rusqlite::Result<StoreAnswer> {
    match request {
        QueryRequest::Usage { tenant, room, from_day, to_day } => {
            usage(conn, tenant, room.as_deref(), *from_day, *to_day).map(StoreAnswer::Usage)
        }
        QueryRequest::RoomCreate(room) => {
            let now = unix_now_ms() as i64;
            let added = conn.execute(
                "INSERT OR IGNORE INTO rooms (tenant, id, name, description, capacity, lobby, private,
                 history_max, metadata, created_ms, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)",
                &room_params(room, &now)[..],
            )?;
            if added == 0 {
                return Ok(StoreAnswer::Room(None));
            }
            get_room(conn, &room.tenant, &room.id).map(StoreAnswer::Room)
        }
        QueryRequest::RoomReplace(room) => {
            let now = unix_now_ms() as i64;
            let changed = conn.execute(
                "UPDATE rooms SET name = ?3, description = ?4, capacity = ?5, lobby = ?6, private = ?7,
                 history_max = ?8, metadata = ?9, updated_ms = ?10 WHERE tenant = ?1 AND id = ?2",
                &room_params(room, &now)[..],
            )?;
            if changed == 0 {
                return Ok(StoreAnswer::Room(None));
            }
            get_room(conn, &room.tenant, &room.id).map(StoreAnswer::Room)
        }
        QueryRequest::RoomGet { tenant, id } => get_room(conn, tenant, id).map(StoreAnswer::Room),
        QueryRequest::RoomDelete { tenant, id } => {
            let deleted = conn.execute("DELETE FROM rooms WHERE tenant = ?1 AND id = ?2", params![tenant, id])?;
            Ok(StoreAnswer::Deleted(deleted > 0))
        }
        QueryRequest::RoomList { tenant, after, limit } => {
            let mut select = conn.prepare_cached(&format!(
                "SELECT {ROOM_COLUMNS} FROM rooms WHERE tenant = ?1 AND id > ?2 ORDER BY id LIMIT ?3"
            ))?;
            let after = after.as_deref().unwrap_or("");
            let rows = select.query_map(params![tenant, after, *limit as i64], room_row)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map(StoreAnswer::Rooms)
        }
    }
}

/// The parameters `?1`…`?10` of both registry writes (create and replace):
/// the room's fields in `ROOM_COLUMNS` order, then the time of the write.
fn room_params<'a>(room: &'a RoomRecord, now_ms: &'a i64) -> [&'a dyn rusqlite::ToSql; 10] {
    [
        &room.tenant,
        &room.id,
        &room.name,
        &room.description,
        &room.capacity,
        &room.lobby,
        &room.private,
        &room.history_max,
        &room.metadata,
        now_ms,
    ]
}

pub(super) const ROOM_COLUMNS: &str =
    "tenant, id, name, description, capacity, lobby, private, history_max, metadata, created_ms, updated_ms";

pub(super) fn room_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RoomRecord> {
    Ok(RoomRecord {
        tenant: row.get(0)?,
        id: row.get(1)?,
        name: row.get(2)?,
        description: row.get(3)?,
        capacity: row.get(4)?,
        lobby: row.get(5)?,
        private: row.get(6)?,
        history_max: row.get(7)?,
        metadata: row.get(8)?,
        created_ms: row.get::<_, i64>(9)? as u64,
        updated_ms: row.get::<_, i64>(10)? as u64,
    })
}

fn get_room(conn: &Connection, tenant: &str, id: &str) -> rusqlite::Result<Option<RoomRecord>> {
    let mut select = conn.prepare_cached(&format!("SELECT {ROOM_COLUMNS} FROM rooms WHERE tenant = ?1 AND id = ?2"))?;
    select.query_row(params![tenant, id], room_row).optional()
}

/// Per UTC day of connection that has sessions: unique users, sessions, and
/// the average and nearest-rank p95 duration of the sessions that have ended.
/// A range with `from_day > to_day` is empty. Computed by SQLite (its sorts
/// spill to temporary storage), so the store thread holds one row per day,
/// not one per session; the HTTP API bounds the range (366 days).
pub(super) fn usage(
    conn: &Connection,
    tenant: &str,
    room: Option<&str>,
    from_day: i64,
    to_day: i64,
) -> rusqlite::Result<Vec<DayUsage>> {
    if from_day > to_day {
        return Ok(Vec::new());
    }
    let start = from_day.saturating_mul(DAY_MS);
    let end = to_day.saturating_add(1).saturating_mul(DAY_MS);
    // `?2` is the room, or NULL for the whole tenant; the two statements
    // differ so that each can use its index.
    let room_filter = if room.is_some() { "room = ?2" } else { "?2 IS NULL" };
    let sql = format!(
        "WITH s AS (
            SELECT connected_ms / {DAY_MS} AS day, user,
                   CASE WHEN disconnected_ms IS NULL THEN NULL
                        ELSE max(disconnected_ms - connected_ms, 0) END AS duration
            FROM sessions
            WHERE tenant = ?1 AND {room_filter} AND connected_ms >= ?3 AND connected_ms < ?4
        ),
        ended AS (
            SELECT day, duration,
                   row_number() OVER (PARTITION BY day ORDER BY duration) AS rank,
                   count(*) OVER (PARTITION BY day) AS n
            FROM s WHERE duration IS NOT NULL
        )
        SELECT d.day, d.users, d.sessions, e.total, e.n, p.duration
        FROM (SELECT day, count(DISTINCT user) AS users, count(*) AS sessions FROM s GROUP BY day) AS d
        LEFT JOIN (SELECT day, sum(duration) AS total, count(*) AS n FROM ended GROUP BY day) AS e ON e.day = d.day
        LEFT JOIN (SELECT day, duration FROM ended WHERE rank = (n * 95 + 99) / 100) AS p ON p.day = d.day
        ORDER BY d.day"
    );
    let mut select = conn.prepare_cached(&sql)?;
    let rows = select.query_map(params![tenant, room, start, end], |row| {
        let total: Option<i64> = row.get(3)?;
        let ended: Option<i64> = row.get(4)?;
        let p95: Option<i64> = row.get(5)?;
        // Durations are whole milliseconds, and so is the mean (rounded half
        // up) before it becomes seconds: `docs/http-api.md` §6.2 promises
        // seconds to the millisecond, not 0.3486666666666667.
        let avg = match (total, ended) {
            (Some(total), Some(ended)) if ended > 0 => Some(mean_ms(total, ended) as f64 / 1000.0),
            _ => None,
        };
        Ok(DayUsage {
            day: row.get(0)?,
            unique_users: row.get::<_, i64>(1)? as u64,
            sessions: row.get::<_, i64>(2)? as u64,
            avg_duration_s: avg,
            p95_duration_s: p95.map(|ms| ms as f64 / 1000.0),
        })
    })?;
    rows.collect()
}

/// The mean of `count` non-negative durations adding up to `total_ms`, to
/// the nearest millisecond (halves round up).
fn mean_ms(total_ms: i64, count: i64) -> i64 {
    (total_ms.saturating_add(count / 2)) / count
}

/// The last `limit` messages of `key`, oldest first.
pub(super) fn query_history(conn: &Connection, key: &RoomKey, limit: u32) -> rusqlite::Result<Vec<StoredChat>> {
    let mut select = conn.prepare_cached(
        "SELECT msg_id, author, json FROM chat WHERE tenant = ?1 AND room = ?2 ORDER BY rowid DESC LIMIT ?3",
    )?;
    let rows = select.query_map(params![key.tenant(), key.room(), i64::from(limit)], |row| {
        Ok(StoredChat {
            id: row.get::<_, String>(0)?.into(),
            author: row.get::<_, String>(1)?.into(),
            json: row.get::<_, Vec<u8>>(2)?.into(),
        })
    })?;
    let mut entries = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    entries.reverse();
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Synchronous;
    use crate::store::Database;

    #[test]
    fn usage_durations_are_whole_milliseconds_in_seconds() {
        assert_eq!((mean_ms(1046, 3), mean_ms(1045, 2), mean_ms(1044, 2), mean_ms(0, 5)), (349, 523, 522, 0));
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path(), Synchronous::Full).unwrap();
        let day = 20_000_i64;
        let t0 = day * DAY_MS;
        // Three ended sessions of 100, 300 and 646 ms: a mean of 348.67 ms.
        for (i, ms) in [100, 300, 646].into_iter().enumerate() {
            db.conn
                .execute(
                    "INSERT INTO sessions (boot, conn, tenant, room, user, peer, connected_ms, disconnected_ms, close_code)
                     VALUES (1, ?1, 't', 'r', 'u', '127.0.0.1:1', ?2, ?3, 1000)",
                    params![format!("c{i}"), t0 + i as i64, t0 + i as i64 + ms],
                )
                .unwrap();
        }
        let days = usage(&db.conn, "t", Some("r"), day, day).unwrap();
        assert_eq!(days[0].avg_duration_s, Some(0.349), "not 0.3486666666666667");
        assert_eq!(days[0].p95_duration_s, Some(0.646));
        let json = serde_json::json!({ "avg": days[0].avg_duration_s }).to_string();
        assert_eq!(json, r#"{"avg":0.349}"#, "prints as written");
    }

    #[test]
    fn registry_rooms_are_created_once_replaced_listed_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path(), Synchronous::Full).unwrap();
        let conn = &db.conn;
        let room = |id: &str| RoomRecord {
            tenant: "t".into(),
            id: id.into(),
            name: Some("Stand-up".into()),
            capacity: Some(5),
            metadata: Some(r#"{"k":1}"#.into()),
            ..RoomRecord::default()
        };
        let created = match run_query(conn, &QueryRequest::RoomCreate(Box::new(room("a")))).unwrap() {
            StoreAnswer::Room(Some(created)) => created,
            other => panic!("{other:?}"),
        };
        assert_eq!((created.capacity, created.lobby, created.private), (Some(5), None, false));
        assert!(created.created_ms > 0 && created.created_ms == created.updated_ms);
        assert_eq!(run_query(conn, &QueryRequest::RoomCreate(Box::new(room("a")))).unwrap(), StoreAnswer::Room(None));
        run_query(conn, &QueryRequest::RoomCreate(Box::new(room("b")))).unwrap();
        let replaced = RoomRecord { private: true, lobby: Some(true), name: None, ..room("a") };
        match run_query(conn, &QueryRequest::RoomReplace(Box::new(replaced))).unwrap() {
            StoreAnswer::Room(Some(r)) => {
                assert_eq!((r.private, r.lobby, r.name, r.created_ms), (true, Some(true), None, created.created_ms))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(run_query(conn, &QueryRequest::RoomReplace(Box::new(room("zz")))).unwrap(), StoreAnswer::Room(None));
        let list = |after: Option<&str>, tenant: &str| match run_query(
            conn,
            &QueryRequest::RoomList { tenant: tenant.into(), after: after.map(Into::into), limit: 10 },
        )
        .unwrap()
        {
            StoreAnswer::Rooms(rooms) => rooms.into_iter().map(|r| r.id).collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        assert_eq!(list(None, "t"), ["a", "b"]);
        assert_eq!(list(Some("a"), "t"), ["b"]);
        assert!(list(None, "u").is_empty(), "tenant-scoped");
        let delete = QueryRequest::RoomDelete { tenant: "t".into(), id: "a".into() };
        assert_eq!(run_query(conn, &delete).unwrap(), StoreAnswer::Deleted(true));
        assert_eq!(run_query(conn, &delete).unwrap(), StoreAnswer::Deleted(false));
        let get = QueryRequest::RoomGet { tenant: "t".into(), id: "a".into() };
        assert_eq!(run_query(conn, &get).unwrap(), StoreAnswer::Room(None));
    }
}
