//! The fuzz targets' regression inputs (`fuzz/regressions/<target>/`):
//! inputs that once crashed a decoder, and edge cases kept as seeds. Each
//! must be answered without a panic.

use std::path::PathBuf;

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/regressions")
        .join(target);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "{} has inputs", dir.display());
    inputs
}

fn run(target: &str, decode: fn(&[u8])) {
    for (path, bytes) in inputs(target) {
        if std::panic::catch_unwind(|| decode(&bytes)).is_err() {
            panic!("`{}` panicked on {}", target, path.display());
        }
    }
}

#[test]
fn policy_output_regressions_decode_without_panicking() {
    run("policy_output", rulehost::fuzzing::policy_output);
}

#[test]
fn request_body_regressions_decode_without_panicking() {
    run("request_body", rulehost::fuzzing::request_body);
}

#[test]
fn import_file_regressions_parse_without_panicking() {
    run("import_file", rulehost::fuzzing::import_file);
}
