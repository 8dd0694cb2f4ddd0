//! Policy integrity: every installed version is pinned by the sha256 of
//! its module, and an operator may require that modules are signed.
//!
//! A signature is ed25519 over the text `rulehost-policy-v1:` followed by
//! the module's sha256 in lowercase hex (the sha256 of the binary, after a
//! `.wat` text is translated). Keys and signatures are written in lowercase
//! hex: a public key is 64 characters, a signature 128, a signing key's seed
//! 64.

use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};

/// What is signed for a module with this sha256.
pub fn signed_message(sha256: &str) -> Vec<u8> {
    format!("rulehost-policy-v1:{sha256}").into_bytes()
}

fn decode_hex<const N: usize>(text: &str, what: &str) -> Result<[u8; N], String> {
    let text = text.trim();
    if text.len() != N * 2 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{what} `{text}` is not {} hex characters", N * 2));
    }
    let mut bytes = [0u8; N];
    for (index, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[index * 2..index * 2 + 2], 16)
            .map_err(|e| format!("{what} `{text}`: {e}"))?;
    }
    Ok(bytes)
}

/// Checks a public key written in hex.
///
/// # Errors
///
/// A message naming the value.
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, String> {
    let bytes = decode_hex::<32>(text, "public key")?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| format!("public key `{text}`: {e}"))
}

/// A new signing key: its seed and its public key, in hex.
///
/// # Errors
///
/// A message when the system has no randomness to give.
pub fn new_key() -> Result<(String, String), String> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| format!("no randomness for a key: {e}"))?;
    let key = SigningKey::from_bytes(&seed);
    Ok((
        crate::audit::hex(&seed),
        crate::audit::hex(key.verifying_key().as_bytes()),
    ))
}

/// The public key of a signing key's seed.
///
/// # Errors
///
/// A message when the seed is not 64 hex characters.
pub fn public_key_of(seed: &str) -> Result<String, String> {
    let key = SigningKey::from_bytes(&decode_hex::<32>(seed, "signing key")?);
    Ok(crate::audit::hex(key.verifying_key().as_bytes()))
}

/// Signs the module with this sha256; the signature in hex.
///
/// # Errors
///
/// A message when the seed is not 64 hex characters.
pub fn sign(seed: &str, sha256: &str) -> Result<String, String> {
    let key = SigningKey::from_bytes(&decode_hex::<32>(seed, "signing key")?);
    Ok(crate::audit::hex(
        &key.sign(&signed_message(sha256)).to_bytes(),
    ))
}

/// Checks `signature` over the module with this sha256 against the trusted
/// keys; the key that signed.
///
/// # Errors
///
/// Why the signature is not accepted.
pub(crate) fn verify(trusted: &[String], sha256: &str, signature: &str) -> Result<String, String> {
    let signature = Signature::from_bytes(&decode_hex::<64>(signature, "signature")?);
    let message = signed_message(sha256);
    for key in trusted {
        let Ok(public) = parse_public_key(key) else {
            continue;
        };
        if public.verify(&message, &signature).is_ok() {
            return Ok(key.clone());
        }
    }
    Err(format!(
        "the signature does not match module sha256 `{sha256}` under any of the {} trusted key(s): the module was changed or signed by another key",
        trusted.len()
    ))
}
