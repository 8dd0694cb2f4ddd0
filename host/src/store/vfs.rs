//! A thin SQLite VFS over the platform's default one that gathers the
//! writes to a WAL file into a few large ones.
//!
//! SQLite appends each page of a commit to the WAL with two writes (a 24
//! byte frame header, then the page), so a batch of a few locks makes about
//! eighty `pwrite` calls before its one fsync. This VFS keeps consecutive
//! writes to a WAL file in memory and hands them to the file in writes of
//! up to 64 KiB before anything can depend on them: before every other call
//! on the file (a sync, a read, a truncation, a size query, a lock, a file
//! control, a close...) but the two that report its sector size and device
//! characteristics, and whenever a write does not continue the gathered
//! run. Each call then goes to the default VFS unchanged; of the VFS-level
//! methods only `xOpen` is this one's own (deleting a file, for example, is
//! the default VFS's). Writes to the database file itself are not gathered.
//!
//! A commit publishes its frames to other connections (the WAL index) only
//! after syncing the WAL when `synchronous` is `FULL`, which every
//! connection of the store sets (`sqlite::connect`). With a weaker setting
//! another connection could be told of frames still gathered here, so the
//! store must never use this VFS with one.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::mem::{align_of, size_of};
use std::ptr;
use std::sync::OnceLock;

use rusqlite::ffi;

/// The VFS's registered name, passed when a connection is opened.
pub(super) const NAME: &CStr = c"rulehost";

/// Gathered bytes go to the file once they reach this size.
const MAX_GATHERED: usize = 1 << 20;

/// The most bytes handed to the default VFS in one write: its unix version
/// takes at most 128 KiB - 1 per call (SQLite never writes more than one
/// 64 KiB page plus a frame header at once).
const MAX_WRITE: usize = 64 << 10;

/// The default VFS this one forwards to (its address), once registered.
static BASE: OnceLock<Result<usize, String>> = OnceLock::new();

/// What this VFS keeps for an open file. SQLite allocates `szOsFile` bytes
/// for it; the default VFS's own file follows at [`REAL_OFFSET`].
#[repr(C)]
struct File {
    /// SQLite's view of the file: must come first.
    base: ffi::sqlite3_file,
    /// The methods `base` points to, at the default VFS's table version.
    methods: ffi::sqlite3_io_methods,
    /// The default VFS's file.
    real: *mut ffi::sqlite3_file,
    /// Consecutive writes not yet handed to `real`; only for WAL files.
    gathered: Option<Gathered>,
}

struct Gathered {
    /// The file offset of `bytes[0]`.
    at: i64,
    bytes: Vec<u8>,
}

/// Where the default VFS's file starts inside ours.
const REAL_OFFSET: usize = size_of::<File>().next_multiple_of(align_of::<u64>());

/// Registers the VFS as [`NAME`], once per process.
///
/// # Errors
///
/// When SQLite has no default VFS or refuses the registration.
pub(super) fn register() -> Result<(), String> {
    let base = BASE.get_or_init(|| {
        // SAFETY: `sqlite3_vfs_find` and `sqlite3_vfs_register` are
        // thread-safe; the registered struct is leaked, so it lives as long
        // as the process, as SQLite requires.
        unsafe {
            let base = ffi::sqlite3_vfs_find(ptr::null());
            if base.is_null() {
                return Err("SQLite has no default VFS".to_owned());
            }
            let size = i32::try_from(REAL_OFFSET)
                .ok()
                .and_then(|own| own.checked_add((*base).szOsFile))
                .ok_or_else(|| "the default VFS's file is too large".to_owned())?;
            let vfs = Box::leak(Box::new(ffi::sqlite3_vfs {
                szOsFile: size,
                pNext: ptr::null_mut(),
                zName: NAME.as_ptr(),
                xOpen: Some(open),
                ..*base
            }));
            match ffi::sqlite3_vfs_register(vfs, 0) {
                ffi::SQLITE_OK => Ok(base as usize),
                code => Err(format!("SQLite refused the rulehost VFS (code {code})")),
            }
        }
    });
    base.as_ref().map(|_| ()).map_err(Clone::clone)
}

fn base_vfs() -> *mut ffi::sqlite3_vfs {
    match BASE.get() {
        Some(Ok(address)) => *address as *mut ffi::sqlite3_vfs,
        _ => ptr::null_mut(),
    }
}

