//! Policy integrity: versions pinned by sha256, and signatures required by
//! operators that trust a key (or by the host for every operator).

use rulehost::wire::Actor;
use rulehost::{EngineConfig, Error, Host, Install, PolicyId, PolicySet};
use serde_json::json;

use crate::support::at;

const NOW: &str = "2026-11-22T10:00:00Z";

fn gym() -> &'static [u8] {
    rulehost::bundled::get("gym").unwrap()
}

fn sha256_of(host: &Host, wasm: &[u8]) -> String {
    host.engine()
        .load(PolicyId::new("probe", 0), wasm)
        .unwrap()
        .sha256()
        .to_owned()
}

/// Installs `wasm` as `gym@version` for `acme` with `signature`.
fn install_signed(
    host: &Host,
    version: u32,
    wasm: &[u8],
    signature: Option<&str>,
) -> rulehost::Result<PolicySet> {
    let install = Install {
        id: PolicyId::new("gym", version),
        wasm,
        signature,
        settings: &json!({}),
        activate: false,
    };
    host.install_with("acme", install, &Actor::system("ci"), at(NOW))
}

#[test]
fn an_operator_that_trusts_a_key_installs_only_modules_signed_by_it() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::open(dir.path().join("signed.db"), EngineConfig::default()).unwrap();
    let by = Actor::system("ci");
    let now = at(NOW);
    let (seed, public) = rulehost::integrity::new_key().unwrap();
    let (other_seed, _) = rulehost::integrity::new_key().unwrap();
    assert_eq!(rulehost::integrity::public_key_of(&seed).unwrap(), public);

    // Before a key is trusted, unsigned installs are fine.
    host.install("acme", PolicyId::new("gym", 1), gym(), &json!({}), &by, now)
        .unwrap();
    host.trust_key("acme", &public, &by, now).unwrap();
    assert_eq!(host.trusted_keys("acme").unwrap(), vec![public.clone()]);

    let unsigned = host
        .install("acme", PolicyId::new("gym", 2), gym(), &json!({}), &by, now)
        .unwrap_err();
    assert!(matches!(unsigned, Error::SignatureRequired { .. }));
    assert_eq!(
        unsigned.to_string(),
        "operator `acme` requires signed policy sets: `gym@2` has no signature"
    );

    let sha256 = sha256_of(&host, gym());
    let signature = rulehost::integrity::sign(&seed, &sha256).unwrap();
    install_signed(&host, 2, gym(), Some(&signature)).unwrap();

    // The same signature on another module: tampered.
    let tampered = rulehost::bundled::get("subscription").unwrap();
    let error = install_signed(&host, 3, tampered, Some(&signature)).unwrap_err();
    let tampered_sha = sha256_of(&host, tampered);
    assert_eq!(
        error.to_string(),
        format!(
            "the signature of `gym@3` for operator `acme` is refused: the signature does not match module sha256 `{tampered_sha}` under any of the 1 trusted key(s): the module was changed or signed by another key"
        )
    );
    // Signed by a key the operator does not trust.
    let foreign = rulehost::integrity::sign(&other_seed, &sha256).unwrap();
    let error = install_signed(&host, 3, gym(), Some(&foreign)).unwrap_err();
    assert!(matches!(error, Error::SignatureInvalid { .. }), "{error}");
    // Not a signature at all.
    let error = install_signed(&host, 3, gym(), Some("abc")).unwrap_err();
    assert!(
        error
            .to_string()
            .ends_with("signature `abc` is not 128 hex characters"),
        "{error}"
    );
    // Nothing refused was stored.
    let versions: Vec<String> = host
        .policy_versions("acme")
        .unwrap()
        .iter()
        .map(|v| v.id.to_string())
        .collect();
    assert_eq!(versions.len(), 2, "{versions:?}");
    // A key that is not one.
    let error = host.trust_key("acme", "xyz", &by, now).unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid key: public key `xyz` is not 64 hex characters"
    );
}

#[test]
fn the_host_can_require_signatures_of_every_operator() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::open(dir.path().join("required.db"), EngineConfig::default()).unwrap();
    let by = Actor::system("ci");
    let now = at(NOW);
    host.require_signatures(true);
    let error = host
        .install("acme", PolicyId::new("gym", 1), gym(), &json!({}), &by, now)
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "operator `acme` requires signed policy sets: `gym@1` has no signature and the operator trusts no key yet"
    );
    let (seed, public) = rulehost::integrity::new_key().unwrap();
    host.trust_key("acme", &public, &by, now).unwrap();
    let signature = rulehost::integrity::sign(&seed, &sha256_of(&host, gym())).unwrap();
    install_signed(&host, 1, gym(), Some(&signature)).unwrap();
}

#[test]
fn a_stored_module_that_no_longer_matches_its_pinned_sha256_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pinned.db");
    let by = Actor::system("ci");
    let now = at(NOW);
    let pinned;
    {
        let host = Host::open(&path, EngineConfig::default()).unwrap();
        let id = PolicyId::new("gym", 1);
        pinned = host
            .install("acme", id.clone(), gym(), &json!({}), &by, now)
            .unwrap()
            .sha256()
            .to_owned();
        host.activate("acme", &id, &by, now).unwrap();
    }
    // Someone swaps the module in the database file.
    let swapped = rulehost::bundled::get("subscription").unwrap();
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute("UPDATE policy_versions SET wasm = ?1", [swapped])
        .unwrap();
    let error = Host::open(&path, EngineConfig::default()).unwrap_err();
    let host_probe = Host::open(dir.path().join("probe.db"), EngineConfig::default()).unwrap();
    let found = sha256_of(&host_probe, swapped);
    assert_eq!(
        error.to_string(),
        format!(
            "policy `gym@1` of operator `acme` no longer matches its pinned sha256 `{pinned}` (the store holds a module with sha256 `{found}`)"
        )
    );
}
