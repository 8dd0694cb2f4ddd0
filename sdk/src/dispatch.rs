//! The JSON side of the ABI: decode the envelope, call the policy, encode the
//! reply. The raw exports in [`crate::export_policy!`] are thin wrappers
//! around [`call`].

use std::cell::RefCell;

use serde::Serialize;

use crate::wire::{
    Authorize, Billing, Envelope, Hook, HookKind, Reply, SettingsVerdict, Transition,
};
use crate::{Context, Policy};

/// Runs one hook of `P` on a JSON envelope and returns the JSON reply, the
/// same bytes the compiled module hands the host. Lets a native build of a
/// policy be called exactly as the wasm one is.
pub fn handle_json<P: Policy>(hook: Hook, envelope: &[u8]) -> Vec<u8> {
    match hook {
        Hook::Authorize => respond::<P, Authorize>(envelope, P::authorize),
        Hook::Billing => respond::<P, Billing>(envelope, P::billing),
        Hook::Transition => respond::<P, Transition>(envelope, P::transition),
        Hook::ValidateSettings => validate_settings::<P>(envelope),
    }
}

fn respond<P: Policy, H: HookKind>(
    envelope: &[u8],
    decide: fn(&Context<P::Settings>, &H::Input) -> H::Output,
) -> Vec<u8> {
    match serde_json::from_slice::<Envelope<P::Settings, H::Input>>(envelope) {
        Ok(envelope) => {
            let ctx = Context {
                now: envelope.now,
                settings: envelope.settings,
            };
            encode(&Reply::Ok(decide(&ctx, &envelope.input)))
        }
        Err(error) => encode(&Reply::<()>::Error(format!(
            "cannot read `{}` input: {error}",
            H::HOOK
        ))),
    }
}

fn validate_settings<P: Policy>(envelope: &[u8]) -> Vec<u8> {
    let settings =
        match serde_json::from_slice::<Envelope<serde_json::Value, serde_json::Value>>(envelope) {
            Ok(envelope) => envelope.settings,
            Err(error) => {
                return encode(&Reply::<()>::Error(format!(
                    "cannot read `validate_settings` input: {error}"
                )));
            }
        };
    // Decoded apart from the envelope so an error names the settings field
    // (`allowed_while_locked[2]`), not a column of the envelope.
    let verdict = match serde_path_to_error::deserialize::<_, P::Settings>(settings) {
        Ok(settings) => match P::validate_settings(&settings) {
            Ok(()) => SettingsVerdict::Valid,
            Err(errors) => SettingsVerdict::Invalid { errors },
        },
        Err(error) => SettingsVerdict::Invalid {
            errors: vec![format!("{}: {}", error.path(), error.inner())],
        },
    };
    encode(&Reply::Ok(verdict))
}

fn encode<T: Serialize>(reply: &Reply<T>) -> Vec<u8> {
    // Serializing these types cannot fail: no maps with non-string keys, no
    // failing `Serialize` impls.
    serde_json::to_vec(reply).unwrap_or_else(|_| br#"{"error":"cannot encode reply"}"#.to_vec())
}

thread_local! {
    /// The reply of the last call, kept alive until the host has read it,
    /// which it has by the time it calls into the module again.
    static LAST_REPLY: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// `rulehost_alloc`: a buffer of `len` bytes the host fills with the
/// envelope, owned by the module from then on. Also drops the previous
/// reply, which the host has read.
pub fn alloc(len: u32) -> u32 {
    LAST_REPLY.with(|reply| drop(reply.take()));
    let buffer = vec![0u8; len as usize].into_boxed_slice();
    Box::into_raw(buffer) as *mut u8 as usize as u32
}

/// A hook export: reads the envelope at `ptr..ptr+len`, answers, and returns
/// the reply's pointer in the high 32 bits and its length in the low 32.
///
/// # Safety
///
/// `ptr` and `len` must come from one call of [`alloc`] and the buffer must
/// not be used after this call.
pub unsafe fn call<P: Policy>(hook: Hook, ptr: u32, len: u32) -> u64 {
    let slice = std::ptr::slice_from_raw_parts_mut(ptr as usize as *mut u8, len as usize);
    // SAFETY: the caller guarantees the buffer came from `alloc`, which
    // leaked a `Box<[u8]>` of exactly this length.
    let envelope = unsafe { Box::from_raw(slice) };
    let reply = handle_json::<P>(hook, &envelope);
    drop(envelope);
    let packed = ((reply.as_ptr() as usize as u64) << 32) | reply.len() as u64;
    LAST_REPLY.with(|last| *last.borrow_mut() = reply);
    packed
}
