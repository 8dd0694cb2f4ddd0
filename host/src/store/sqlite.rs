//! The embedded default store: one SQLite file in WAL mode.
//!
//! Every write runs on one writer thread. It takes whatever writes are
//! queued, runs each inside its own savepoint of one transaction and
//! commits them together: one fsync (`synchronous = FULL`) makes a whole
//! batch durable before any caller is answered. Concurrent callers therefore
//! share commits instead of queueing for the disk, and a write that fails
//! rolls back to its savepoint without touching its neighbours. Reads use a
//! small pool of their own connections, which WAL lets run beside the writer.
//! Every connection goes through the store's VFS ([`super::vfs`]), which
//! hands a commit's WAL frames to the file in a few large writes instead of
//! two per page.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use rulehost_sdk::wire::{Actor, ActorKind, Lock, SubjectKind, SubjectRef, Timestamp, Trigger};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};
use serde_json::{Value, json};

use super::{
    Anonymization, Anonymized, AuditRecord, Backup, Change, Committed, Event, Fires,
    LOCK_EXPIRY_ACTION, LiftMode, Lifted, LockImport, LockRecord, NewAudit, NewLock, NewToken,
    OperatorRecord, PolicyVersion, Resolution, ScheduleRecord, ScheduleState, Scheduled, Store,
    StoredPolicy, SubjectRecords, SubjectState, TokenRecord, WEBHOOK_CONSUMER, Webhook, Write,
};
use super::{schema, vfs};
use crate::PolicyId;
use crate::audit::{self, ANONYMIZED, GENESIS, REDACTED_PAYLOAD};
use crate::error::{Error, Result};

/// At most this many queued writes share one commit.
const MAX_BATCH: usize = 512;

/// The page size of a new store, in bytes. A write dirties a handful of
/// index pages at random places (a lock, its audit record and its event,
/// each indexed by subject), and every dirty page goes to the WAL whole
/// before the commit's fsync. With 2 KiB pages a lock or unlock writes about
/// 40% fewer WAL bytes than with SQLite's 4 KiB default, so a batch's fsync
/// has less to flush; expiring and verifying, which read and write in
/// order, stay about as fast (see `benches/store.rs`).
const PAGE_SIZE: i64 = 2048;

/// The writer checkpoints the WAL into the database file once it holds
/// this many pages (16 MiB at 2 KiB pages) instead of SQLite's default
/// 1,000. A checkpoint writes every page changed since the last one to its
/// place in the file and syncs the file; the rarer it runs, the more of a
/// lock's hot index pages one copy covers. With 8 callers, lock + unlock
/// ran about 5% faster in side-by-side runs (`benches/store.rs`); the cost
/// is a larger WAL file and a longer, rarer pause of the writer.
const WAL_CHECKPOINT_PAGES: i64 = 8000;

/// Idle read connections kept for reuse.
const MAX_IDLE_READERS: usize = 8;

/// How long a connection waits for a lock held by another process.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

impl From<rusqlite::Error> for Error {
    fn from(error: rusqlite::Error) -> Self {
        match error.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => Error::StoreFull(error.to_string()),
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                Error::StoreBusy(error.to_string())
            }
            _ => Error::Store(error.to_string()),
        }
    }
}

/// The same store fault again, for each caller of a failed batch.
fn refault(error: &Error) -> Error {
    match error {
        Error::StoreFull(why) => Error::StoreFull(why.clone()),
        Error::StoreBusy(why) => Error::StoreBusy(why.clone()),
        Error::Store(why) => Error::Store(why.clone()),
        other => Error::Store(other.to_string()),
    }
}

/// Runs after the batch's commit, with the commit's error if it failed.
type Finish = Box<dyn FnOnce(Option<&Error>) + Send>;
/// A write: runs inside the batch's transaction (or learns why there is
/// none) and returns how to answer its caller once the batch is committed.
type Job = Box<dyn FnOnce(std::result::Result<&Connection, &Error>) -> Finish + Send>;

/// How a [`SqliteStore`] is opened.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// How long a write waits for a lock another process holds.
    pub busy_timeout: Duration,
    /// The most pages the file may grow to (SQLite's `max_page_count`);
    /// `None` leaves SQLite's own limit.
    pub max_page_count: Option<u64>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            busy_timeout: BUSY_TIMEOUT,
            max_page_count: None,
        }
    }
}

/// The SQLite store. See the module documentation.
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    jobs: Option<Sender<Job>>,
    writer: Option<JoinHandle<()>>,
    readers: Mutex<Vec<Connection>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `path` and applies pending
    /// schema migrations.
    ///
    /// # Errors
    ///
    /// [`Error::OpenStore`] naming the file, when it cannot be opened, is
    /// not a rulehost store, or comes from a newer rulehost.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        SqliteStore::open_with(path, &StoreOptions::default())
    }

    /// [`SqliteStore::open`] with options.
    ///
    /// # Errors
    ///
    /// As [`SqliteStore::open`].
    pub fn open_with(path: impl AsRef<Path>, options: &StoreOptions) -> Result<Self> {
        configure_sqlite();
        let path = path.as_ref().to_path_buf();
        let refuse = |reason: String| Error::OpenStore {
            path: path.clone(),
            reason,
        };
        vfs::register().map_err(refuse)?;
        let mut conn = connect(&path).map_err(|e| refuse(e.to_string()))?;
        // Only a new, empty file takes it; an existing store keeps its own.
        conn.pragma_update(None, "page_size", PAGE_SIZE)
            .map_err(|e| refuse(e.to_string()))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| refuse(e.to_string()))?;
        // Only the writer commits, so only its connection checkpoints.
        conn.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES)
            .map_err(|e| refuse(e.to_string()))?;
        schema::migrate(&mut conn).map_err(refuse)?;
        conn.busy_timeout(options.busy_timeout)
            .map_err(|e| refuse(e.to_string()))?;
        if let Some(pages) = options.max_page_count {
            conn.pragma_update(None, "max_page_count", pages as i64)
                .map_err(|e| refuse(e.to_string()))?;
        }
        let (jobs, queue) = mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("rulehost-store-writer".into())
            .spawn(move || run_writer(&conn, &queue))
            .map_err(|e| refuse(format!("cannot start the writer thread: {e}")))?;
        Ok(SqliteStore {
            path,
            jobs: Some(jobs),
            writer: Some(writer),
            readers: Mutex::new(Vec::new()),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `write` in the next batch, all or nothing, and waits until that
    /// batch is durable.
    fn write<T: Send + 'static>(
        &self,
        write: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.submit(move |conn| in_savepoint(conn, "job", write))
    }

    /// Runs `job` in the next batch and waits until that batch is durable;
    /// `job` keeps its own writes all or nothing.
    fn submit<T: Send + 'static>(
        &self,
        job: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (answer, answered) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |conn| {
            let result = match conn {
                Ok(conn) => job(conn),
                Err(fault) => Err(refault(fault)),
            };
            Box::new(move |commit_failed| {
                // A write's own error says most; a write that went through
                // fails with its batch.
                let result = match (result, commit_failed) {
                    (Err(error), _) => Err(error),
                    (Ok(_), Some(fault)) => Err(refault(fault)),
                    (ok, None) => ok,
                };
                // The caller may have gone; nothing is left to tell then.
                let _ = answer.send(result);
            })
        });
        let stopped = || Error::Store("the writer thread has stopped".to_owned());
        self.jobs
            .as_ref()
            .ok_or_else(stopped)?
            .send(job)
            .map_err(|_| stopped())?;
        answered.recv().map_err(|_| stopped())?
    }

    /// Runs `read` on a pooled read connection.
    fn read<T>(&self, read: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let idle = self
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let conn = match idle {
            Some(conn) => conn,
            None => connect(&self.path)?,
        };
        let result = read(&conn);
        // A connection left inside a transaction (a snapshot whose end
        // failed) would keep reading that old state: it is closed instead.
        let mut readers = self.readers.lock().unwrap_or_else(PoisonError::into_inner);
        if readers.len() < MAX_IDLE_READERS && conn.is_autocommit() {
            readers.push(conn);
        }
        result
    }

    /// Runs `read` in one read transaction: every query in it sees the
    /// same committed state.
    fn snapshot<T>(&self, read: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        self.read(|conn| {
            run(conn, "BEGIN")?;
            let result = read(conn);
            run(conn, if result.is_ok() { "COMMIT" } else { "ROLLBACK" })?;
            result
        })
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(writer) = self.writer.take() {
            // A panicked writer has already failed its callers.
            let _ = writer.join();
        }
    }
}

