//! Reading locks exported from a legacy system (GYM-12).
//!
//! One lock per JSON Lines line or CSV row (with a header row), with the
//! fields of [`LegacyLock`]. Each row is checked on its own, so every bad row
//! is reported at once, by line number.

use std::fmt;

use rulehost_sdk::wire::{Actor, ActorKind, Lock, SubjectKind, SubjectRef, Timestamp};
use serde::{Deserialize, Serialize};

use crate::store::NewLock;

/// The file's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportFormat {
    /// One JSON object per line; blank lines are skipped.
    JsonLines,
    /// Comma-separated, with a header row naming the fields.
    Csv,
}

impl ImportFormat {
    /// `jsonl` or `csv`.
    pub fn name(self) -> &'static str {
        match self {
            ImportFormat::JsonLines => "jsonl",
            ImportFormat::Csv => "csv",
        }
    }
}

/// What to do with a file that has invalid rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnBadRow {
    /// Import nothing and report every invalid row.
    Refuse,
    /// Import the valid rows and report the invalid ones.
    Skip,
}

/// One invalid row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RowError {
    /// Its line in the file, from 1.
    pub line: u64,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// What an import did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    /// The ids the imported locks got, in file order.
    pub lock_ids: Vec<String>,
    /// Invalid rows skipped (only with [`OnBadRow::Skip`]).
    pub skipped: Vec<RowError>,
    /// The import's audit record.
    pub audit_seq: u64,
}

/// One lock as a legacy system exports it.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegacyLock {
    /// `customer` (the default), `contract`, `invoice` or `case`.
    #[serde(default)]
    pub subject_kind: Option<String>,
    /// The backend's id of the locked subject.
    pub subject_id: String,
    /// The lock's kind; `full` when absent.
    #[serde(default)]
    pub kind: Option<String>,
    /// Who locked.
    pub actor: String,
    /// `staff` (the default), `self_service` or `system`.
    #[serde(default)]
    pub actor_kind: Option<String>,
    /// Why.
    pub reason: String,
    /// The message to the customer, if any.
    #[serde(default)]
    pub message: Option<String>,
    /// Since when.
    pub since: Timestamp,
    /// Until when; open-ended when absent.
    #[serde(default)]
    pub until: Option<Timestamp>,
    /// The lock's id in the legacy system.
    #[serde(default)]
    pub legacy_id: Option<String>,
}

impl LegacyLock {
    fn into_lock(self) -> Result<NewLock, String> {
        let kind_of_subject = match self.subject_kind.as_deref() {
            None | Some("") => SubjectKind::Customer,
            Some(name) => name.parse()?,
        };
        let actor_kind = match self.actor_kind.as_deref() {
            None | Some("") => ActorKind::Staff,
            Some(name) => name.parse()?,
        };
        for (field, value) in [
            ("subject_id", &self.subject_id),
            ("actor", &self.actor),
            ("reason", &self.reason),
        ] {
            if value.trim().is_empty() {
                return Err(format!("`{field}` is empty"));
            }
        }
        if let Some(until) = self.until
            && until <= self.since
        {
            return Err(format!(
                "`until` `{until}` is not after `since` `{}`",
                self.since
            ));
        }
        Ok(NewLock {
            subject: SubjectRef::new(kind_of_subject, self.subject_id),
            lock: Lock {
                id: None,
                kind: self
                    .kind
                    .filter(|kind| !kind.trim().is_empty())
                    .unwrap_or_else(|| "full".to_owned()),
                actor: Actor {
                    kind: actor_kind,
                    id: self.actor,
                },
                reason: self.reason,
                message: self.message.filter(|message| !message.is_empty()),
                since: self.since,
                until: self.until,
            },
            legacy_id: self.legacy_id.filter(|id| !id.is_empty()),
        })
    }
}

/// The valid rows as locks, and every invalid row.
pub(crate) fn parse(text: &str, format: ImportFormat) -> (Vec<NewLock>, Vec<RowError>) {
    let rows: Vec<(u64, Result<LegacyLock, String>)> = match format {
        ImportFormat::JsonLines => text
            .lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(index, line)| {
                let row = serde_json::from_str(line).map_err(|e| e.to_string());
                (index as u64 + 1, row)
            })
            .collect(),
        ImportFormat::Csv => csv_rows(text),
    };
    let mut locks = Vec::new();
    let mut errors = Vec::new();
    for (line, row) in rows {
        match row.and_then(LegacyLock::into_lock) {
            Ok(lock) => locks.push(lock),
            Err(message) => errors.push(RowError { line, message }),
        }
    }
    (locks, errors)
}

fn csv_rows(text: &str) -> Vec<(u64, Result<LegacyLock, String>)> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = match reader.headers() {
        Ok(headers) => headers.clone(),
        Err(error) => return vec![(1, Err(format!("cannot read the header row: {error}")))],
    };
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = match record {
            Ok(record) => record,
            Err(error) => {
                let line = error.position().map_or(0, csv::Position::line);
                rows.push((line, Err(error.to_string())));
                return rows;
            }
        };
        let line = record.position().map_or(0, csv::Position::line);
        // Empty cells are absent fields, as in a JSON line without them.
        let fields: serde_json::Map<String, serde_json::Value> = headers
            .iter()
            .zip(record.iter())
            .filter(|(_, value)| !value.is_empty())
            .map(|(name, value)| (name.to_owned(), value.into()))
            .collect();
        let row =
            serde_path_to_error::deserialize(serde_json::Value::Object(fields)).map_err(|error| {
                match error.path().to_string().as_str() {
                    "." => error.inner().to_string(),
                    column => format!("column `{column}`: {}", error.inner()),
                }
            });
        rows.push((line, row));
    }
    rows
}
