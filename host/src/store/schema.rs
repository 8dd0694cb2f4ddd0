//! The SQLite schema, as numbered migrations. `PRAGMA user_version` holds the
//! number of migrations applied; opening a store applies the rest, each in
//! its own transaction. A migration, once released, is never edited: a
//! change is a new migration appended to [`MIGRATIONS`].

use rusqlite::Connection;

/// Every migration, in order. Timestamps are stored as their RFC 3339 text;
/// schedules also keep theirs as Unix nanoseconds (`at_ns`) to be ordered.
pub(super) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE policy_versions (
    operator TEXT NOT NULL,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    wasm BLOB NOT NULL,
    settings TEXT NOT NULL,
    installed_at TEXT NOT NULL,
    installed_by_kind TEXT NOT NULL,
    installed_by_id TEXT NOT NULL,
    PRIMARY KEY (operator, name, version)
);

CREATE TABLE activations (
    seq INTEGER PRIMARY KEY,
    operator TEXT NOT NULL,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    at TEXT NOT NULL,
    FOREIGN KEY (operator, name, version) REFERENCES policy_versions (operator, name, version)
);
CREATE INDEX activations_by_operator ON activations (operator, seq);

CREATE TABLE subjects (
    operator TEXT NOT NULL,
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    status TEXT,
    parent_kind TEXT,
    parent_id TEXT,
    revision INTEGER NOT NULL,
    PRIMARY KEY (operator, kind, id)
) WITHOUT ROWID;
CREATE INDEX subjects_by_parent ON subjects (operator, parent_kind, parent_id);

CREATE TABLE switches (
    operator TEXT NOT NULL,
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    switch TEXT NOT NULL,
    is_on INTEGER NOT NULL,
    PRIMARY KEY (operator, kind, id, switch)
) WITHOUT ROWID;

CREATE TABLE locks (
    id INTEGER PRIMARY KEY,
    operator TEXT NOT NULL,
    subject_kind TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    actor_kind TEXT NOT NULL,
    actor_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    message TEXT,
    since TEXT NOT NULL,
    until TEXT,
    legacy_id TEXT,
    lifted_at TEXT,
    lifted_by_kind TEXT,
    lifted_by_id TEXT,
    lift_reason TEXT,
    lift_mode TEXT
);
CREATE INDEX locks_by_subject ON locks (operator, subject_kind, subject_id);

CREATE TABLE schedules (
    id INTEGER PRIMARY KEY,
    operator TEXT NOT NULL,
    subject_kind TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    at TEXT NOT NULL,
    at_ns INTEGER NOT NULL,
    action TEXT NOT NULL,
    trigger TEXT NOT NULL,
    params TEXT NOT NULL,
    lock_id INTEGER REFERENCES locks (id),
    state TEXT NOT NULL CHECK (state IN ('pending', 'fired', 'cancelled')),
    done_at TEXT
);
CREATE INDEX schedules_pending ON schedules (at_ns, id) WHERE state = 'pending';
CREATE INDEX schedules_by_subject ON schedules (operator, subject_kind, subject_id);
CREATE INDEX schedules_by_lock ON schedules (lock_id);

CREATE TABLE audit (
    seq INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    operator TEXT NOT NULL,
    kind TEXT NOT NULL,
    subject_kind TEXT,
    subject_id TEXT,
    actor_kind TEXT NOT NULL,
    actor_id TEXT NOT NULL,
    policy TEXT,
    payload TEXT NOT NULL,
    payload_sha256 TEXT NOT NULL,
    redacted INTEGER NOT NULL DEFAULT 0,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX audit_by_subject ON audit (operator, subject_kind, subject_id);

CREATE TABLE events (
    seq INTEGER PRIMARY KEY,
    operator TEXT NOT NULL,
    kind TEXT NOT NULL,
    subject_kind TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    data TEXT NOT NULL,
    at TEXT NOT NULL,
    audit_seq INTEGER NOT NULL REFERENCES audit (seq)
);
CREATE INDEX events_by_operator ON events (operator, seq);
CREATE INDEX events_by_subject ON events (operator, subject_kind, subject_id);

CREATE TABLE cursors (
    operator TEXT NOT NULL,
    consumer TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (operator, consumer)
) WITHOUT ROWID;
"#,
    r#"
CREATE TABLE operators (
    id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL
) WITHOUT ROWID;
INSERT INTO operators (id, created_at)
    SELECT operator, min(installed_at) FROM policy_versions GROUP BY operator;

CREATE TABLE tokens (
    id INTEGER PRIMARY KEY,
    sha256 TEXT NOT NULL UNIQUE,
    operator TEXT REFERENCES operators (id),
    name TEXT NOT NULL,
    can_install INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT,
    revoked_at TEXT
);

CREATE INDEX audit_by_operator ON audit (operator, seq);
"#,
    r#"
CREATE TABLE trusted_keys (
    operator TEXT NOT NULL,
    public_key TEXT NOT NULL,
    added_at TEXT NOT NULL,
    PRIMARY KEY (operator, public_key)
) WITHOUT ROWID;
"#,
    // A firing whose policy failed is held, still pending, until the
    // operator activates a version; `attempts` counts the firings tried.
    r#"
ALTER TABLE schedules ADD COLUMN held INTEGER NOT NULL DEFAULT 0;
ALTER TABLE schedules ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE schedules ADD COLUMN last_error TEXT;
DROP INDEX schedules_pending;
CREATE INDEX schedules_pending ON schedules (at_ns, id) WHERE state = 'pending' AND held = 0;
CREATE INDEX schedules_held ON schedules (operator, id) WHERE state = 'pending' AND held = 1;
"#,
    // Where the service pushes an operator's events, signed with `secret`;
    // what was delivered is the `webhook` consumer's cursor.
    r#"
CREATE TABLE webhooks (
    operator TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    secret TEXT NOT NULL,
    created_at TEXT NOT NULL
) WITHOUT ROWID;
"#,
];

/// Applies the migrations not yet applied.
///
/// # Errors
///
/// A message when the file is from a newer rulehost or a migration fails.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), String> {
    let applied: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(|e| e.to_string())?;
    let applied = usize::try_from(applied)
        .map_err(|_| format!("its schema version `{applied}` is not a rulehost one"))?;
    if applied > MIGRATIONS.len() {
        return Err(format!(
            "its schema version `{applied}` is newer than this rulehost's `{}`",
            MIGRATIONS.len()
        ));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        // Immediate: another process opening the same file at once waits,
        // then finds the migration applied.
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| e.to_string())?;
        let now_applied: i64 = tx
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(|e| e.to_string())?;
        if now_applied > index as i64 {
            continue;
        }
        tx.execute_batch(sql)
            .and_then(|()| tx.pragma_update(None, "user_version", index as i64 + 1))
            .and_then(|()| tx.commit())
            .map_err(|e| format!("migration {} failed: {e}", index + 1))?;
    }
    Ok(())
}