/// Turns off SQLite's memory statistics, whose global mutex every
/// allocation takes: the writer and the readers would contend for it. Only
/// possible before SQLite initializes; if something in the process already
/// used SQLite, the setting stays as it was, which is only slower.
fn configure_sqlite() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: `sqlite3_config` is called with an option taking one int,
        // once, before this crate opens a connection; SQLite refuses it
        // harmlessly (SQLITE_MISUSE) when already initialized.
        unsafe {
            rusqlite::ffi::sqlite3_config(rusqlite::ffi::SQLITE_CONFIG_MEMSTATUS, 0);
        }
    });
}

/// Opens a connection through the store's VFS ([`vfs`]), which must be
/// registered; `synchronous = FULL` is what that VFS relies on.
fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags_and_vfs(path, OpenFlags::default(), vfs::NAME)?;
    // Room for every statement the store prepares, so none is parsed twice.
    conn.set_prepared_statement_cache_capacity(64);
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    // Savepoints keep their undo pages here: memory, not a temporary file.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(conn)
}

/// Checks a copy written by `VACUUM INTO` and reads what it holds.
fn check_backup(path: &Path) -> std::result::Result<Backup, String> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| format!("cannot open the copy: {e}"))?;
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .map_err(|e| format!("cannot check the copy: {e}"))?;
    if check != "ok" {
        return Err(format!("the copy fails SQLite's integrity check: {check}"));
    }
    let (audit_records, last_audit_seq, last_audit_hash) = conn
        .query_row(
            "SELECT (SELECT count(*) FROM audit), seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |row| {
                let count: i64 = row.get(0)?;
                let seq: i64 = row.get(1)?;
                Ok((count as u64, seq as u64, Some(row.get(2)?)))
            },
        )
        .optional()
        .map_err(|e| format!("cannot read the copy's audit trail: {e}"))?
        .unwrap_or((0, 0, None));
    drop(conn);
    let bytes = std::fs::metadata(path)
        .map_err(|e| format!("cannot read the copy: {e}"))?
        .len();
    Ok(Backup {
        path: path.to_path_buf(),
        bytes,
        audit_records,
        last_audit_seq,
        last_audit_hash,
    })
}

/// Makes the checked copy at `partial` durable and gives it its name,
/// refusing to replace a file that appeared at `to` meanwhile.
fn place(partial: &Path, to: &Path) -> std::result::Result<(), String> {
    std::fs::File::open(partial)
        .and_then(|file| file.sync_all())
        .map_err(|e| format!("cannot sync the copy: {e}"))?;
    std::fs::hard_link(partial, to).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => "it exists already; nothing was written".to_owned(),
        _ => format!("cannot name the copy: {e}"),
    })?;
    let _ = std::fs::remove_file(partial);
    if let Some(dir) = to.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| format!("cannot sync `{}`: {e}", dir.display()))?;
    }
    Ok(())
}

fn run_writer(conn: &Connection, queue: &Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if let Err(error) = run(conn, "BEGIN IMMEDIATE") {
            let fault = Error::from(error);
            for job in batch {
                job(Err(&fault))(None);
            }
            continue;
        }
        // Another process may have appended since the last batch; within
        // this one the write lock is ours.
        AUDIT_TAIL.set(None);
        let mut finishes: Vec<Finish> = Vec::with_capacity(batch.len());
        let mut aborted: Option<Error> = None;
        for job in batch {
            match &aborted {
                Some(fault) => finishes.push(job(Err(fault))),
                None => {
                    finishes.push(job(Ok(conn)));
                    // A full disk or an I/O error can make SQLite roll the
                    // whole transaction back; the writes after it must not
                    // run outside the batch, nor the batch be reported
                    // committed.
                    if conn.is_autocommit() {
                        aborted = Some(Error::Store(
                            "the store rolled back this batch of writes after a fault in one of them; nothing of it was stored"
                                .to_owned(),
                        ));
                    }
                }
            }
        }
        let commit_failed = match aborted {
            Some(fault) => Some(fault),
            None => run(conn, "COMMIT").err().map(|error| {
                // Leaves the connection usable for the next batch; the
                // commit's error is what the callers need to hear.
                let _ = run(conn, "ROLLBACK");
                Error::from(error)
            }),
        };
        for finish in finishes {
            finish(commit_failed.as_ref());
        }
    }
}

thread_local! {
    /// The last audit record appended in the writer's current batch
    /// (sequence number and hash), so appending does not look it up again;
    /// kept in step with savepoints, `None` at the start of each batch.
    static AUDIT_TAIL: std::cell::RefCell<Option<(u64, String)>> =
        const { std::cell::RefCell::new(None) };
}

/// Every row `sql` selects with `params`, decoded.
fn rows<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    decode: fn(&Row<'_>) -> Result<T>,
) -> Result<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(params)?;
    let mut decoded = Vec::new();
    while let Some(row) = rows.next()? {
        decoded.push(decode(row)?);
    }
    Ok(decoded)
}

