//! Write rulehost lifecycle policies in Rust.
//!
//! A policy is a type implementing [`Policy`], with one method per hook;
//! hooks it leaves out answer with a safe refusal. One macro,
//! [`export_policy!`], turns it into a WebAssembly module the host can load.
//! Allocation, pointers, JSON framing and the ABI version marker stay inside
//! this crate (`ABI.md` documents them for authors in other languages).
//!
//! ```
//! use rulehost_sdk::wire::{AuthorizeDecision, AuthorizeInput};
//! use rulehost_sdk::{Context, Policy};
//!
//! pub struct NoLockedOrders;
//!
//! impl Policy for NoLockedOrders {
//!     type Settings = ();
//!
//!     fn authorize(ctx: &Context<()>, input: &AuthorizeInput) -> AuthorizeDecision {
//!         if input.action == "order" && input.subject.is_locked(ctx.now) {
//!             AuthorizeDecision::deny("customer_locked", "the customer is locked")
//!         } else {
//!             AuthorizeDecision::Allow
//!         }
//!     }
//! }
//!
//! rulehost_sdk::export_policy!(NoLockedOrders);
//! ```
//!
//! The same crate unit-tests natively with `cargo test`: call the trait
//! methods directly, or run JSON cases with [`testing`].

#![warn(missing_docs)]

pub mod periods;
pub mod settings;
pub mod testing;
pub mod wire;

#[cfg(all(target_arch = "wasm32", feature = "allocator"))]
mod allocator;
mod dispatch;

use serde::de::DeserializeOwned;

use wire::{
    Authorize, AuthorizeDecision, AuthorizeInput, Billing, BillingDecision, BillingInput, HookKind,
    Timestamp, Transition, TransitionDecision, TransitionInput,
};

/// What every hook call gets besides its input.
#[derive(Clone, Debug, PartialEq)]
pub struct Context<S> {
    /// The host's clock at the time of the request. A policy has no other
    /// clock: the same input always gives the same decision.
    pub now: Timestamp,
    /// The operator's settings, validated when they were installed.
    pub settings: S,
}

/// A policy set: one method per hook. Every method has a safe default, so a
/// policy implements only the hooks it decides.
pub trait Policy {
    /// The operator settings this policy reads, decoded from the operator's
    /// JSON settings (`{}` when the operator set none).
    type Settings: DeserializeOwned;

    /// Checks settings when an operator installs them; each error names the
    /// field and the offending value. Settings that fail to decode into
    /// [`Policy::Settings`] are refused before this is called.
    ///
    /// # Errors
    ///
    /// One message per problem found. The default accepts any settings that
    /// decode.
    fn validate_settings(settings: &Self::Settings) -> Result<(), Vec<String>> {
        let _ = settings;
        Ok(())
    }

    /// May `input.action` run on `input.subject` now? The default denies.
    fn authorize(ctx: &Context<Self::Settings>, input: &AuthorizeInput) -> AuthorizeDecision {
        let _ = (ctx, input);
        not_implemented::<Authorize>()
    }

    /// Should billing proceed for this contract now? The default skips.
    fn billing(ctx: &Context<Self::Settings>, input: &BillingInput) -> BillingDecision {
        let _ = (ctx, input);
        not_implemented::<Billing>()
    }

    /// What happens when an action runs? The default refuses the transition.
    fn transition(ctx: &Context<Self::Settings>, input: &TransitionInput) -> TransitionDecision {
        let _ = (ctx, input);
        not_implemented::<Transition>()
    }
}

fn not_implemented<H: HookKind>() -> H::Output {
    H::refusal(
        "hook_not_implemented",
        format!("the policy does not implement hook `{}`", H::HOOK),
    )
}

/// Exports a [`Policy`] as a rulehost policy module (ABI v1).
///
/// Use it once per policy crate, at the crate root, with the policy's type.
/// On `wasm32` it emits the module's exports; on other targets it emits
/// nothing, so the crate still builds and tests natively.
#[macro_export]
macro_rules! export_policy {
    ($policy:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            #[unsafe(no_mangle)]
            extern "C" fn rulehost_abi_version() -> i32 {
                $crate::wire::ABI_VERSION
            }

            #[unsafe(no_mangle)]
            extern "C" fn rulehost_alloc(len: u32) -> u32 {
                $crate::__private::alloc(len)
            }

            #[unsafe(no_mangle)]
            extern "C" fn rulehost_authorize(ptr: u32, len: u32) -> u64 {
                // SAFETY: the host passes a buffer it got from `rulehost_alloc`.
                unsafe {
                    $crate::__private::call::<$policy>($crate::wire::Hook::Authorize, ptr, len)
                }
            }

            #[unsafe(no_mangle)]
            extern "C" fn rulehost_billing(ptr: u32, len: u32) -> u64 {
                // SAFETY: as above.
                unsafe { $crate::__private::call::<$policy>($crate::wire::Hook::Billing, ptr, len) }
            }

            #[unsafe(no_mangle)]
            extern "C" fn rulehost_transition(ptr: u32, len: u32) -> u64 {
                // SAFETY: as above.
                unsafe {
                    $crate::__private::call::<$policy>($crate::wire::Hook::Transition, ptr, len)
                }
            }

            #[unsafe(no_mangle)]
            extern "C" fn rulehost_validate_settings(ptr: u32, len: u32) -> u64 {
                // SAFETY: as above.
                unsafe {
                    $crate::__private::call::<$policy>(
                        $crate::wire::Hook::ValidateSettings,
                        ptr,
                        len,
                    )
                }
            }
        };
    };
}

/// Glue used by [`export_policy!`] and by hosts that run a policy natively
/// (benchmarks, tests). Not part of the stable API.
#[doc(hidden)]
pub mod __private {
    pub use crate::dispatch::{alloc, call};
}

pub use dispatch::handle_json;
