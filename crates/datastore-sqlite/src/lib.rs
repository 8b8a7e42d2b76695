//! The embedded datastore: the [`Datastore`] contract on one SQLite file.
//!
//! Several processes (the agent, the CNI plugin, the CLI) open the same file at once. SQLite's
//! write-ahead log lets readers run beside one writer; writers serialise on `BEGIN IMMEDIATE`
//! and wait for each other up to a busy timeout.
//!
//! Layout (three tables):
//! - `kv`: the current value of every key, with etcd's `create_rev`, `mod_rev` and `version`;
//! - `log`: one row per event (revision, position inside the transaction, key, new value and the
//!   previous value), the history that watches read;
//! - `meta`: the current `revision` and the `compacted` revision (the oldest one still in `log`).
//!
//! Watches poll `log` from their own connection: writes from this process wake them at once
//! (a process-wide condition variable), writes from other processes within [`POLL_INTERVAL`].
//! History older than [`SqliteOptions::history`] revisions is compacted away automatically.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use gingham_datastore::{
    Compare, Datastore, Error, Event, EventKind, KeyValue, Listing, Op, Result, Revision, Txn,
    TxnOutcome, Watch, compare_holds,
};
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

/// How often a watch looks for writes made by other processes.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// How long a writer waits for another process's write lock before reporting the store busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Tunables of a store.
#[derive(Clone, Copy, Debug)]
pub struct SqliteOptions {
    /// How many revisions of history watches can go back; older events are compacted away.
    pub history: Revision,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self { history: 100_000 }
    }
}

/// Writes in this process wake this process's watches without waiting for the next poll.
static WRITES: (Mutex<u64>, Condvar) = (Mutex::new(0), Condvar::new());

fn lock_writes() -> MutexGuard<'static, u64> {
    WRITES.0.lock().unwrap_or_else(|p| p.into_inner())
}

fn notify_writes() {
    *lock_writes() += 1;
    WRITES.1.notify_all();
}