/// Runs one statement without parameters, prepared once per connection.
fn run(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

/// Runs `work` inside savepoint `name`: its writes stay only if it succeeds.
fn in_savepoint<T>(
    conn: &Connection,
    name: &str,
    work: impl FnOnce(&Connection) -> Result<T>,
) -> Result<T> {
    run(conn, &format!("SAVEPOINT {name}"))?;
    let tail = AUDIT_TAIL.with_borrow(Clone::clone);
    let result = work(conn);
    if result.is_err() {
        AUDIT_TAIL.set(tail);
        if conn.is_autocommit() {
            // SQLite rolled the whole transaction back (a full disk, an I/O
            // error): the savepoint is gone with it, the error is the news.
            return result;
        }
        run(conn, &format!("ROLLBACK TO {name}"))?;
    }
    run(conn, &format!("RELEASE {name}"))?;
    result
}

impl Store for SqliteStore {
    fn add_policy(
        &self,
        operator: &str,
        policy: StoredPolicy,
        audit: NewAudit,
        activation: Option<NewAudit>,
    ) -> Result<u64> {
        let operator = operator.to_owned();
        self.write(move |conn| {
            let exists = conn
                .query_row(
                    "SELECT 1 FROM policy_versions WHERE operator = ?1 AND name = ?2 AND version = ?3",
                    params![operator, policy.id.name, policy.id.version],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            if exists {
                return Err(Error::PolicyVersionExists {
                    operator,
                    policy: policy.id.to_string(),
                });
            }
            conn.execute(
                "INSERT OR IGNORE INTO operators (id, created_at) VALUES (?1, ?2)",
                params![operator, policy.installed_at.to_string()],
            )?;
            conn.execute(
                "INSERT INTO policy_versions (operator, name, version, sha256, wasm, settings,
                     installed_at, installed_by_kind, installed_by_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    operator,
                    policy.id.name,
                    policy.id.version,
                    policy.sha256,
                    policy.wasm,
                    policy.settings.to_string(),
                    policy.installed_at.to_string(),
                    policy.installed_by.kind.name(),
                    policy.installed_by.id,
                ],
            )?;
            let seq = append_audit(conn, &operator, policy.installed_at, &audit)?;
            match activation {
                Some(audit) => activate(conn, &operator, &policy.id, policy.installed_at, &audit),
                None => Ok(seq),
            }
        })
    }

    fn activate_policy(
        &self,
        operator: &str,
        id: &PolicyId,
        at: Timestamp,
        audit: NewAudit,
    ) -> Result<u64> {
        let operator = operator.to_owned();
        let id = id.clone();
        self.write(move |conn| {
            let installed = conn
                .query_row(
                    "SELECT 1 FROM policy_versions WHERE operator = ?1 AND name = ?2 AND version = ?3",
                    params![operator, id.name, id.version],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            if !installed {
                return Err(Error::UnknownPolicyVersion {
                    operator,
                    policy: id.to_string(),
                });
            }
            activate(conn, &operator, &id, at, &audit)
        })
    }

    fn policy(&self, operator: &str, id: &PolicyId) -> Result<Option<StoredPolicy>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {POLICY_COLUMNS} FROM policy_versions
                 WHERE operator = ?1 AND name = ?2 AND version = ?3"
            ))?;
            let mut rows = stmt.query(params![operator, id.name, id.version])?;
            rows.next()?.map(stored_policy).transpose()
        })
    }

    fn policy_versions(&self, operator: &str) -> Result<Vec<PolicyVersion>> {
        let active = self.activations(operator)?.into_iter().next();
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT name, version, sha256, installed_at, installed_by_kind, installed_by_id
                 FROM policy_versions WHERE operator = ?1 ORDER BY installed_at, name, version",
            )?;
            let mut rows = stmt.query(params![operator])?;
            let mut versions = Vec::new();
            while let Some(row) = rows.next()? {
                let id = PolicyId::new(row.get::<_, String>(0)?, row.get(1)?);
                versions.push(PolicyVersion {
                    active: active.as_ref() == Some(&id),
                    id,
                    sha256: row.get(2)?,
                    installed_at: parse(&row.get::<_, String>(3)?, "time")?,
                    installed_by: actor(row, 4)?,
                });
            }
            Ok(versions)
        })
    }

    fn activations(&self, operator: &str) -> Result<Vec<PolicyId>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT name, version FROM activations WHERE operator = ?1 ORDER BY seq DESC",
            )?;
            let ids = stmt
                .query_map(params![operator], |row| {
                    Ok(PolicyId::new(row.get::<_, String>(0)?, row.get(1)?))
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(ids)
        })
    }

    fn active_policies(&self) -> Result<Vec<(String, StoredPolicy)>> {
        self.read(|conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT operator, {POLICY_COLUMNS} FROM policy_versions p
                 WHERE (name, version) = (SELECT name, version FROM activations a
                     WHERE a.operator = p.operator ORDER BY seq DESC LIMIT 1)
                 ORDER BY operator"
            ))?;
            let mut rows = stmt.query([])?;
            let mut active = Vec::new();
            while let Some(row) = rows.next()? {
                let operator: String = row.get(0)?;
                active.push((operator, stored_policy_at(row, 1)?));
            }
            Ok(active)
        })
    }

    fn active_versions(&self) -> Result<BTreeMap<String, PolicyId>> {
        self.read(|conn| {
            // SQLite takes the bare columns from the row with the largest
            // `seq` of each operator.
            let mut stmt = conn.prepare_cached(
                "SELECT operator, name, version, MAX(seq) FROM activations GROUP BY operator",
            )?;
            let active = stmt
                .query_map([], |row| {
                    Ok((
                        row.get(0)?,
                        PolicyId::new(row.get::<_, String>(1)?, row.get(2)?),
                    ))
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(active)
        })
    }

    fn walk_subjects(
        &self,
        operator: &str,
        subjects: Vec<SubjectRef>,
        now: Timestamp,
        next: &mut dyn FnMut(Vec<(SubjectRef, SubjectState)>) -> Vec<SubjectRef>,
    ) -> Result<()> {
        // A subject's revision, switches, locks and children are four
        // queries, and its parent's more; they must all belong together
        // even while writes commit.
        self.snapshot(|conn| {
            let mut level = subjects;
            while !level.is_empty() {
                let states = level
                    .into_iter()
                    .map(|subject| {
                        let state = subject_state(conn, operator, &subject, now)?;
                        Ok((subject, state))
                    })
                    .collect::<Result<_>>()?;
                level = next(states);
            }
            Ok(())
        })
    }

    fn commit(&self, changes: Vec<Change>) -> Vec<Result<Committed>> {
        let count = changes.len();
        // Each change is its own unit; the job as a whole fails only when
        // a fault took the whole transaction with it.
        let results = self.submit(move |conn| {
            let mut results = Vec::with_capacity(changes.len());
            for change in &changes {
                let result = in_savepoint(conn, "change", |conn| apply_change(conn, change));
                if conn.is_autocommit() {
                    return Err(result.err().unwrap_or_else(|| {
                        Error::Store("the store's transaction ended unexpectedly".to_owned())
                    }));
                }
                results.push(result);
            }
            Ok(results)
        });
        match results {
            Ok(results) => results,
            Err(error) => (0..count).map(|_| Err(refault(&error))).collect(),
        }
    }

    fn due(
        &self,
        now: Timestamp,
        after: Option<&Scheduled>,
        limit: usize,
    ) -> Result<Vec<Scheduled>> {
        let (after_ns, after_id) = after.map_or((i64::MIN, i64::MIN), |s| (nanos(s.at), s.id));
        self.read(|conn| {
            rows(
                conn,
                &format!(
                    "SELECT {SCHEDULE_COLUMNS} FROM schedules
                     WHERE state = 'pending' AND held = 0 AND at_ns <= ?1
                       AND (at_ns, id) > (?2, ?3)
                     ORDER BY at_ns, id LIMIT ?4"
                ),
                params![nanos(now), after_ns, after_id, limit as i64],
                |row| Ok(scheduled(row)?.scheduled),
            )
        })
    }

    fn next_due(&self) -> Result<Option<Timestamp>> {
        self.read(|conn| {
            let at: Option<String> = conn
                .query_row(
                    "SELECT at FROM schedules WHERE state = 'pending' AND held = 0
                     ORDER BY at_ns, id LIMIT 1",
                    [],
                    |row| row.get(0),
                )
                .optional()?;
            at.map(|at| parse(&at, "time")).transpose()
        })
    }

    fn schedules(
        &self,
        operator: &str,
        state: Option<ScheduleState>,
        after: i64,
        limit: usize,
    ) -> Result<Vec<ScheduleRecord>> {
        let which = match state {
            None => "",
            Some(ScheduleState::Pending) => "AND state = 'pending' AND held = 0",
            Some(ScheduleState::Held) => "AND state = 'pending' AND held = 1",
            Some(ScheduleState::Fired) => "AND state = 'fired'",
            Some(ScheduleState::Cancelled) => "AND state = 'cancelled'",
        };
        self.read(|conn| {
            rows(
                conn,
                &format!(
                    "SELECT {SCHEDULE_COLUMNS} FROM schedules
                     WHERE operator = ?1 AND id > ?2 {which} ORDER BY id LIMIT ?3"
                ),
                params![operator, after, limit as i64],
                scheduled,
            )
        })
    }

    fn held_schedules(&self) -> Result<BTreeMap<String, u64>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT operator, COUNT(*) FROM schedules
                 WHERE state = 'pending' AND held = 1 GROUP BY operator",
            )?;
            let counts = stmt
                .query_map([], |row| Ok((row.get(0)?, row.get::<_, i64>(1)? as u64)))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(counts)
        })
    }

    fn audit_record(&self, seq: u64) -> Result<Option<AuditRecord>> {
        self.read(|conn| {
            let mut stmt =
                conn.prepare_cached(&format!("SELECT {AUDIT_COLUMNS} FROM audit WHERE seq = ?1"))?;
            let mut rows = stmt.query(params![seq as i64])?;
            rows.next()?.map(audit_record).transpose()
        })
    }

    fn scan_audit(
        &self,
        from: u64,
        visit: &mut dyn FnMut(AuditRecord) -> ControlFlow<()>,
    ) -> Result<()> {
        self.read(|conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {AUDIT_COLUMNS} FROM audit WHERE seq >= ?1 ORDER BY seq"
            ))?;
            let mut rows = stmt.query(params![from as i64])?;
            while let Some(row) = rows.next()? {
                if visit(audit_record(row)?).is_break() {
                    break;
                }
            }
            Ok(())
        })
    }

    fn events(&self, operator: &str, consumer: &str, limit: usize) -> Result<Vec<Event>> {
        self.read(|conn| {
            rows(
                conn,
                &format!(
                    "SELECT {EVENT_COLUMNS} FROM events
                     WHERE operator = ?1 AND seq > coalesce(
                         (SELECT seq FROM cursors WHERE operator = ?1 AND consumer = ?2), 0)
                     ORDER BY seq LIMIT ?3"
                ),
                params![operator, consumer, limit as i64],
                event,
            )
        })
    }

    fn ack(&self, operator: &str, consumer: &str, seq: u64) -> Result<()> {
        let (operator, consumer) = (operator.to_owned(), consumer.to_owned());
        self.write(move |conn| {
            let known = conn
                .query_row(
                    "SELECT 1 FROM events WHERE operator = ?1 AND seq = ?2",
                    params![operator, seq as i64],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            if !known {
                return Err(Error::UnknownEvent { operator, seq });
            }
            conn.execute(
                "INSERT INTO cursors (operator, consumer, seq) VALUES (?1, ?2, ?3)
                 ON CONFLICT (operator, consumer) DO UPDATE SET seq = max(seq, excluded.seq)",
                params![operator, consumer, seq as i64],
            )?;
            Ok(())
        })
    }

    fn import_locks(&self, import: LockImport) -> Result<Committed> {
        self.write(move |conn| {
            let mut committed = Committed::default();
            for lock in &import.locks {
                touch(conn, &import.operator, &lock.subject)?;
                committed
                    .locks_created
                    .push(insert_lock(conn, &import.operator, lock)?);
            }
            committed.audit_seq = append_audit(conn, &import.operator, import.at, &import.audit)?;
            Ok(committed)
        })
    }

    fn subject_records(
        &self,
        operator: &str,
        subject: &SubjectRef,
        now: Timestamp,
    ) -> Result<SubjectRecords> {
        // An event or a lift is never exported without its audit record.
        self.snapshot(|conn| {
            let key = params![operator, subject.kind.name(), subject.id];
            let about = "WHERE operator = ?1 AND subject_kind = ?2 AND subject_id = ?3";
            Ok(SubjectRecords {
                state: subject_state(conn, operator, subject, now)?,
                locks: rows(
                    conn,
                    &format!("SELECT {LOCK_COLUMNS} FROM locks {about} ORDER BY id"),
                    key,
                    lock_record,
                )?,
                schedules: rows(
                    conn,
                    &format!("SELECT {SCHEDULE_COLUMNS} FROM schedules {about} ORDER BY id"),
                    key,
                    scheduled,
                )?,
                audit: rows(
                    conn,
                    &format!("SELECT {AUDIT_COLUMNS} FROM audit {about} ORDER BY seq"),
                    key,
                    audit_record,
                )?,
                events: rows(
                    conn,
                    &format!("SELECT {EVENT_COLUMNS} FROM events {about} ORDER BY seq"),
                    key,
                    event,
                )?,
            })
        })
    }

    fn anonymize(&self, anonymization: Anonymization) -> Result<Anonymized> {
        self.write(move |conn| anonymize(conn, &anonymization))
    }

    fn add_operator(&self, operator: &str, at: Timestamp) -> Result<()> {
        let operator = operator.to_owned();
        self.write(move |conn| {
            let added = conn.execute(
                "INSERT OR IGNORE INTO operators (id, created_at) VALUES (?1, ?2)",
                params![operator, at.to_string()],
            )?;
            if added == 0 {
                return Err(Error::OperatorExists(operator));
            }
            Ok(())
        })
    }

    fn operators(&self) -> Result<Vec<OperatorRecord>> {
        self.read(|conn| {
            rows(
                conn,
                "SELECT id, created_at FROM operators ORDER BY id",
                [],
                |row| {
                    Ok(OperatorRecord {
                        id: row.get(0)?,
                        created_at: parse(&row.get::<_, String>(1)?, "time")?,
                    })
                },
            )
        })
    }

    fn add_token(&self, token: NewToken) -> Result<u64> {
        self.write(move |conn| {
            if let Some(operator) = &token.operator {
                let known = conn
                    .query_row(
                        "SELECT 1 FROM operators WHERE id = ?1",
                        params![operator],
                        |_| Ok(()),
                    )
                    .optional()?
                    .is_some();
                if !known {
                    return Err(Error::UnknownOperator(operator.clone()));
                }
            }
            conn.execute(
                "INSERT INTO tokens (sha256, operator, name, can_install, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    token.sha256,
                    token.operator,
                    token.name,
                    token.can_install,
                    token.created_at.to_string(),
                    token.expires_at.map(|at| at.to_string()),
                ],
            )?;
            Ok(conn.last_insert_rowid() as u64)
        })
    }

    fn token(&self, sha256: &str) -> Result<Option<TokenRecord>> {
        self.read(|conn| {
            Ok(rows(
                conn,
                &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE sha256 = ?1"),
                params![sha256],
                token_record,
            )?
            .pop())
        })
    }

    fn tokens(&self, operator: Option<&str>) -> Result<Vec<TokenRecord>> {
        self.read(|conn| {
            rows(
                conn,
                &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE operator IS ?1 ORDER BY id"),
                params![operator],
                token_record,
            )
        })
    }

    fn revoke_token(&self, operator: Option<&str>, id: u64, at: Timestamp) -> Result<()> {
        let operator = operator.map(str::to_owned);
        self.write(move |conn| {
            let revoked = conn.execute(
                "UPDATE tokens SET revoked_at = coalesce(revoked_at, ?3)
                 WHERE id = ?1 AND operator IS ?2",
                params![id as i64, operator, at.to_string()],
            )?;
            if revoked == 0 {
                return Err(Error::UnknownToken(id));
            }
            Ok(())
        })
    }

    fn add_trusted_key(
        &self,
        operator: &str,
        key: &str,
        at: Timestamp,
        audit: NewAudit,
    ) -> Result<()> {
        let (operator, key) = (operator.to_owned(), key.to_owned());
        self.write(move |conn| {
            conn.execute(
                "INSERT OR IGNORE INTO operators (id, created_at) VALUES (?1, ?2)",
                params![operator, at.to_string()],
            )?;
            conn.execute(
                "INSERT OR IGNORE INTO trusted_keys (operator, public_key, added_at)
                 VALUES (?1, ?2, ?3)",
                params![operator, key, at.to_string()],
            )?;
            append_audit(conn, &operator, at, &audit).map(drop)
        })
    }

    fn backup(&self, to: &Path) -> Result<Backup> {
        let refuse = |reason: String| Error::Backup {
            path: to.to_path_buf(),
            reason,
        };
        if to.symlink_metadata().is_ok() {
            return Err(refuse("it exists already; nothing was written".to_owned()));
        }
        let mut name = to
            .file_name()
            .ok_or_else(|| refuse("it names no file".to_owned()))?
            .to_owned();
        name.push(format!(".partial-{}", std::process::id()));
        let partial = to.with_file_name(name);
        let text = partial
            .to_str()
            .ok_or_else(|| refuse("the path is not UTF-8".to_owned()))?
            .to_owned();
        // A partial file of an earlier attempt by a process of the same id.
        let _ = std::fs::remove_file(&partial);
        let copied = self
            .read(|conn| Ok(conn.execute("VACUUM INTO ?1", [&text])?))
            .map_err(|error| match error {
                Error::StoreFull(why) => Error::StoreFull(why),
                other => refuse(other.to_string()),
            })
            .and_then(|_| check_backup(&partial).map_err(refuse))
            .and_then(|backup| {
                place(&partial, to).map_err(refuse)?;
                Ok(Backup {
                    path: to.to_path_buf(),
                    ..backup
                })
            });
        if copied.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        copied
    }

    fn trusted_keys(&self, operator: &str) -> Result<Vec<String>> {
        self.read(|conn| {
            rows(
                conn,
                "SELECT public_key FROM trusted_keys WHERE operator = ?1 ORDER BY added_at, public_key",
                params![operator],
                |row| Ok(row.get(0)?),
            )
        })
    }

    fn set_webhook(
        &self,
        operator: &str,
        webhook: Option<Webhook>,
        at: Timestamp,
        audit: NewAudit,
    ) -> Result<()> {
        let operator = operator.to_owned();
        self.write(move |conn| {
            let replaced =
                conn.execute("DELETE FROM webhooks WHERE operator = ?1", params![operator])? > 0;
            if let Some(hook) = &webhook {
                // A new webhook delivers what happens from now on; one that
                // replaces another goes on where it stopped.
                if !replaced {
                    conn.execute(
                        "INSERT INTO cursors (operator, consumer, seq)
                         SELECT ?1, ?2, COALESCE(MAX(seq), 0) FROM events WHERE operator = ?1
                         ON CONFLICT (operator, consumer) DO UPDATE SET seq = max(seq, excluded.seq)",
                        params![operator, WEBHOOK_CONSUMER],
                    )?;
                }
                conn.execute(
                    "INSERT INTO webhooks (operator, url, secret, created_at)
                     VALUES (?1, ?2, ?3, ?4)",
                    params![operator, hook.url, hook.secret, hook.created_at.to_string()],
                )?;
            }
            append_audit(conn, &operator, at, &audit).map(drop)
        })
    }

    fn webhooks(&self) -> Result<Vec<Webhook>> {
        self.read(|conn| {
            rows(
                conn,
                "SELECT operator, url, secret, created_at FROM webhooks ORDER BY operator",
                [],
                |row| {
                    Ok(Webhook {
                        operator: row.get(0)?,
                        url: row.get(1)?,
                        secret: row.get(2)?,
                        created_at: parse(&row.get::<_, String>(3)?, "time")?,
                    })
                },
            )
        })
    }

    fn audit_records(&self, operator: &str, after: u64, limit: usize) -> Result<Vec<AuditRecord>> {
        self.read(|conn| {
            rows(
                conn,
                &format!(
                    "SELECT {AUDIT_COLUMNS} FROM audit WHERE operator = ?1 AND seq > ?2
                     ORDER BY seq LIMIT ?3"
                ),
                params![operator, after as i64, limit as i64],
                audit_record,
            )
        })
    }
}

