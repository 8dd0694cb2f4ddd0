#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 30) from its regression
# inputs; exits non-zero when a target crashes (libFuzzer then writes the
# input under fuzz/artifacts/: fix the bug and keep it in regressions/).
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-30}"
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
# cargo fuzz passes nightly flags; RUSTC_BOOTSTRAP lets the stable compiler
# take them. No sanitizer: the stable toolchain has no sanitizer runtimes.
export RUSTC_BOOTSTRAP=1
# The host's build script compiles the bundled policies; take the ones the
# workspace's own build compiled rather than compiling them again under
# fuzz/target.
: "${RULEHOST_POLICIES_TARGET_DIR:=${CARGO_TARGET_DIR:-$(cd .. && pwd)/target}/wasm-policies}"
export RULEHOST_POLICIES_TARGET_DIR
for target in policy_output request_body import_file; do
  work="$(mktemp -d)"
  echo "== fuzz $target for ${seconds}s"
  # 16 codegen units instead of cargo fuzz's 1: a shorter build for slower
  # runs (fuzz/README.md, "Build time").
  cargo fuzz run --sanitizer none --release --codegen-units 16 "$target" "$work" "regressions/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1 2>&1 \
    | grep -E '^(Done|stat::number_of_executed_units)|ERROR|panicked' || true
  rm -rf "$work"
  if ls artifacts/"$target"/crash-* >/dev/null 2>&1; then
    echo "fuzz target $target crashed: see fuzz/artifacts/$target" >&2
    exit 1
  fi
done