/// One connection to a store file. Open one per process (or several: they share nothing but
/// the file).
pub struct SqliteStore {
    path: PathBuf,
    conn: Mutex<Connection>,
    options: SqliteOptions,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    create_rev INTEGER NOT NULL,
    mod_rev INTEGER NOT NULL,
    version INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log (
    rev INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    create_rev INTEGER NOT NULL,
    version INTEGER NOT NULL,
    prev_value BLOB,
    prev_create_rev INTEGER,
    prev_mod_rev INTEGER,
    prev_version INTEGER,
    PRIMARY KEY (rev, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (name, value) VALUES ('schema', 1), ('revision', 1), ('compacted', 0);
";

const KIND_PUT: i64 = 0;
const KIND_DELETE: i64 = 1;

impl SqliteStore {
    /// Opens (creating if needed, with its directory) the store at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, SqliteOptions::default())
    }

    pub fn open_with(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(e) = read_only(&path) {
            return Err(e);
        }
        // Someone else's database is refused before anything touches it.
        check_is_ours(&path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.exists()
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                read_only(&path).unwrap_or_else(|| {
                    Error::Unavailable(format!(
                        "cannot create the directory {}: {e}",
                        dir.display()
                    ))
                })
            })?;
        }
        let conn = open_connection(&path)?;
        // Creating the schema is itself a write; several processes may race to do it.
        with_busy_retry(&path, || conn.execute_batch(SCHEMA))?;
        Ok(Self {
            path,
            conn: Mutex::new(conn),
            options,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn err(&self, e: rusqlite::Error) -> Error {
        sql_error(&self.path, e)
    }
}

/// The tables of a Gingham store.
const OUR_TABLES: [&str; 3] = ["kv", "log", "meta"];

/// Refuses an existing file that is not a Gingham store (another program's SQLite database, or
/// not a database at all), reading it without changing it.
fn check_is_ours(path: &Path) -> Result<()> {
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(());
    };
    if meta.is_dir() {
        return Err(Error::Config(format!(
            "{} is a directory; give the path of a datastore file inside it (e.g. {}/gingham.db)",
            path.display(),
            path.display()
        )));
    }
    if meta.len() == 0 {
        return Ok(());
    }
    let not_ours = |why: String| {
        Error::Config(format!(
            "{} is not a Gingham datastore ({why}); it was left unchanged. Point --datastore at a new file or at a Gingham datastore",
            path.display()
        ))
    };
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| not_ours(format!("it cannot be opened as a SQLite database: {e}")))?;
    let _ = conn.busy_timeout(BUSY_TIMEOUT);
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .and_then(|mut stmt| {
            stmt.query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()
        })
        .map_err(|e| match &e {
            rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::NotADatabase => {
                not_ours("it is not a SQLite database".into())
            }
            _ => sql_error(path, e),
        })?;
    if tables.is_empty() {
        return Ok(());
    }
    let foreign: Vec<&str> = tables
        .iter()
        .map(String::as_str)
        .filter(|t| !OUR_TABLES.contains(t))
        .collect();
    if !foreign.is_empty() {
        let shown: Vec<&str> = foreign.iter().take(5).copied().collect();
        let more = foreign.len().saturating_sub(shown.len());
        return Err(not_ours(format!(
            "it is a SQLite database with other tables: {}{}",
            shown.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        )));
    }
    // Only our tables, perhaps not all of them yet: another process may be creating the store
    // (its statements commit one by one).
    if !tables.iter().any(|t| t == "meta") {
        return Ok(());
    }
    let schema: Option<i64> = conn
        .query_row("SELECT value FROM meta WHERE name = 'schema'", [], |r| {
            r.get(0)
        })
        .optional()
        .map_err(|_| not_ours("its meta table is not Gingham's".into()))?;
    match schema {
        Some(1) | None => Ok(()),
        Some(v) => Err(not_ours(format!(
            "it has schema version {v}, this gingham knows 1"
        ))),
    }
}

/// The "read-only" error when the store (or, for a new store, its directory) cannot be written:
/// a read-only file system, or no write permission.
fn read_only(path: &Path) -> Option<Error> {
    use nix::unistd::{AccessFlags, access};
    // The nearest existing directory: where the file is, or would be created.
    let mut dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    while !dir.as_os_str().is_empty() && !dir.exists() {
        dir = dir.parent().map(Path::to_path_buf).unwrap_or_default();
    }
    if dir.as_os_str().is_empty() {
        dir = ".".into();
    }
    let mut checks = vec![dir];
    if path.exists() {
        checks.insert(0, path.to_path_buf());
    }
    // The store and its directory (SQLite writes its write-ahead log beside the file).
    for p in &checks {
        match access(p.as_path(), AccessFlags::W_OK) {
            Ok(()) => {}
            Err(nix::errno::Errno::EROFS) => {
                return Some(Error::ReadOnly(format!(
                    "{} is on a read-only file system",
                    path.display()
                )));
            }
            Err(nix::errno::Errno::EACCES | nix::errno::Errno::EPERM) => {
                return Some(Error::ReadOnly(format!(
                    "{} cannot be written by this user (no write permission on {})",
                    path.display(),
                    p.display()
                )));
            }
            Err(_) => {}
        }
    }
    None
}

fn open_connection(path: &Path) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| {
        Error::Unavailable(format!(
            "cannot open the SQLite store {}: {e}",
            path.display()
        ))
    })?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| sql_error(path, e))?;
    with_busy_retry(path, || {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")
    })?;
    Ok(conn)
}

/// Runs `f`, retrying while the database is locked by another process (up to the busy timeout;
/// some statements, such as switching the journal mode, do not wait on their own).
fn with_busy_retry<T>(path: &Path, mut f: impl FnMut() -> rusqlite::Result<T>) -> Result<T> {
    let deadline = Instant::now() + BUSY_TIMEOUT;
    loop {
        match f() {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return other.map_err(|e| sql_error(path, e)),
        }
    }
}

fn sql_error(path: &Path, e: rusqlite::Error) -> Error {
    match &e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ReadOnly => {
            Error::ReadOnly(format!("{} cannot be written: {e}", path.display()))
        }
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) =>
        {
            Error::Unavailable(format!(
                "{} stayed locked by another process for more than {}s",
                path.display(),
                BUSY_TIMEOUT.as_secs()
            ))
        }
        _ => Error::Backend(format!("{}: {e}", path.display())),
    }
}

fn meta(conn: &Connection, name: &str) -> rusqlite::Result<i64> {
    conn.query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
        r.get(0)
    })
}

fn read_kv(conn: &Connection, key: &str) -> rusqlite::Result<Option<KeyValue>> {
    conn.prepare_cached("SELECT value, create_rev, mod_rev, version FROM kv WHERE key = ?1")?
        .query_row([key], |r| {
            Ok(KeyValue {
                key: key.to_owned(),
                value: r.get(0)?,
                create_revision: r.get(1)?,
                mod_revision: r.get(2)?,
                version: r.get(3)?,
            })
        })
        .optional()
}

