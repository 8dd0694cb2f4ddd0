//! Entry points for the fuzz targets in `fuzz/` and their regression tests:
//! each feeds arbitrary bytes to one of the host's decoders, which must
//! answer an error, never panic. Not part of the stable API.

use std::fmt::{Debug, Display};

use rulehost_sdk::wire::json;
use rulehost_sdk::wire::{
    Actor, AuthorizeDecision, AuthorizeInput, BillingDecision, Envelope, Reply, SettingsVerdict,
    TransitionDecision,
};
use serde_json::Value;

use crate::effects::Plan;
use crate::import::{ImportFormat, parse};
use crate::policy::decode;

/// A policy's reply as each hook's output; an `apply` decision's effects
/// are planned as the host would apply them. The hand-written JSON of the
/// wire types must read every text exactly as serde does: a difference
/// panics.
pub fn policy_output(bytes: &[u8]) {
    if let Ok(text) = std::str::from_utf8(bytes) {
        same_as_serde(
            json::read_reply::<AuthorizeDecision>(text),
            serde_json::from_str::<Reply<AuthorizeDecision>>(text),
            text,
        );
        same_as_serde(
            json::from_str::<AuthorizeInput>(text),
            serde_json::from_str(text),
            text,
        );
        same_as_serde(
            json::read_envelope::<Value, AuthorizeInput>(text),
            serde_json::from_str::<Envelope<Value, AuthorizeInput>>(text),
            text,
        );
    }
    // As the module reads an envelope and the host a reply: from bytes,
    // checking only the strings that are not ASCII.
    let lossy = String::from_utf8_lossy(bytes);
    same_as_serde(
        json::read_envelope_bytes::<Value, AuthorizeInput>(bytes),
        json::serde_bytes(bytes),
        &lossy,
    );
    same_as_serde(
        json::read_reply_bytes::<AuthorizeDecision>(bytes),
        json::serde_bytes(bytes),
        &lossy,
    );
    let _ = decode::<AuthorizeDecision>(bytes);
    let _ = decode::<BillingDecision>(bytes);
    let _ = decode::<SettingsVerdict>(bytes);
    if let Ok(TransitionDecision::Apply { effects }) = decode::<TransitionDecision>(bytes) {
        let now = "2026-11-22T10:00:00Z".parse().expect("a valid time");
        let _ = Plan::default().effects(&effects, &Actor::staff("fuzz"), now);
    }
}

/// A request body as each route's body type.
pub fn request_body(bytes: &[u8]) {
    crate::service::decode_bodies(bytes);
}

/// A legacy import file in both formats.
pub fn import_file(bytes: &[u8]) {
    if let Ok(text) = std::str::from_utf8(bytes) {
        let _ = parse(text, ImportFormat::JsonLines);
        let _ = parse(text, ImportFormat::Csv);
    }
}

/// Panics unless both reads gave the same value or the same error message.
fn same_as_serde<T: PartialEq + Debug, E: Display>(
    ours: Result<T, E>,
    serdes: Result<T, E>,
    text: &str,
) {
    let (ours, serdes) = (
        ours.map_err(|e| e.to_string()),
        serdes.map_err(|e| e.to_string()),
    );
    assert_eq!(
        ours, serdes,
        "the fast JSON path and serde differ on {text:?}"
    );
}