unsafe extern "C" fn open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let base = base_vfs();
    // SAFETY: SQLite hands `szOsFile` bytes at `file`, aligned for any
    // type, so the default VFS's file fits at `REAL_OFFSET`; `base` is the
    // registered default VFS, whose `xOpen` SQLite always provides.
    unsafe {
        let real = file
            .cast::<u8>()
            .add(REAL_OFFSET)
            .cast::<ffi::sqlite3_file>();
        (*real).pMethods = ptr::null();
        (*file).pMethods = ptr::null();
        let Some(base_open) = base.as_ref().and_then(|base| base.xOpen) else {
            return ffi::SQLITE_CANTOPEN;
        };
        let rc = base_open(base, name, real, flags, out_flags);
        let real_methods = (*real).pMethods;
        if rc != ffi::SQLITE_OK || real_methods.is_null() {
            if let Some(close) = real_methods.as_ref().and_then(|m| m.xClose) {
                close(real);
            }
            return if rc == ffi::SQLITE_OK {
                ffi::SQLITE_CANTOPEN
            } else {
                rc
            };
        }
        let own = file.cast::<File>();
        own.write(File {
            base: ffi::sqlite3_file {
                pMethods: ptr::null(),
            },
            methods: ffi::sqlite3_io_methods {
                iVersion: (*real_methods).iVersion.min(METHODS.iVersion),
                ..METHODS
            },
            real,
            gathered: (flags & ffi::SQLITE_OPEN_WAL != 0).then(|| Gathered {
                at: 0,
                bytes: Vec::new(),
            }),
        });
        (*own).base.pMethods = &raw const (*own).methods;
        ffi::SQLITE_OK
    }
}

const METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: Some(shm_map),
    xShmLock: Some(shm_lock),
    xShmBarrier: Some(shm_barrier),
    xShmUnmap: Some(shm_unmap),
    xFetch: Some(fetch),
    xUnfetch: Some(unfetch),
};

impl File {
    /// The file behind an `sqlite3_file` SQLite hands a method.
    ///
    /// # Safety
    ///
    /// `file` must have been opened by [`open`] and not yet closed.
    unsafe fn of<'a>(file: *mut ffi::sqlite3_file) -> &'a mut File {
        // SAFETY: as the caller guarantees.
        unsafe { &mut *file.cast::<File>() }
    }

    /// The default VFS's methods for this file.
    fn real_methods(&self) -> &ffi::sqlite3_io_methods {
        // SAFETY: `open` checked the pointer, and the default VFS keeps its
        // methods table alive while the file is open.
        unsafe { &*(*self.real).pMethods }
    }

    /// Hands the gathered writes to the file.
    fn flush(&mut self) -> c_int {
        let Some(mut gathered) = self.gathered.take() else {
            return ffi::SQLITE_OK;
        };
        let mut rc = ffi::SQLITE_OK;
        for (i, chunk) in gathered.bytes.chunks(MAX_WRITE).enumerate() {
            let at = gathered.at + (i * MAX_WRITE) as i64;
            rc = self.write_through(chunk.as_ptr().cast(), chunk.len(), at);
            if rc != ffi::SQLITE_OK {
                break;
            }
        }
        // What failed to reach the file is dropped either way; SQLite
        // learns of it from `rc`. The allocation stays for the next run.
        gathered.bytes.clear();
        self.gathered = Some(gathered);
        rc
    }

    fn write_through(&mut self, data: *const c_void, len: usize, at: i64) -> c_int {
        let Ok(amount) = c_int::try_from(len) else {
            return ffi::SQLITE_IOERR_WRITE;
        };
        match self.real_methods().xWrite {
            // SAFETY: `data` holds `len` bytes; `real` is open.
            Some(write) => unsafe { write(self.real, data, amount, at) },
            None => ffi::SQLITE_IOERR_WRITE,
        }
    }
}

/// Defines each `$name` as a method that flushes the gathered writes, then
/// calls the default VFS's `$method` with the same arguments, or answers
/// `$missing` when the default VFS has no such method.
macro_rules! forwarding {
    ($($name:ident($($arg:ident: $ty:ty),*) => $method:ident or $missing:expr;)*) => {$(
        unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file $(, $arg: $ty)*) -> c_int {
            // SAFETY: SQLite calls methods only on files `open` opened.
            let own = unsafe { File::of(file) };
            let rc = own.flush();
            if rc != ffi::SQLITE_OK {
                return rc;
            }
            match own.real_methods().$method {
                // SAFETY: `real` is open; the arguments are SQLite's own.
                Some(method) => unsafe { method(own.real $(, $arg)*) },
                None => $missing,
            }
        }
    )*};
}