impl Datastore for SqliteStore {
    fn describe(&self) -> String {
        format!("sqlite:{}", self.path.display())
    }

    fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        read_kv(&self.conn(), key).map_err(|e| self.err(e))
    }

    fn list(&self, prefix: &str) -> Result<Listing> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let listing = (|| {
            let revision = meta(&tx, "revision")?;
            let mut stmt = tx.prepare_cached(
                "SELECT key, value, create_rev, mod_rev, version FROM kv WHERE key >= ?1 ORDER BY key",
            )?;
            let mut rows = stmt.query([prefix])?;
            let mut kvs = Vec::new();
            while let Some(r) = rows.next()? {
                let key: String = r.get(0)?;
                if !key.starts_with(prefix) {
                    break;
                }
                kvs.push(KeyValue {
                    key,
                    value: r.get(1)?,
                    create_revision: r.get(2)?,
                    mod_revision: r.get(3)?,
                    version: r.get(4)?,
                });
            }
            Ok(Listing { kvs, revision })
        })()
        .map_err(|e| self.err(e))?;
        tx.finish().map_err(|e| self.err(e))?;
        Ok(listing)
    }

    fn txn(&self, txn: &Txn) -> Result<TxnOutcome> {
        let mut conn = self.conn();
        let outcome = with_busy_retry(&self.path, || {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let outcome = apply_txn(&tx, txn, self.options.history)?;
            tx.commit()?;
            Ok(outcome)
        })?;
        drop(conn);
        if let TxnOutcome::Committed { .. } = outcome
            && !txn.ops.is_empty()
        {
            notify_writes();
        }
        Ok(outcome)
    }

    fn watch(&self, prefix: &str, after: Revision) -> Result<Box<dyn Watch>> {
        let conn = open_connection(&self.path)?;
        let compacted = meta(&conn, "compacted").map_err(|e| self.err(e))?;
        check_compacted(after, compacted)?;
        Ok(Box::new(SqliteWatch {
            path: self.path.clone(),
            conn,
            prefix: prefix.to_owned(),
            after,
            pending: VecDeque::new(),
        }))
    }

    fn revision(&self) -> Result<Revision> {
        meta(&self.conn(), "revision").map_err(|e| self.err(e))
    }

    fn compact(&self, revision: Revision) -> Result<()> {
        let mut conn = self.conn();
        with_busy_retry(&self.path, || {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let current = meta(&tx, "revision")?;
            if revision > current {
                return Ok(Err(Error::Backend(format!(
                    "cannot compact to revision {revision}: the store is at {current}"
                ))));
            }
            compact_in(&tx, revision)?;
            tx.commit()?;
            Ok(Ok(()))
        })?
    }
}

fn check_compacted(after: Revision, compacted: Revision) -> Result<()> {
    if after + 1 < compacted {
        return Err(Error::Compacted {
            requested: after,
            compacted,
        });
    }
    Ok(())
}

/// Drops history before `revision` (inside the caller's write transaction).
fn compact_in(tx: &Connection, revision: Revision) -> rusqlite::Result<()> {
    if revision > meta(tx, "compacted")? {
        tx.execute("DELETE FROM log WHERE rev < ?1", [revision])?;
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE name = 'compacted'",
            [revision],
        )?;
    }
    Ok(())
}

