//! The JSON side of the ABI: decode the envelope, call the policy, encode the
//! reply. The raw exports in [`crate::export_policy!`] are thin wrappers
//! around [`call`].

use std::cell::RefCell;
use std::mem::MaybeUninit;

use serde::de::DeserializeOwned;

use crate::wire::json::{Reader, read_envelope_bytes, read_envelope_bytes_into, reply_to_vec};
use crate::wire::{
    Authorize, Billing, Envelope, Hook, HookKind, Reply, SettingsVerdict, Transition, WireJson,
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
    // The arena blocks the input owns, when the SDK's arena served them all.
    let mut input_blocks: Option<usize> = None;
    let read_input = |r: &mut Reader<'_>, place: &mut Option<H::Input>| {
        counting_blocks(&mut input_blocks, || H::Input::read_json_into(r, place))
    };
    // Decoded where it stays: the input of a hook is some hundred bytes,
    // which a module would otherwise copy from value to value on the way.
    let mut input = None;
    match read_envelope_bytes_into::<P::Settings, H::Input>(envelope, &mut input, read_input) {
        Ok((now, settings, fast)) => {
            let ctx = Context { now, settings };
            let reply = match &input {
                Some(input) => reply_to_vec(&Reply::Ok(decide(&ctx, input))),
                None => reply_to_vec(&Reply::<()>::Error(format!(
                    "cannot read `{}` input: no input",
                    H::HOOK
                ))),
            };
            // Counted only if the fast path's input is the one read.
            free_input(input, input_blocks.filter(|_| fast));
            reply
        }
        Err(error) => reply_to_vec(&Reply::<()>::Error(format!(
            "cannot read `{}` input: {error}",
            H::HOOK
        ))),
    }
}

/// Runs `read` and sets `blocks` to the number of arena blocks allocated
/// by it that are still live: those of the value read, as reading keeps
/// nothing else. `None` when some allocation came from outside the arena.
#[cfg(all(target_arch = "wasm32", feature = "allocator"))]
#[inline(always)]
fn counting_blocks<T>(blocks: &mut Option<usize>, read: impl FnOnce() -> Option<T>) -> Option<T> {
    let before = crate::allocator::Mark::now();
    let value = read()?;
    *blocks = before.live_blocks_since();
    Some(value)
}

/// Without the SDK's arena nothing is counted.
#[cfg(not(all(target_arch = "wasm32", feature = "allocator")))]
#[inline(always)]
fn counting_blocks<T>(blocks: &mut Option<usize>, read: impl FnOnce() -> Option<T>) -> Option<T> {
    *blocks = None;
    read()
}

/// Frees a hook's input after the call: in bulk when its arena blocks are
/// counted, which spares a module a call into the allocator per string;
/// by dropping it otherwise.
#[inline(always)]
fn free_input<I>(input: I, arena_blocks: Option<usize>) {
    #[cfg(all(target_arch = "wasm32", feature = "allocator"))]
    if let Some(blocks) = arena_blocks {
        // SAFETY: `blocks` is what the input owns, all of it in the arena
        // (`respond`); the policy only had it by shared reference; and the
        // hooks' input types own nothing but memory.
        unsafe { crate::allocator::free_in_bulk(input, blocks) };
        return;
    }
    let _ = arena_blocks;
    drop(input);
}

fn validate_settings<P: Policy>(envelope: &[u8]) -> Vec<u8> {
    let settings = match read::<serde_json::Value, serde_json::Value>(envelope) {
        Ok(envelope) => envelope.settings,
        Err(error) => {
            return reply_to_vec(&Reply::<()>::Error(format!(
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
    reply_to_vec(&Reply::Ok(verdict))
}

/// Decodes an envelope: bytes that are not UTF-8 are an error naming the
/// first bad byte.
#[inline(always)]
fn read<S: DeserializeOwned, I: WireJson>(envelope: &[u8]) -> Result<Envelope<S, I>, String> {
    read_envelope_bytes(envelope).map_err(|e| e.to_string())
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
    // Not zeroed: the host overwrites every byte before the module reads it.
    let buffer: Box<[MaybeUninit<u8>]> = Box::new_uninit_slice(len as usize);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{AuthorizeDecision, AuthorizeInput};

    /// Allows everything; only the envelope handling is under test.
    struct Open;

    impl Policy for Open {
        type Settings = serde_json::Value;

        fn authorize(_: &Context<Self::Settings>, _: &AuthorizeInput) -> AuthorizeDecision {
            AuthorizeDecision::Allow
        }
    }

    /// Denies, naming what it read: the action, the actor and the subject.
    struct Echo;

    impl Policy for Echo {
        type Settings = serde_json::Value;

        fn authorize(ctx: &Context<Self::Settings>, input: &AuthorizeInput) -> AuthorizeDecision {
            AuthorizeDecision::deny(
                "echo",
                format!(
                    "{} by {} on {} at {}",
                    input.action, input.actor.id, input.subject.id, ctx.now
                ),
            )
        }
    }

    #[test]
    fn an_envelope_the_fast_path_leaves_to_serde_is_read_alike() {
        // Members in another order and an escape in a string: serde reads
        // this one, the fast path the other.
        let other = r#"{"settings":{},"input":{"subject":{"id":"k-1","kind":"contract"},"actor":{"kind":"staff","id":"an\u006ea"},"action":"änderung"},"now":"2026-11-22T10:00:00Z"}"#;
        let echo = |envelope: &str| -> serde_json::Value {
            serde_json::from_slice(&handle_json::<Echo>(Hook::Authorize, envelope.as_bytes()))
                .expect("the reply is JSON")
        };
        let expected = serde_json::json!({"ok": {
            "decision": "deny",
            "code": "echo",
            "reason": "änderung by anna on k-1 at 2026-11-22T10:00:00Z"
        }});
        assert_eq!(echo(ENVELOPE), expected);
        assert_eq!(echo(other), expected);
        let no_input = r#"{"now":"2026-11-22T10:00:00Z","settings":{}}"#;
        assert_eq!(
            echo(no_input),
            serde_json::json!({"error": "cannot read `authorize` input: missing field `input` at line 1 column 44"})
        );
    }

    const ENVELOPE: &str = r#"{"now":"2026-11-22T10:00:00Z","settings":{},"input":{"action":"änderung","actor":{"kind":"staff","id":"anna"},"subject":{"kind":"contract","id":"k-1"}}}"#;

    fn reply(hook: Hook, envelope: &[u8]) -> serde_json::Value {
        serde_json::from_slice(&handle_json::<Open>(hook, envelope)).expect("the reply is JSON")
    }

    #[test]
    fn an_envelope_is_read_with_its_non_ascii_strings() {
        assert_eq!(
            reply(Hook::Authorize, ENVELOPE.as_bytes()),
            serde_json::json!({"ok": {"decision": "allow"}})
        );
    }

    #[test]
    fn an_envelope_that_is_not_utf8_is_an_error_reply_naming_the_byte() {
        let mut bytes = ENVELOPE.as_bytes().to_vec();
        let at = ENVELOPE.find('ä').expect("the action has an umlaut");
        bytes[at] = 0xff;
        let expected = format!(
            "cannot read `authorize` input: not UTF-8: invalid utf-8 sequence of 1 bytes from index {at}"
        );
        assert_eq!(
            reply(Hook::Authorize, &bytes),
            serde_json::json!({ "error": expected })
        );
        assert_eq!(
            reply(Hook::ValidateSettings, &bytes),
            serde_json::json!({
                "error": expected.replace("`authorize`", "`validate_settings`")
            })
        );
    }
}