const POLICY_COLUMNS: &str =
    "name, version, sha256, wasm, settings, installed_at, installed_by_kind, installed_by_id";
const LOCK_COLUMNS: &str = "id, subject_kind, subject_id, kind, actor_kind, actor_id, reason, \
     message, since, until, legacy_id, lifted_at, lifted_by_kind, lifted_by_id, lift_reason, lift_mode";
const SCHEDULE_COLUMNS: &str = "id, operator, subject_kind, subject_id, at, action, trigger, params, state, held, attempts, \
     last_error";
const AUDIT_COLUMNS: &str = "seq, at, operator, kind, subject_kind, subject_id, actor_kind, \
     actor_id, policy, payload, payload_sha256, redacted, prev_hash, hash";
const TOKEN_COLUMNS: &str = "id, operator, name, can_install, created_at, expires_at, revoked_at";
const EVENT_COLUMNS: &str = "seq, operator, kind, subject_kind, subject_id, data, at, audit_seq";

fn apply_change(conn: &Connection, change: &Change) -> Result<Committed> {
    let operator = change.operator.as_str();
    for (subject, expected) in &change.expect {
        if revision(conn, operator, subject)? != *expected {
            return Err(Error::Conflict(subject.to_string()));
        }
    }
    if let Some(fires) = &change.fires {
        fire(conn, operator, change, fires)?;
    }
    let mut committed = Committed::default();
    for (index, write) in change.writes.iter().enumerate() {
        apply_write(conn, operator, change.at, write, &mut committed).map_err(
            |error| match error {
                Refused(reason) => Error::Write { index, reason },
                Failed(error) => error,
            },
        )?;
    }
    committed.audit_seq = append_audit(conn, operator, change.at, &change.audit)?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO events (operator, kind, subject_kind, subject_id, data, at, audit_seq)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for event in &change.events {
        insert.execute(params![
            operator,
            event.kind,
            event.subject.kind.name(),
            event.subject.id,
            event.data.to_string(),
            change.at.to_string(),
            committed.audit_seq as i64,
        ])?;
        committed.events.push(conn.last_insert_rowid() as u64);
    }
    Ok(committed)
}