/// Evaluates and applies one transaction inside an immediate (write-locked) SQLite transaction.
fn apply_txn(tx: &Connection, txn: &Txn, history: Revision) -> rusqlite::Result<TxnOutcome> {
    let mut failed_keys = Vec::new();
    for c in &txn.compares {
        let current = read_kv(tx, c.key())?;
        if !compare_holds(c, current.as_ref()) {
            failed_keys.push(Compare::key(c).to_owned());
        }
    }
    if !failed_keys.is_empty() {
        return Ok(TxnOutcome::Failed { failed_keys });
    }
    let current = meta(tx, "revision")?;
    let revision = current + 1;
    let mut seq = 0i64;
    let mut insert_kv = tx.prepare_cached(
        "INSERT INTO kv (key, value, create_rev, mod_rev, version) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value, mod_rev = excluded.mod_rev,
             version = excluded.version",
    )?;
    let mut delete_kv = tx.prepare_cached("DELETE FROM kv WHERE key = ?1")?;
    let mut insert_log = tx.prepare_cached(
        "INSERT INTO log (rev, seq, kind, key, value, create_rev, version,
             prev_value, prev_create_rev, prev_mod_rev, prev_version)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?;
    for op in &txn.ops {
        match op {
            Op::Put { key, value } => {
                let prev = read_kv(tx, key)?;
                let create_rev = prev.as_ref().map_or(revision, |p| p.create_revision);
                let version = prev.as_ref().map_or(1, |p| p.version + 1);
                insert_kv.execute(params![key, value, create_rev, revision, version])?;
                insert_log.execute(params![
                    revision,
                    seq,
                    KIND_PUT,
                    key,
                    value,
                    create_rev,
                    version,
                    prev.as_ref().map(|p| &p.value),
                    prev.as_ref().map(|p| p.create_revision),
                    prev.as_ref().map(|p| p.mod_revision),
                    prev.as_ref().map(|p| p.version),
                ])?;
            }
            Op::Delete { key } => {
                let Some(prev) = read_kv(tx, key)? else {
                    continue;
                };
                delete_kv.execute([key])?;
                insert_log.execute(params![
                    revision,
                    seq,
                    KIND_DELETE,
                    key,
                    Vec::<u8>::new(),
                    0,
                    0,
                    prev.value,
                    prev.create_revision,
                    prev.mod_revision,
                    prev.version,
                ])?;
            }
        }
        seq += 1;
    }
    if seq == 0 {
        return Ok(TxnOutcome::Committed { revision: current });
    }
    tx.execute(
        "UPDATE meta SET value = ?1 WHERE name = 'revision'",
        [revision],
    )?;
    // Automatic compaction, in steps so that it costs little per write.
    let step = (history / 10).max(1);
    if revision % step == 0 && revision > history {
        compact_in(tx, revision - history)?;
    }
    Ok(TxnOutcome::Committed { revision })
}

struct SqliteWatch {
    path: PathBuf,
    conn: Connection,
    prefix: String,
    after: Revision,
    pending: VecDeque<Event>,
}

impl SqliteWatch {
    /// Reads every event after `self.after` into `pending`.
    fn poll(&mut self) -> Result<()> {
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(|e| sql_error(&self.path, e))?;
        let result = (|| -> rusqlite::Result<Result<()>> {
            let revision = meta(&tx, "revision")?;
            if revision <= self.after {
                return Ok(Ok(()));
            }
            let compacted = meta(&tx, "compacted")?;
            if let Err(e) = check_compacted(self.after, compacted) {
                return Ok(Err(e));
            }
            let mut stmt = tx.prepare_cached(
                "SELECT rev, kind, key, value, create_rev, version,
                        prev_value, prev_create_rev, prev_mod_rev, prev_version
                 FROM log WHERE rev > ?1 ORDER BY rev, seq",
            )?;
            let mut rows = stmt.query([self.after])?;
            while let Some(r) = rows.next()? {
                let key: String = r.get(2)?;
                if !key.starts_with(&self.prefix) {
                    continue;
                }
                let rev: Revision = r.get(0)?;
                let kind = if r.get::<_, i64>(1)? == KIND_DELETE {
                    EventKind::Delete
                } else {
                    EventKind::Put
                };
                let prev_value: Option<Vec<u8>> = r.get(6)?;
                let prev = match prev_value {
                    Some(value) => Some(KeyValue {
                        key: key.clone(),
                        value,
                        create_revision: r.get(7)?,
                        mod_revision: r.get(8)?,
                        version: r.get(9)?,
                    }),
                    None => None,
                };
                self.pending.push_back(Event {
                    kind,
                    kv: KeyValue {
                        key,
                        value: r.get(3)?,
                        create_revision: r.get(4)?,
                        mod_revision: rev,
                        version: r.get(5)?,
                    },
                    prev,
                });
            }
            self.after = revision;
            Ok(Ok(()))
        })();
        tx.finish().map_err(|e| sql_error(&self.path, e))?;
        result.map_err(|e| sql_error(&self.path, e))?
    }
}

impl Watch for SqliteWatch {
    fn next(&mut self, timeout: Duration) -> Result<Option<Event>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Ok(Some(e));
            }
            let seen = *lock_writes();
            self.poll()?;
            if !self.pending.is_empty() {
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            // Sleep until a write in this process or the next poll, whichever is first.
            let wait = POLL_INTERVAL.min(deadline - now);
            let guard = lock_writes();
            if *guard == seen {
                drop(
                    WRITES
                        .1
                        .wait_timeout(guard, wait)
                        .unwrap_or_else(|p| p.into_inner()),
                );
            }
        }
    }
}
