//! Compiled modules on disk, so a restart does not recompile.
//!
//! A file is named after the sha256 of the wasm binary and a hash of
//! everything in the engine configuration that affects compiled code
//! (wasmtime's compatibility hash, which covers its version and settings,
//! and the version and budget of the CPU metering added at load).
//! A compiled module is machine code that is loaded without validation, so
//! the directory is created private (mode 0700) and not used at all while
//! another user owns it or may write to it.
//!
//! Every load from the cache refreshes the file's modification time, so that
//! [`ModuleCache::prune`] can remove what has not been used for a while:
//! the modules of versions nobody runs any more, and those compiled by an
//! earlier wasmtime or engine configuration.

use std::collections::HashSet;
use std::fs;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use wasmtime::Module;

/// Feeds `Hash` implementations into sha256, for a key that is stable across
/// processes (unlike `DefaultHasher`'s, which is not promised to be).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        u64::from_le_bytes(digest[..8].try_into().expect("sha256 has 32 bytes"))
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// Where compiled modules of one engine configuration are kept.
#[derive(Debug, Clone)]
pub(crate) struct ModuleCache {
    dir: PathBuf,
    config_key: String,
}

impl ModuleCache {
    /// The cache of modules compiled by `engine`, instrumented for a CPU
    /// budget of `fuel` (which a module's start function runs under).
    pub fn new(dir: &Path, engine: &wasmtime::Engine, fuel: u64) -> Self {
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        (crate::meter::VERSION, fuel).hash(&mut hasher);
        let config_key = crate::audit::hex(&hasher.0.finalize()[..8]);
        ModuleCache {
            dir: dir.to_path_buf(),
            config_key,
        }
    }

    fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}-{}.cwasm", self.config_key))
    }

    /// The cached module, if there is a usable one in a private directory.
    pub fn get(&self, engine: &wasmtime::Engine, sha256: &str) -> Option<Module> {
        let path = self.path(sha256);
        if !path.is_file() {
            return None;
        }
        if let Err(warning) = private(&self.dir) {
            eprintln!("warning: module cache: {warning}");
            return None;
        }
        // SAFETY: files in the cache directory are written only by `put`,
        // from `Module::serialize` of the same engine configuration (the
        // name carries its hash); wasmtime still checks the header.
        let module = unsafe { Module::deserialize_file(engine, &path) }.ok()?;
        touch(&path);
        Some(module)
    }

    /// Stores a compiled module. A failure only costs a recompile later, so
    /// it is reported to the caller as a warning, not an error.
    pub fn put(&self, sha256: &str, module: &Module) -> Result<(), String> {
        let bytes = module.serialize().map_err(|e| e.to_string())?;
        let mut dir = fs::DirBuilder::new();
        dir.recursive(true);
        // Only the host's own user may put machine code here.
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut dir, 0o700);
        dir.create(&self.dir)
            .map_err(|e| format!("cannot create `{}`: {e}", self.dir.display()))?;
        private(&self.dir)?;
        let path = self.path(sha256);
        let partial = path.with_extension(format!("partial-{}", std::process::id()));
        fs::write(&partial, bytes)
            .and_then(|()| fs::rename(&partial, &path))
            .map_err(|e| format!("cannot write `{}`: {e}", path.display()))
    }
}

/// What [`ModuleCache::prune`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PrunedModules {
    /// The directory.
    pub dir: PathBuf,
    /// Files removed: compiled modules unused for longer than asked, and
    /// partial files that a write which never finished left behind.
    pub removed: usize,
    /// Their size in bytes.
    pub removed_bytes: u64,
    /// Compiled modules kept.
    pub kept: usize,
}

impl ModuleCache {
    /// Removes the files of this cache directory not used for `unused_for`:
    /// compiled modules (`*.cwasm`, of any engine configuration) by their
    /// last load, partial files by their writing. The modules in `in_use`
    /// (sha256s of this configuration) are kept and marked used now, so a
    /// host that runs for longer than `unused_for` keeps its own. Files of
    /// other names are not touched. A directory that does not exist yet has
    /// nothing to prune.
    pub fn prune(
        &self,
        unused_for: Duration,
        in_use: &HashSet<String>,
    ) -> Result<PrunedModules, String> {
        let mut pruned = PrunedModules {
            dir: self.dir.clone(),
            ..PrunedModules::default()
        };
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(pruned),
            Err(e) => return Err(format!("cannot read `{}`: {e}", self.dir.display())),
        };
        private(&self.dir)?;
        let before = SystemTime::now()
            .checked_sub(unused_for)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let this_configuration = format!("-{}.cwasm", self.config_key);
        for entry in entries {
            let entry = entry.map_err(|e| format!("cannot read `{}`: {e}", self.dir.display()))?;
            let path = entry.path();
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let module = name.strip_suffix(&this_configuration);
            if module.is_some_and(|sha256| in_use.contains(sha256)) {
                touch(&path);
                pruned.kept += 1;
                continue;
            }
            let ours = name.ends_with(".cwasm") || name.contains(".partial-");
            // A file that is gone meanwhile (another host pruned it) is skipped.
            let Ok(meta) = entry.metadata() else { continue };
            if !ours || !meta.is_file() {
                continue;
            }
            if meta.modified().is_ok_and(|at| at >= before) {
                pruned.kept += usize::from(name.ends_with(".cwasm"));
                continue;
            }
            match fs::remove_file(&path) {
                Ok(()) => {
                    pruned.removed += 1;
                    pruned.removed_bytes += meta.len();
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("cannot remove `{}`: {e}", path.display())),
            }
        }
        Ok(pruned)
    }
}

/// Marks a cached module used now. A failure only lets a prune remove it
/// early, which costs a recompile.
fn touch(path: &Path) {
    let _ = fs::File::open(path).and_then(|file| file.set_modified(SystemTime::now()));
}

/// Checks that only this process's user may write to `dir`: anyone else who
/// could would choose the machine code the host runs.
#[cfg(unix)]
fn private(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = fs::metadata(dir).map_err(|e| format!("cannot read `{}`: {e}", dir.display()))?;
    // SAFETY: `geteuid` has no preconditions and cannot fail.
    let user = unsafe { libc::geteuid() };
    if meta.uid() != user || meta.mode() & 0o022 != 0 {
        return Err(format!(
            "`{}` is not used: it belongs to user {} with mode {:o}, but must belong to user {user} and be writable by it alone",
            dir.display(),
            meta.uid(),
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn private(_: &Path) -> Result<(), String> {
    Ok(())
}

/// The sha256 of `bytes`, in lowercase hex.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    crate::audit::hex(&Sha256::digest(bytes))
}