/// Why a write did not apply: the write itself is wrong, or the store failed.
enum WriteError {
    Refused(String),
    Failed(Error),
}
use WriteError::{Failed, Refused};

impl<E: Into<Error>> From<E> for WriteError {
    fn from(error: E) -> Self {
        Failed(error.into())
    }
}

fn apply_write(
    conn: &Connection,
    operator: &str,
    at: Timestamp,
    write: &Write,
    committed: &mut Committed,
) -> std::result::Result<(), WriteError> {
    match write {
        Write::SetLock(lock) => {
            touch(conn, operator, &lock.subject)?;
            committed
                .locks_created
                .push(insert_lock(conn, operator, lock)?);
        }
        Write::LiftLocks {
            subject,
            kind,
            lock_id,
            lifted,
        } => {
            touch(conn, operator, subject)?;
            if let Some(id) = lock_id {
                return lift_lock(
                    conn,
                    operator,
                    subject,
                    id,
                    kind.as_deref(),
                    lifted,
                    committed,
                );
            }
            let open = open_locks(conn, operator, subject)?;
            let lifting: Vec<&Lock> = open
                .iter()
                .filter(|lock| kind.as_ref().is_none_or(|kind| *kind == lock.kind))
                .filter(|lock| lock.is_active_at(at))
                .collect();
            if lifting.is_empty() {
                let which = match kind {
                    Some(kind) => format!("no active lock of kind `{kind}`"),
                    None => "no active lock".to_owned(),
                };
                return Err(Refused(format!("subject `{subject}` has {which}")));
            }
            let mut lift = conn.prepare_cached(
                "UPDATE locks SET lifted_at = ?2, lifted_by_kind = ?3, lifted_by_id = ?4,
                     lift_reason = ?5, lift_mode = ?6 WHERE id = ?1",
            )?;
            let mut cancel = conn.prepare_cached(
                "UPDATE schedules SET state = 'cancelled', done_at = ?2
                 WHERE lock_id = ?1 AND state = 'pending'",
            )?;
            for lock in lifting {
                let id = lock.id.as_deref().unwrap_or_default();
                lift.execute(params![
                    id,
                    lifted.at.to_string(),
                    lifted.actor.kind.name(),
                    lifted.actor.id,
                    lifted.reason,
                    lifted.mode.name(),
                ])?;
                cancel.execute(params![id, at.to_string()])?;
                committed.locks_lifted.push(id.to_owned());
            }
        }
        Write::Schedule {
            subject,
            at: when,
            action,
            params,
        } => {
            touch(conn, operator, subject)?;
            insert_schedule(
                conn,
                operator,
                subject,
                *when,
                action,
                Trigger::Scheduled,
                params,
                None,
            )?;
        }
        Write::CancelSchedule { subject, action } => {
            touch(conn, operator, subject)?;
            let cancelled = conn
                .prepare_cached(
                    "UPDATE schedules SET state = 'cancelled', done_at = ?5
                     WHERE operator = ?1 AND subject_kind = ?2 AND subject_id = ?3
                       AND action = ?4 AND state = 'pending'",
                )?
                .execute(params![
                    operator,
                    subject.kind.name(),
                    subject.id,
                    action,
                    at.to_string()
                ])?;
            if cancelled == 0 {
                return Err(Refused(format!(
                    "subject `{subject}` has no pending `{action}`"
                )));
            }
        }
        Write::ResolveHeld {
            schedule,
            resolution,
        } => {
            const HELD: &str = "id = ?1 AND operator = ?2 AND state = 'pending' AND held = 1";
            let resolved = match resolution {
                Resolution::Retry => conn
                    .prepare_cached(&format!("UPDATE schedules SET held = 0 WHERE {HELD}"))?
                    .execute(params![schedule, operator])?,
                Resolution::Drop => conn
                    .prepare_cached(&format!(
                        "UPDATE schedules SET state = 'cancelled', done_at = ?3 WHERE {HELD}"
                    ))?
                    .execute(params![schedule, operator, at.to_string()])?,
            };
            if resolved == 0 {
                return Err(Refused(format!("schedule `{schedule}` is not held")));
            }
        }
        Write::SetStatus { subject, status } => {
            touch(conn, operator, subject)?;
            conn.prepare_cached(
                "UPDATE subjects SET status = ?4 WHERE operator = ?1 AND kind = ?2 AND id = ?3",
            )?
            .execute(params![operator, subject.kind.name(), subject.id, status])?;
        }
        Write::SetSwitch {
            subject,
            switch,
            on,
        } => {
            touch(conn, operator, subject)?;
            conn.prepare_cached(
                "INSERT INTO switches (operator, kind, id, switch, is_on) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (operator, kind, id, switch) DO UPDATE SET is_on = excluded.is_on",
            )?
            .execute(params![operator, subject.kind.name(), subject.id, switch, on])?;
        }
        Write::SetParent { subject, parent } => {
            touch(conn, operator, subject)?;
            conn.prepare_cached(
                "UPDATE subjects SET parent_kind = ?4, parent_id = ?5
                 WHERE operator = ?1 AND kind = ?2 AND id = ?3",
            )?
            .execute(params![
                operator,
                subject.kind.name(),
                subject.id,
                parent.kind.name(),
                parent.id
            ])?;
        }
    }
    Ok(())
}

