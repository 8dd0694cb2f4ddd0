//! Builds every policy set under `policies/` for `wasm32-unknown-unknown`, so
//! the host bundles them (`rulehost::bundled`) and the tests load the
//! compiled `.wasm`. The target is added with `rustup` when it is missing:
//! a fresh machine has only the host target, and `rust-toolchain.toml`
//! alone does not fetch targets when `RUSTUP_AUTO_INSTALL=0`.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, exit};

const WASM_TARGET: &str = "wasm32-unknown-unknown";

/// Where the policies are built, when set; see [`policies_target_dir`].
const POLICIES_TARGET_DIR: &str = "RULEHOST_POLICIES_TARGET_DIR";

/// Variables a build script inherits from the outer cargo that would change
/// or break the nested wasm build. With `RUSTC_BOOTSTRAP`, which
/// `fuzz/run.sh` sets, the modules were compiled again and came out a few
/// KB different from the release build's.
const OUTER_BUILD_VARIABLES: [&str; 11] = [
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "RUSTFLAGS",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_LLVM_COV",
    "CARGO_INCREMENTAL",
    "RUSTC_BOOTSTRAP",
];

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest_dir
        .parent()
        .expect("host/ sits in the workspace")
        .to_path_buf();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));

    println!("cargo:rerun-if-env-changed={POLICIES_TARGET_DIR}");
    for watched in [
        "sdk/src",
        "sdk/Cargo.toml",
        "policies",
        "Cargo.lock",
        ".cargo/config.toml",
    ] {
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join(watched).display()
        );
    }

    let flavours = policy_crates(&workspace.join("policies"));
    if let Err(message) =
        ensure_wasm_target().and_then(|()| build_policies(&workspace, &out_dir, &flavours))
    {
        eprintln!("error: {message}");
        exit(1);
    }
}

/// `(flavour, package name)` of every crate in `policies/`, sorted.
fn policy_crates(dir: &Path) -> Vec<(String, String)> {
    let mut crates: Vec<(String, String)> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|entry| entry.path().join("Cargo.toml").is_file())
                .map(|entry| {
                    let flavour = entry.file_name().to_string_lossy().into_owned();
                    let package = format!("rulehost-policy-{flavour}");
                    (flavour, package)
                })
                .collect()
        })
        .unwrap_or_default();
    crates.sort();
    crates
}

fn ensure_wasm_target() -> Result<(), String> {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| format!("cannot run `{rustc}`: {e}"))?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if sysroot.join("lib/rustlib").join(WASM_TARGET).is_dir() {
        return Ok(());
    }
    println!(
        "cargo:warning=installing the `{WASM_TARGET}` target with rustup to build the policies"
    );
    let status = Command::new("rustup")
        .args(["target", "add", WASM_TARGET])
        .status()
        .map_err(|e| {
            format!("the `{WASM_TARGET}` target is missing and `rustup` cannot run: {e}")
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "`rustup target add {WASM_TARGET}` failed with {status}"
        ))
    }
}

/// The nested build's target directory: `RULEHOST_POLICIES_TARGET_DIR`
/// when set (a relative path is taken from the workspace), otherwise
/// `wasm-policies` in the outer target directory (the nearest directory
/// above `OUT_DIR` that cargo tagged with `CACHEDIR.TAG`). One directory
/// for every profile and command: the release tests, `cargo clippy` and
/// `cargo doc` all build the same modules, so only the first of them
/// compiles them; cargo's lock on the directory keeps two builds at once
/// apart. Inside `OUT_DIR` when there is no tagged directory.
fn policies_target_dir(workspace: &Path, out_dir: &Path) -> PathBuf {
    if let Some(dir) = env::var_os(POLICIES_TARGET_DIR).filter(|dir| !dir.is_empty()) {
        return workspace.join(dir);
    }
    out_dir
        .ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .map_or_else(
            || out_dir.join("policies-target"),
            |target| target.join("wasm-policies"),
        )
}

fn build_policies(
    workspace: &Path,
    out_dir: &Path,
    flavours: &[(String, String)],
) -> Result<(), String> {
    let target_dir = policies_target_dir(workspace, out_dir);
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(&cargo);
    command
        .current_dir(workspace)
        .args([
            "build",
            "--release",
            "--target",
            WASM_TARGET,
            "--target-dir",
        ])
        .arg(&target_dir)
        // Policies ship without debug info and symbol names: smaller modules
        // compile faster in the host.
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "true")
        .env("CARGO_PROFILE_RELEASE_LTO", "true")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1");
    for (_, package) in flavours {
        command.args(["-p", package]);
    }
    for variable in OUTER_BUILD_VARIABLES {
        command.env_remove(variable);
    }
    let status = command
        .status()
        .map_err(|e| format!("cannot run `{cargo}`: {e}"))?;
    if !status.success() {
        return Err(format!(
            "building the policies for `{WASM_TARGET}` failed with {status}"
        ));
    }

    let mut bundled = String::from(
        "/// Every bundled policy set: `(flavour, compiled module)`.\npub const ALL: &[(&str, &[u8])] = &[\n",
    );
    for (flavour, package) in flavours {
        let built = target_dir
            .join(WASM_TARGET)
            .join("release")
            .join(format!("{}.wasm", package.replace('-', "_")));
        let copy = out_dir.join(format!("{flavour}.wasm"));
        fs::copy(&built, &copy).map_err(|e| format!("cannot copy `{}`: {e}", built.display()))?;
        writeln!(
            bundled,
            "    ({flavour:?}, include_bytes!({:?})),",
            copy.display().to_string()
        )
        .expect("writing to a string");
    }
    bundled.push_str("];\n");
    fs::write(out_dir.join("bundled.rs"), bundled)
        .map_err(|e| format!("cannot write bundled.rs: {e}"))
}
