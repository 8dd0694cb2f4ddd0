//! Entry points for the fuzz targets in `fuzz/` and their regression tests:
//! each feeds arbitrary bytes to one of the host's decoders, which must
//! answer an error, never panic. Not part of the stable API.

use rulehost_sdk::wire::{
    Actor, AuthorizeDecision, BillingDecision, SettingsVerdict, TransitionDecision,
};

use crate::effects::Plan;
use crate::import::{ImportFormat, parse};
use crate::policy::decode;

/// A policy's reply as each hook's output; an `apply` decision's effects
/// are planned as the host would apply them.
pub fn policy_output(bytes: &[u8]) {
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
