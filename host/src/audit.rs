//! The audit trail's hash chain (HOST-4).
//!
//! Each record's hash covers the previous record's hash, its own fields and
//! the sha256 of its payload as first written. Anonymizing a record replaces
//! its payload but keeps that digest, so the chain still verifies; the
//! anonymization itself is a later record that names every redacted one, so
//! a payload cannot be dropped quietly either.

use std::collections::BTreeSet;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::store::AuditRecord;

/// The `prev_hash` of the first record.
pub(crate) const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The kind of the record an anonymization appends; its payload lists the
/// redacted records under `redacted`.
pub(crate) const ANONYMIZED: &str = "subject.anonymized";

/// What a redacted payload reads.
pub(crate) const REDACTED_PAYLOAD: &str = r#"{"redacted":true}"#;

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)] as char);
        out.push(DIGITS[usize::from(byte & 0xf)] as char);
    }
    out
}

/// Hex sha256 of a payload's text.
pub(crate) fn payload_digest(payload: &str) -> String {
    hex(&Sha256::digest(payload.as_bytes()))
}

/// The hash of `record`, from its `prev_hash`, fields and `payload_sha256`
/// (not its payload or its own `hash`). Fields are length-prefixed, so no
/// two different records hash the same bytes.
pub(crate) fn link_hash(record: &AuditRecord) -> String {
    let mut hasher = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    field(record.prev_hash.as_bytes());
    field(&record.seq.to_le_bytes());
    field(record.at.to_string().as_bytes());
    field(record.operator.as_bytes());
    field(record.kind.as_bytes());
    match &record.subject {
        Some(subject) => {
            field(subject.kind.name().as_bytes());
            field(subject.id.as_bytes());
        }
        None => {
            field(b"");
            field(b"");
        }
    }
    field(record.actor.kind.name().as_bytes());
    field(record.actor.id.as_bytes());
    field(
        record
            .policy
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default()
            .as_bytes(),
    );
    field(record.payload_sha256.as_bytes());
    hex(&hasher.finalize())
}

/// The outcome of verifying the audit trail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verification {
    /// Records checked.
    pub records: u64,
    /// The first broken link, if any.
    pub broken: Option<BrokenLink>,
}

impl Verification {
    /// Whether every record checked out.
    pub fn is_intact(&self) -> bool {
        self.broken.is_none()
    }
}

/// Where and why the chain breaks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BrokenLink {
    /// The first record that does not check out.
    pub seq: u64,
    /// What is wrong with it.
    pub reason: String,
}

/// Checks records fed in order; stops at the first broken link.
#[derive(Debug)]
pub(crate) struct Verifier {
    prev_hash: String,
    next_seq: u64,
    records: u64,
    unexplained_redactions: BTreeSet<u64>,
    broken: Option<BrokenLink>,
}

impl Verifier {
    pub fn new() -> Self {
        Verifier {
            prev_hash: GENESIS.to_owned(),
            next_seq: 1,
            records: 0,
            unexplained_redactions: BTreeSet::new(),
            broken: None,
        }
    }

    /// Checks the next record; `false` once the chain is broken.
    pub fn check(&mut self, record: &AuditRecord) -> bool {
        if let Err(reason) = self.link(record) {
            self.broken = Some(BrokenLink {
                seq: record.seq,
                reason,
            });
            return false;
        }
        self.prev_hash.clone_from(&record.hash);
        self.next_seq = record.seq + 1;
        self.records += 1;
        true
    }

    fn link(&mut self, record: &AuditRecord) -> Result<(), String> {
        if record.seq != self.next_seq {
            return Err(format!(
                "expected record `{}`, found record `{}`: records are missing",
                self.next_seq, record.seq
            ));
        }
        if record.prev_hash != self.prev_hash {
            return Err(format!(
                "its previous hash `{}` is not the hash `{}` of the record before",
                record.prev_hash, self.prev_hash
            ));
        }
        if link_hash(record) != record.hash {
            return Err("its fields do not match its hash".to_owned());
        }
        if record.redacted {
            self.unexplained_redactions.insert(record.seq);
        } else if payload_digest(&record.payload) != record.payload_sha256 {
            return Err("its payload does not match its digest".to_owned());
        }
        if record.kind == ANONYMIZED {
            let listed = serde_json::from_str::<serde_json::Value>(&record.payload)
                .ok()
                .and_then(|payload| payload.get("redacted").cloned())
                .and_then(|seqs| serde_json::from_value::<Vec<u64>>(seqs).ok())
                .ok_or("its payload does not list the redacted records")?;
            for seq in listed {
                self.unexplained_redactions.remove(&seq);
            }
        }
        Ok(())
    }

    pub fn finish(mut self) -> Verification {
        if self.broken.is_none()
            && let Some(&seq) = self.unexplained_redactions.first()
        {
            self.broken = Some(BrokenLink {
                seq,
                reason: "its payload was removed without an anonymization record".to_owned(),
            });
        }
        Verification {
            records: self.records,
            broken: self.broken,
        }
    }
}
