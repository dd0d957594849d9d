//! The database file and its schema: opening `<data_dir>/roomcast.db` in
//! WAL mode, the versioned migrations (`schema_version`, run once, in order,
//! at open; a database written by a newer roomcast is refused), the boot
//! counter, and the reads the server makes once at start (registry,
//! revoked tokens).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::query::{ROOM_COLUMNS, room_row};
use super::unix_now_ms;
use super::write::delete_expired_revocations;
use crate::config::Synchronous;
use crate::registry::RoomRecord;

/// The database file inside `data_dir`.
pub const DB_FILE: &str = "roomcast.db";
/// How long SQLite waits on a lock held by another process while the
/// database is opened and migrated; the store thread then uses
/// `store.busy_timeout_ms`.
const OPEN_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The schema, one migration per version: `MIGRATIONS[i]` takes the
/// database from version `i` to `i + 1`. Append only; never edit a released one.
const MIGRATIONS: &[&str] = &[
    // 1: chat history and the boot counter (epochs).
    "CREATE TABLE chat (
        tenant TEXT NOT NULL,
        room TEXT NOT NULL,
        epoch TEXT NOT NULL,
        seq INTEGER NOT NULL,
        msg_id TEXT NOT NULL,
        author TEXT NOT NULL,
        ts_ms INTEGER NOT NULL,
        json BLOB NOT NULL
    );
    CREATE INDEX chat_by_room ON chat (tenant, room);
    CREATE INDEX chat_by_id ON chat (tenant, room, msg_id);
    CREATE TABLE boots (id INTEGER PRIMARY KEY AUTOINCREMENT, started_ms INTEGER NOT NULL);",
    // 2: session audit (one row per connection) and the room registry.
    "CREATE TABLE sessions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        boot INTEGER NOT NULL,
        conn TEXT NOT NULL,
        tenant TEXT NOT NULL,
        room TEXT NOT NULL,
        user TEXT NOT NULL,
        peer TEXT NOT NULL,
        connected_ms INTEGER NOT NULL,
        disconnected_ms INTEGER,
        close_code INTEGER
    );
    CREATE INDEX sessions_by_room ON sessions (tenant, room, connected_ms);
    CREATE INDEX sessions_by_time ON sessions (connected_ms);
    CREATE UNIQUE INDEX sessions_by_conn ON sessions (boot, conn);
    CREATE TABLE rooms (
        tenant TEXT NOT NULL,
        id TEXT NOT NULL,
        name TEXT,
        description TEXT,
        capacity INTEGER,
        lobby INTEGER,
        private INTEGER NOT NULL DEFAULT 0,
        history_max INTEGER,
        metadata TEXT,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        PRIMARY KEY (tenant, id)
    );",
    // 3: revoked and used single-use tokens, by jti, kept until they expire.
    "CREATE TABLE revoked_tokens (
        jti TEXT PRIMARY KEY,
        expires_s INTEGER NOT NULL,
        revoked_ms INTEGER NOT NULL,
        reason TEXT NOT NULL
    );",
    // 4: earlier versions stored an `exp` past i64::MAX as a negative number,
    // which read as long expired: such a row meant "never expires".
    "UPDATE revoked_tokens SET expires_s = 9223372036854775807 WHERE expires_s < 0;",
];

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create {}: {source}", dir.display())]
    CreateDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{}: schema version {found} is newer than this roomcast knows ({known})", path.display())]
    TooNew { path: PathBuf, found: usize, known: usize },
}

/// An open database: the connection, migrated, and this process's boot number.
pub struct Database {
    pub(super) conn: Connection,
    /// Increases by one each time the database is opened; part of every room epoch.
    pub boot: u64,
}