/// Lifts one open lock of the subject by id: a lock's expiry, whose
/// schedule is the one firing, so there is none left to cancel.
fn lift_lock(
    conn: &Connection,
    operator: &str,
    subject: &SubjectRef,
    id: &str,
    kind: Option<&str>,
    lifted: &Lifted,
    committed: &mut Committed,
) -> std::result::Result<(), WriteError> {
    let changed = conn
        .prepare_cached(
            "UPDATE locks SET lifted_at = ?5, lifted_by_kind = ?6, lifted_by_id = ?7,
                 lift_reason = ?8, lift_mode = ?9
             WHERE id = ?1 AND operator = ?2 AND subject_kind = ?3 AND subject_id = ?4
               AND lifted_at IS NULL AND (?10 IS NULL OR kind = ?10)",
        )?
        .execute(params![
            id,
            operator,
            subject.kind.name(),
            subject.id,
            lifted.at.to_string(),
            lifted.actor.kind.name(),
            lifted.actor.id,
            lifted.reason,
            lifted.mode.name(),
            kind,
        ])?;
    if changed == 0 {
        return Err(Refused(format!(
            "subject `{subject}` has no open lock `{id}`"
        )));
    }
    committed.locks_lifted.push(id.to_owned());
    Ok(())
}

/// Records that a subject changed: creates its row or bumps its revision.
fn touch(conn: &Connection, operator: &str, subject: &SubjectRef) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO subjects (operator, kind, id, revision) VALUES (?1, ?2, ?3, 1)
         ON CONFLICT (operator, kind, id) DO UPDATE SET revision = revision + 1",
    )?
    .execute(params![operator, subject.kind.name(), subject.id])?;
    Ok(())
}

fn revision(conn: &Connection, operator: &str, subject: &SubjectRef) -> Result<u64> {
    let revision: Option<i64> = conn
        .prepare_cached(
            "SELECT revision FROM subjects WHERE operator = ?1 AND kind = ?2 AND id = ?3",
        )?
        .query_row(params![operator, subject.kind.name(), subject.id], |row| {
            row.get(0)
        })
        .optional()?;
    Ok(revision.unwrap_or(0) as u64)
}

/// Inserts a lock, and for a timed one the schedule of its expiry; returns
/// the lock's id.
fn insert_lock(conn: &Connection, operator: &str, new: &NewLock) -> Result<String> {
    let lock = &new.lock;
    conn.prepare_cached(
        "INSERT INTO locks (operator, subject_kind, subject_id, kind, actor_kind, actor_id,
             reason, message, since, until, legacy_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        operator,
        new.subject.kind.name(),
        new.subject.id,
        lock.kind,
        lock.actor.kind.name(),
        lock.actor.id,
        lock.reason,
        lock.message,
        lock.since.to_string(),
        lock.until.map(|until| until.to_string()),
        new.legacy_id,
    ])?;
    let id = conn.last_insert_rowid();
    if let Some(until) = lock.until {
        insert_schedule(
            conn,
            operator,
            &new.subject,
            until,
            LOCK_EXPIRY_ACTION,
            Trigger::Expired,
            &json!({ "lock": id.to_string() }),
            Some(id),
        )?;
    }
    Ok(id.to_string())
}

#[allow(clippy::too_many_arguments)]
fn insert_schedule(
    conn: &Connection,
    operator: &str,
    subject: &SubjectRef,
    at: Timestamp,
    action: &str,
    trigger: Trigger,
    params: &Value,
    lock_id: Option<i64>,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO schedules (operator, subject_kind, subject_id, at, at_ns, action, trigger,
             params, lock_id, state)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'pending')",
    )?
    .execute(params![
        operator,
        subject.kind.name(),
        subject.id,
        at.to_string(),
        nanos(at),
        action,
        trigger_name(trigger),
        params.to_string(),
        lock_id,
    ])?;
    Ok(())
}