forwarding! {
    read(buf: *mut c_void, amount: c_int, offset: i64) => xRead or ffi::SQLITE_IOERR_READ;
    truncate(size: i64) => xTruncate or ffi::SQLITE_IOERR_TRUNCATE;
    sync(flags: c_int) => xSync or ffi::SQLITE_IOERR_FSYNC;
    file_size(size: *mut i64) => xFileSize or ffi::SQLITE_IOERR_FSTAT;
    lock(level: c_int) => xLock or ffi::SQLITE_IOERR_LOCK;
    unlock(level: c_int) => xUnlock or ffi::SQLITE_IOERR_UNLOCK;
    check_reserved_lock(out: *mut c_int) => xCheckReservedLock
        or ffi::SQLITE_IOERR_CHECKRESERVEDLOCK;
    file_control(op: c_int, arg: *mut c_void) => xFileControl or ffi::SQLITE_NOTFOUND;
    shm_map(region: c_int, size: c_int, extend: c_int, out: *mut *mut c_void) => xShmMap
        or ffi::SQLITE_IOERR_SHMMAP;
    shm_lock(offset: c_int, n: c_int, flags: c_int) => xShmLock or ffi::SQLITE_IOERR_SHMLOCK;
    shm_unmap(delete: c_int) => xShmUnmap or ffi::SQLITE_OK;
    fetch(offset: i64, amount: c_int, out: *mut *mut c_void) => xFetch or {
        // No memory map: SQLite reads with `xRead` instead.
        // SAFETY: SQLite passes a valid out pointer.
        unsafe { *out = ptr::null_mut() };
        ffi::SQLITE_OK
    };
    unfetch(offset: i64, page: *mut c_void) => xUnfetch or ffi::SQLITE_OK;
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite closes only files `open` opened, once.
    let own = unsafe { File::of(file) };
    let flushed = own.flush();
    let closed = match own.real_methods().xClose {
        // SAFETY: `real` is open and closed only here.
        Some(close) => unsafe { close(own.real) },
        None => ffi::SQLITE_OK,
    };
    // SAFETY: `open` wrote the `File`; nothing uses it after this.
    unsafe { ptr::drop_in_place(file.cast::<File>()) };
    if flushed == ffi::SQLITE_OK {
        closed
    } else {
        flushed
    }
}

unsafe extern "C" fn write(
    file: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: SQLite calls methods only on files `open` opened.
    let own = unsafe { File::of(file) };
    let Ok(len) = usize::try_from(amount) else {
        return ffi::SQLITE_IOERR_WRITE;
    };
    let Some(gathered) = own.gathered.as_mut() else {
        return own.write_through(buf, len, offset);
    };
    let continues = gathered.bytes.is_empty()
        || gathered.at + gathered.bytes.len() as i64 == offset
            && gathered.bytes.len() + len <= MAX_GATHERED;
    if !continues {
        let rc = own.flush();
        if rc != ffi::SQLITE_OK {
            return rc;
        }
    }
    if len > MAX_WRITE {
        return own.write_through(buf, len, offset);
    }
    let Some(gathered) = own.gathered.as_mut() else {
        return ffi::SQLITE_IOERR_WRITE;
    };
    if gathered.bytes.is_empty() {
        gathered.at = offset;
    }
    // SAFETY: SQLite passes `amount` readable bytes at `buf`.
    let data = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) };
    gathered.bytes.extend_from_slice(data);
    ffi::SQLITE_OK
}

unsafe extern "C" fn sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite calls methods only on files `open` opened.
    let own = unsafe { File::of(file) };
    match own.real_methods().xSectorSize {
        // SAFETY: `real` is open.
        Some(method) => unsafe { method(own.real) },
        None => 4096,
    }
}

unsafe extern "C" fn device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite calls methods only on files `open` opened.
    let own = unsafe { File::of(file) };
    match own.real_methods().xDeviceCharacteristics {
        // SAFETY: `real` is open.
        Some(method) => unsafe { method(own.real) },
        None => 0,
    }
}

unsafe extern "C" fn shm_barrier(file: *mut ffi::sqlite3_file) {
    // SAFETY: SQLite calls methods only on files `open` opened.
    let own = unsafe { File::of(file) };
    if let Some(method) = own.real_methods().xShmBarrier {
        // SAFETY: `real` is open.
        unsafe { method(own.real) }
    }
}
