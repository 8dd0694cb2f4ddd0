//! Who may call the host: operators and their API tokens.
//!
//! A token is a random secret shown once, when it is made; the store keeps
//! only its sha256. An operator token acts for its operator alone; an admin
//! token (no operator) creates operators and tokens and may act for any
//! operator.

use rulehost_sdk::wire::Timestamp;

use crate::error::{Error, Result};
use crate::store::TokenRecord;

/// What every token starts with, so leaked ones are easy to search for.
pub const TOKEN_PREFIX: &str = "rht_";

/// A fresh secret: the prefix and 32 random bytes in hex.
///
/// # Errors
///
/// [`Error::Store`] when the system has no randomness to give.
pub(crate) fn new_secret() -> Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::Store(format!("no randomness for a token: {e}")))?;
    Ok(format!("{TOKEN_PREFIX}{}", crate::audit::hex(&bytes)))
}

/// The hash a secret is stored under.
pub(crate) fn secret_hash(secret: &str) -> String {
    crate::cache::sha256_hex(secret.as_bytes())
}

/// Checks an operator id: 1 to 64 of `a-z`, `0-9`, `-`, `_`, so it is safe
/// in paths, metrics labels and file names.
///
/// # Errors
///
/// [`Error::InvalidOperatorId`] naming it.
pub fn check_operator_id(id: &str) -> Result<()> {
    let fine = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if fine {
        Ok(())
    } else {
        Err(Error::InvalidOperatorId(id.to_owned()))
    }
}

/// Why a presented token was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No token with that secret.
    Unknown,
    /// It was revoked.
    Revoked,
    /// Its time is up.
    Expired,
}

impl Refusal {
    /// For the caller.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Unknown => "the bearer token is not known",
            Refusal::Revoked => "the bearer token was revoked",
            Refusal::Expired => "the bearer token has expired",
        }
    }
}

/// A token's standing at `now`.
pub(crate) fn check(token: Option<TokenRecord>, now: Timestamp) -> Result<TokenRecord, Refusal> {
    let token = token.ok_or(Refusal::Unknown)?;
    if token.revoked_at.is_some() {
        return Err(Refusal::Revoked);
    }
    if token.expires_at.is_some_and(|end| end <= now) {
        return Err(Refusal::Expired);
    }
    Ok(token)
}