/// Records that `id`, installed, is the operator's active version from `at`.
fn activate(
    conn: &Connection,
    operator: &str,
    id: &PolicyId,
    at: Timestamp,
    audit: &NewAudit,
) -> Result<u64> {
    conn.execute(
        "INSERT INTO activations (operator, name, version, at) VALUES (?1, ?2, ?3, ?4)",
        params![operator, id.name, id.version, at.to_string()],
    )?;
    conn.execute(
        "UPDATE schedules SET held = 0 WHERE operator = ?1 AND state = 'pending' AND held = 1",
        params![operator],
    )?;
    append_audit(conn, operator, at, audit)
}

/// Marks the schedule a change comes from as fired, or as held when its
/// policy failed, which only holds while that version is still active.
fn fire(conn: &Connection, operator: &str, change: &Change, fires: &Fires) -> Result<()> {
    let id = fires.schedule;
    let updated = match &fires.held {
        None => conn
            .prepare_cached(
                "UPDATE schedules SET state = 'fired', done_at = ?2, attempts = attempts + 1
                 WHERE id = ?1 AND state = 'pending' AND held = 0",
            )?
            .execute(params![id, change.at.to_string()])?,
        Some(held) => {
            let active = conn
                .prepare_cached(
                    "SELECT name, version FROM activations WHERE operator = ?1
                     ORDER BY seq DESC LIMIT 1",
                )?
                .query_row(params![operator], |row| {
                    Ok(PolicyId::new(row.get::<_, String>(0)?, row.get(1)?))
                })
                .optional()?;
            if active != held.policy {
                let about = change
                    .audit
                    .subject
                    .as_ref()
                    .map_or_else(|| format!("schedule {id}"), ToString::to_string);
                return Err(Error::Conflict(about));
            }
            conn.prepare_cached(
                "UPDATE schedules SET held = 1, attempts = attempts + 1, last_error = ?2
                 WHERE id = ?1 AND state = 'pending' AND held = 0",
            )?
            .execute(params![id, held.error])?
        }
    };
    if updated == 0 {
        return Err(Error::AlreadyFired(id));
    }
    Ok(())
}

/// Appends an audit record to the chain; returns its sequence number.
fn append_audit(conn: &Connection, operator: &str, at: Timestamp, new: &NewAudit) -> Result<u64> {
    let last = match AUDIT_TAIL.take() {
        Some(tail) => Some(tail),
        None => conn
            .prepare_cached("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")?
            .query_row([], |row| Ok((row.get::<_, i64>(0)? as u64, row.get(1)?)))
            .optional()?,
    };
    let (seq, prev_hash) = match last {
        Some((seq, hash)) => (seq + 1, hash),
        None => (1, GENESIS.to_owned()),
    };
    let payload = new.payload.clone();
    let mut record = AuditRecord {
        seq,
        at,
        operator: operator.to_owned(),
        kind: new.kind.clone(),
        subject: new.subject.clone(),
        actor: new.actor.clone(),
        policy: new.policy.clone(),
        payload_sha256: audit::payload_digest(&payload),
        payload,
        redacted: false,
        prev_hash,
        hash: String::new(),
    };
    record.hash = audit::link_hash(&record);
    conn.prepare_cached(
        "INSERT INTO audit (seq, at, operator, kind, subject_kind, subject_id, actor_kind,
             actor_id, policy, payload, payload_sha256, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?
    .execute(params![
        seq as i64,
        record.at.to_string(),
        record.operator,
        record.kind,
        record.subject.as_ref().map(|s| s.kind.name()),
        record.subject.as_ref().map(|s| s.id.as_str()),
        record.actor.kind.name(),
        record.actor.id,
        record.policy.as_ref().map(ToString::to_string),
        record.payload,
        record.payload_sha256,
        record.prev_hash,
        record.hash,
    ])?;
    AUDIT_TAIL.set(Some((seq, record.hash)));
    Ok(seq)
}

/// A subject's status, parent kind and id, and revision.
type SubjectRow = (Option<String>, Option<String>, Option<String>, i64);

fn subject_state(
    conn: &Connection,
    operator: &str,
    subject: &SubjectRef,
    now: Timestamp,
) -> Result<SubjectState> {
    let key = params![operator, subject.kind.name(), subject.id];
    let row: Option<SubjectRow> = conn
        .prepare_cached(
            "SELECT status, parent_kind, parent_id, revision FROM subjects
             WHERE operator = ?1 AND kind = ?2 AND id = ?3",
        )?
        .query_row(key, |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })
        .optional()?;
    let Some((status, parent_kind, parent_id, revision)) = row else {
        return Ok(SubjectState::default());
    };
    let parent = match (parent_kind, parent_id) {
        (Some(kind), Some(id)) => Some(SubjectRef::new(parse(&kind, "subject kind")?, id)),
        _ => None,
    };
    let switches = conn
        .prepare_cached(
            "SELECT switch, is_on FROM switches WHERE operator = ?1 AND kind = ?2 AND id = ?3",
        )?
        .query_map(key, |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<rusqlite::Result<BTreeMap<String, bool>>>()?;
    let mut locks = open_locks(conn, operator, subject)?;
    locks.retain(|lock| lock.is_active_at(now));
    let mut children = rows(
        conn,
        "SELECT kind, id FROM subjects WHERE operator = ?1 AND parent_kind = ?2 AND parent_id = ?3",
        key,
        |row| subject_at(row, 0),
    )?;
    children.sort();
    Ok(SubjectState {
        status,
        switches,
        locks,
        parent,
        children,
        revision: revision as u64,
    })
}

/// The subject's locks not lifted yet (whether or not their time is up).
fn open_locks(conn: &Connection, operator: &str, subject: &SubjectRef) -> Result<Vec<Lock>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {LOCK_COLUMNS} FROM locks
         WHERE operator = ?1 AND subject_kind = ?2 AND subject_id = ?3 AND lifted_at IS NULL"
    ))?;
    let mut rows = stmt.query(params![operator, subject.kind.name(), subject.id])?;
    let mut locks = Vec::new();
    while let Some(row) = rows.next()? {
        locks.push((row.get::<_, i64>(0)?, lock_record(row)?.lock));
    }
    // Sorted here: with `ORDER BY id` SQLite re-prepares the statement
    // whenever another connection has committed.
    locks.sort_unstable_by_key(|(id, _)| *id);
    Ok(locks.into_iter().map(|(_, lock)| lock).collect())
}