impl Database {
    /// Opens (creating if needed) `<dir>/roomcast.db` in WAL mode, runs the
    /// missing migrations and records a new boot.
    pub fn open(dir: &Path, synchronous: Synchronous) -> Result<Database, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir { dir: dir.to_path_buf(), source })?;
        let path = dir.join(DB_FILE);
        let sqlite = |source| StoreError::Sqlite { path: path.clone(), source };
        let mut conn = Connection::open(&path).map_err(sqlite)?;
        conn.busy_timeout(OPEN_BUSY_TIMEOUT).map_err(sqlite)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(sqlite)?;
        let sync = match synchronous {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", sync).map_err(sqlite)?;
        migrate(&mut conn, &path)?;
        conn.execute("INSERT INTO boots (started_ms) VALUES (?1)", params![unix_now_ms() as i64]).map_err(sqlite)?;
        let boot = conn.last_insert_rowid() as u64;
        Ok(Database { conn, boot })
    }

    /// The schema version the database is at.
    #[cfg(test)]
    pub fn schema_version(&self) -> rusqlite::Result<usize> {
        current_version(&self.conn)
    }

    /// Revoked and spent single-use tokens still to refuse at `now_s`
    /// (`jti`, `expires_s`); expired rows are deleted first. The acceptor
    /// owns the in-memory set these feed (`src/revocation.rs`).
    pub fn revoked_tokens(&self, now_s: u64) -> rusqlite::Result<Vec<(String, u64)>> {
        delete_expired_revocations(&self.conn, now_s)?;
        let mut select = self.conn.prepare("SELECT jti, expires_s FROM revoked_tokens")?;
        let rows = select.query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?.max(0) as u64)))?;
        rows.collect()
    }

    /// Every room the store holds chat of, as `(tenant, room)`: rooms not
    /// among them skip the history read when created (`room::ChatFilter`).
    pub fn chat_rooms(&self) -> rusqlite::Result<Vec<(String, String)>> {
        let mut select = self.conn.prepare("SELECT DISTINCT tenant, room FROM chat")?;
        let rows = select.query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)))?;
        rows.collect()
    }

    /// Every registered room (all tenants), as the live server applies it.
    pub fn registry(&self) -> rusqlite::Result<Vec<RoomRecord>> {
        let mut select = self.conn.prepare(&format!("SELECT {ROOM_COLUMNS} FROM rooms"))?;
        let rows = select.query_map([], room_row)?;
        rows.collect()
    }
    /// How long the store thread waits for a lock another process holds
    /// (`store.busy_timeout_ms`; 0 fails at once) before its transaction fails.
    pub fn set_busy_timeout(&self, timeout: Duration) -> rusqlite::Result<()> {
        self.conn.busy_timeout(timeout)
    }

    /// SQLite's page cache for this connection (`store.cache_kib`).
    pub fn set_cache_kib(&self, kib: u32) -> rusqlite::Result<()> {
        // A negative cache_size is a size in KiB, not a page count.
        self.conn.pragma_update(None, "cache_size", -i64::from(kib))
    }
}

/// Brings the schema to `MIGRATIONS.len()`, one transaction per version.
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let sqlite = |source| StoreError::Sqlite { path: path.to_path_buf(), source };
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)", []).map_err(sqlite)?;
    let found = current_version(conn).map_err(sqlite)?;
    if found > MIGRATIONS.len() {
        return Err(StoreError::TooNew { path: path.to_path_buf(), found, known: MIGRATIONS.len() });
    }
    for (version, sql) in MIGRATIONS.iter().enumerate().skip(found) {
        let tx = conn.transaction().map_err(sqlite)?;
        tx.execute_batch(sql).map_err(sqlite)?;
        tx.execute("DELETE FROM schema_version", []).map_err(sqlite)?;
        tx.execute("INSERT INTO schema_version (version) VALUES (?1)", params![(version + 1) as i64])
            .map_err(sqlite)?;
        tx.commit().map_err(sqlite)?;
        tracing::info!(version = version + 1, "store schema migrated");
    }
    Ok(())
}

fn current_version(conn: &Connection) -> rusqlite::Result<usize> {
    let version: Option<i64> =
        conn.query_row("SELECT max(version) FROM schema_version", [], |row| row.get(0)).optional()?.flatten();
    Ok(version.unwrap_or(0) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_cache_takes_store_cache_kib() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path(), Synchronous::Normal).unwrap();
        db.set_cache_kib(256).unwrap();
        let size: i64 = db.conn.query_row("PRAGMA cache_size", [], |row| row.get(0)).unwrap();
        assert_eq!(size, -256, "negative: KiB, not pages");
    }

    #[test]
    fn migrations_run_once_and_boots_count() {
        let dir = tempfile::tempdir().unwrap();
        let first = Database::open(dir.path(), Synchronous::Full).unwrap();
        assert_eq!(first.schema_version().unwrap(), MIGRATIONS.len());
        assert_eq!(first.boot, 1);
        let mode: String = first.conn.query_row("PRAGMA journal_mode", [], |row| row.get(0)).unwrap();
        assert_eq!(mode, "wal");
        drop(first);
        let second = Database::open(dir.path(), Synchronous::Normal).unwrap();
        assert_eq!(second.schema_version().unwrap(), MIGRATIONS.len());
        assert_eq!(second.boot, 2, "a new boot per open");
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path(), Synchronous::Full).unwrap();
        db.conn.execute("UPDATE schema_version SET version = 99", []).unwrap();
        drop(db);
        let err = Database::open(dir.path(), Synchronous::Full).err().expect("refused");
        assert!(matches!(err, StoreError::TooNew { found: 99, .. }), "{err}");
    }

    #[test]
    fn negative_expiries_of_older_versions_are_repaired_by_migration_4() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path(), Synchronous::Full).unwrap();
        db.conn.execute("INSERT INTO revoked_tokens VALUES ('old-bug', -1, 0, 'revoked')", []).unwrap();
        db.conn.execute("UPDATE schema_version SET version = 3", []).unwrap();
        drop(db);
        let db = Database::open(dir.path(), Synchronous::Full).unwrap();
        assert_eq!(db.revoked_tokens(unix_now_ms() / 1000).unwrap(), [("old-bug".into(), i64::MAX as u64)]);
    }
}