fn anonymize(conn: &Connection, anonymization: &Anonymization) -> Result<Anonymized> {
    let Anonymization {
        operator,
        subject,
        at,
        actor,
        placeholder,
    } = anonymization;
    let key = params![operator, subject.kind.name(), subject.id];
    let mut anonymized = Anonymized {
        locks: conn.execute(
            "UPDATE locks SET reason = ?4,
                 message = CASE WHEN message IS NULL THEN NULL ELSE ?4 END,
                 lift_reason = CASE WHEN lift_reason IS NULL THEN NULL ELSE ?4 END
             WHERE operator = ?1 AND subject_kind = ?2 AND subject_id = ?3",
            params![operator, subject.kind.name(), subject.id, placeholder],
        )? as u64,
        ..Anonymized::default()
    };
    // Decisions about the subject's children (a customer's contracts) carry
    // the subject in their input, so their payloads go too.
    let mut stmt = conn.prepare(
        "SELECT seq FROM audit
         WHERE operator = ?1 AND redacted = 0 AND (
             (subject_kind = ?2 AND subject_id = ?3)
             OR (subject_kind, subject_id) IN (SELECT kind, id FROM subjects
                 WHERE operator = ?1 AND parent_kind = ?2 AND parent_id = ?3))
         ORDER BY seq",
    )?;
    anonymized.audit_records = stmt
        .query_map(key, |row| row.get::<_, i64>(0).map(|seq| seq as u64))?
        .collect::<rusqlite::Result<_>>()?;
    let mut redact =
        conn.prepare_cached("UPDATE audit SET payload = ?2, redacted = 1 WHERE seq = ?1")?;
    for seq in &anonymized.audit_records {
        redact.execute(params![*seq as i64, REDACTED_PAYLOAD])?;
    }
    anonymized.events = conn.execute(
        "UPDATE events SET data = 'null'
         WHERE operator = ?1 AND subject_kind = ?2 AND subject_id = ?3",
        key,
    )? as u64;
    // A policy's failure may quote its input.
    conn.execute(
        "UPDATE schedules SET last_error = ?4
         WHERE operator = ?1 AND subject_kind = ?2 AND subject_id = ?3 AND last_error IS NOT NULL",
        params![operator, subject.kind.name(), subject.id, placeholder],
    )?;
    anonymized.audit_seq = append_audit(
        conn,
        operator,
        *at,
        &NewAudit {
            kind: ANONYMIZED.to_owned(),
            subject: Some(subject.clone()),
            actor: actor.clone(),
            policy: None,
            payload: json!({
                "redacted": anonymized.audit_records,
                "locks": anonymized.locks,
                "events": anonymized.events,
            })
            .to_string(),
        },
    )?;
    Ok(anonymized)
}

fn nanos(at: Timestamp) -> i64 {
    let nanos = at.get().unix_timestamp_nanos();
    nanos.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

fn trigger_name(trigger: Trigger) -> &'static str {
    match trigger {
        Trigger::Action => "action",
        Trigger::Expired => "expired",
        Trigger::Scheduled => "scheduled",
    }
}

/// Parses a stored value; a value that does not parse means the file was
/// changed outside rulehost.
fn parse<T: FromStr>(text: &str, what: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    text.parse()
        .map_err(|e| Error::Store(format!("invalid {what} `{text}` in the store: {e}")))
}

fn actor(row: &Row<'_>, at: usize) -> Result<Actor> {
    Ok(Actor {
        kind: parse::<ActorKind>(&row.get::<_, String>(at)?, "actor kind")?,
        id: row.get(at + 1)?,
    })
}

fn subject_at(row: &Row<'_>, at: usize) -> Result<SubjectRef> {
    Ok(SubjectRef::new(
        parse::<SubjectKind>(&row.get::<_, String>(at)?, "subject kind")?,
        row.get::<_, String>(at + 1)?,
    ))
}

fn json(text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| Error::Store(format!("invalid JSON in the store: {e}")))
}

fn stored_policy(row: &Row<'_>) -> Result<StoredPolicy> {
    stored_policy_at(row, 0)
}

fn stored_policy_at(row: &Row<'_>, at: usize) -> Result<StoredPolicy> {
    Ok(StoredPolicy {
        id: PolicyId::new(row.get::<_, String>(at)?, row.get(at + 1)?),
        sha256: row.get(at + 2)?,
        wasm: row.get(at + 3)?,
        settings: json(&row.get::<_, String>(at + 4)?)?,
        installed_at: parse(&row.get::<_, String>(at + 5)?, "time")?,
        installed_by: actor(row, at + 6)?,
    })
}

fn lock_record(row: &Row<'_>) -> Result<LockRecord> {
    let optional_time = |at: usize| -> Result<Option<Timestamp>> {
        row.get::<_, Option<String>>(at)?
            .map(|text| parse(&text, "time"))
            .transpose()
    };
    let lifted = match optional_time(11)? {
        Some(at) => Some(Lifted {
            at,
            actor: actor(row, 12)?,
            reason: row.get(14)?,
            mode: match row.get::<_, String>(15)?.as_str() {
                "automatic" => LiftMode::Automatic,
                _ => LiftMode::Manual,
            },
        }),
        None => None,
    };
    Ok(LockRecord {
        subject: subject_at(row, 1)?,
        lock: Lock {
            id: Some(row.get::<_, i64>(0)?.to_string()),
            kind: row.get(3)?,
            actor: actor(row, 4)?,
            reason: row.get(6)?,
            message: row.get(7)?,
            since: parse(&row.get::<_, String>(8)?, "time")?,
            until: optional_time(9)?,
        },
        legacy_id: row.get(10)?,
        lifted,
    })
}

fn scheduled(row: &Row<'_>) -> Result<ScheduleRecord> {
    let trigger = match row.get::<_, String>(6)?.as_str() {
        "expired" => Trigger::Expired,
        "action" => Trigger::Action,
        _ => Trigger::Scheduled,
    };
    Ok(ScheduleRecord {
        scheduled: Scheduled {
            id: row.get(0)?,
            operator: row.get(1)?,
            subject: subject_at(row, 2)?,
            at: parse(&row.get::<_, String>(4)?, "time")?,
            action: row.get(5)?,
            trigger,
            params: json(&row.get::<_, String>(7)?)?,
            attempts: row.get(10)?,
        },
        state: match (row.get::<_, String>(8)?.as_str(), row.get::<_, bool>(9)?) {
            ("pending", false) => ScheduleState::Pending,
            ("pending", true) => ScheduleState::Held,
            ("fired", _) => ScheduleState::Fired,
            ("cancelled", _) => ScheduleState::Cancelled,
            (other, _) => {
                return Err(Error::Store(format!(
                    "schedule {} has an unknown state `{other}`",
                    row.get::<_, i64>(0)?
                )));
            }
        },
        last_error: row.get(11)?,
    })
}

fn audit_record(row: &Row<'_>) -> Result<AuditRecord> {
    let subject = match row.get::<_, Option<String>>(4)? {
        Some(_) => Some(subject_at(row, 4)?),
        None => None,
    };
    Ok(AuditRecord {
        seq: row.get::<_, i64>(0)? as u64,
        at: parse(&row.get::<_, String>(1)?, "time")?,
        operator: row.get(2)?,
        kind: row.get(3)?,
        subject,
        actor: actor(row, 6)?,
        policy: row
            .get::<_, Option<String>>(8)?
            .map(|text| parse(&text, "policy id"))
            .transpose()?,
        payload: row.get(9)?,
        payload_sha256: row.get(10)?,
        redacted: row.get(11)?,
        prev_hash: row.get(12)?,
        hash: row.get(13)?,
    })
}

fn event(row: &Row<'_>) -> Result<Event> {
    Ok(Event {
        seq: row.get::<_, i64>(0)? as u64,
        operator: row.get(1)?,
        kind: row.get(2)?,
        subject: subject_at(row, 3)?,
        data: json(&row.get::<_, String>(5)?)?,
        at: parse(&row.get::<_, String>(6)?, "time")?,
        audit_seq: row.get::<_, i64>(7)? as u64,
    })
}

fn token_record(row: &Row<'_>) -> Result<TokenRecord> {
    let optional_time = |at: usize| -> Result<Option<Timestamp>> {
        row.get::<_, Option<String>>(at)?
            .map(|text| parse(&text, "time"))
            .transpose()
    };
    Ok(TokenRecord {
        id: row.get::<_, i64>(0)? as u64,
        operator: row.get(1)?,
        name: row.get(2)?,
        can_install: row.get(3)?,
        created_at: parse(&row.get::<_, String>(4)?, "time")?,
        expires_at: optional_time(5)?,
        revoked_at: optional_time(6)?,
    })
}
