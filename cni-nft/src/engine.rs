//! Where an nft command runs: in this process through libnftables (the library `nft` itself
//! is a thin front end to) when it can be loaded, else by spawning `nft -j`.
//!
//! Spawning `nft` costs a fork, an exec and the dynamic loading of its libraries, about 2 ms
//! per call and most of a portmap ADD (see docs/performance.md); the same transaction
//! in-process takes about 0.1 ms. The library is opened at run time rather than linked, so a
//! node without it still gets the spawn path, and the plugin still starts.
//! `CNI_RS_NFT=spawn` forces the spawn path (for the benchmark and the tests of it).

use nftables::helper::{self, NftablesError};

/// Why a command did not run.
#[derive(Debug)]
pub enum RunError {
    /// Neither libnftables nor `nft` could be used: no rules of ours can exist either.
    Unavailable(String),
    /// nft ran the command and refused it.
    Failed(String),
}

/// Runs one JSON transaction.
pub fn apply_json(payload: &str) -> Result<(), RunError> {
    if let Some(lib) = in_process() {
        return lib.run(payload).map(drop);
    }
    match helper::apply_ruleset_raw(payload, None::<&str>, [] as [&str; 0]) {
        Ok(_) => Ok(()),
        Err(e) => Err(spawn_error(e)),
    }
}

/// Runs a listing command (`list table inet x`) and returns its JSON output.
pub fn list_json(args: &[&str]) -> Result<String, RunError> {
    if let Some(lib) = in_process() {
        return lib.run(&args.join(" "));
    }
    helper::get_current_ruleset_raw(None::<&str>, args.iter().copied()).map_err(spawn_error)
}

fn spawn_error(e: NftablesError) -> RunError {
    match e {
        NftablesError::NftExecution { inner, .. } => {
            RunError::Unavailable(format!("nft not available ({inner})"))
        }
        NftablesError::NftFailed { stderr, .. } => RunError::Failed(stderr.trim().to_owned()),
        other => RunError::Failed(other.to_string()),
    }
}

fn in_process() -> Option<&'static ffi::Lib> {
    static LIB: std::sync::OnceLock<Option<ffi::Lib>> = std::sync::OnceLock::new();
    LIB.get_or_init(|| {
        if std::env::var("CNI_RS_NFT").is_ok_and(|v| v == "spawn") {
            return None;
        }
        ffi::Lib::open()
    })
    .as_ref()
}

/// The few libnftables entry points we use (stable since nftables 0.9.x, `libnftables.so.1`).
#[allow(unsafe_code)]
mod ffi {
    use std::ffi::{CStr, CString, c_char, c_int, c_uint, c_void};

    use super::RunError;

    /// NFT_CTX_OUTPUT_JSON: JSON output, and JSON accepted as input.
    const OUTPUT_JSON: c_uint = 1 << 4;

    type Ctx = *mut c_void;

    #[derive(Debug)]
    pub struct Lib {
        ctx_new: unsafe extern "C" fn(u32) -> Ctx,
        ctx_free: unsafe extern "C" fn(Ctx),
        output_set_flags: unsafe extern "C" fn(Ctx, c_uint),
        buffer_output: unsafe extern "C" fn(Ctx) -> c_int,
        buffer_error: unsafe extern "C" fn(Ctx) -> c_int,
        get_output: unsafe extern "C" fn(Ctx) -> *const c_char,
        get_error: unsafe extern "C" fn(Ctx) -> *const c_char,
        run_cmd: unsafe extern "C" fn(Ctx, *const c_char) -> c_int,
        // Keeps the function pointers above valid for the life of the process.
        _lib: libloading::Library,
    }

    impl Lib {
        pub fn open() -> Option<Self> {
            // SAFETY: loading libnftables runs no initialisers with preconditions of ours,
            // and each symbol is read with the signature nftables/libnftables.h declares.
            unsafe {
                let lib = libloading::Library::new("libnftables.so.1").ok()?;
                Some(Self {
                    ctx_new: *lib.get(b"nft_ctx_new\0").ok()?,
                    ctx_free: *lib.get(b"nft_ctx_free\0").ok()?,
                    output_set_flags: *lib.get(b"nft_ctx_output_set_flags\0").ok()?,
                    buffer_output: *lib.get(b"nft_ctx_buffer_output\0").ok()?,
                    buffer_error: *lib.get(b"nft_ctx_buffer_error\0").ok()?,
                    get_output: *lib.get(b"nft_ctx_get_output_buffer\0").ok()?,
                    get_error: *lib.get(b"nft_ctx_get_error_buffer\0").ok()?,
                    run_cmd: *lib.get(b"nft_run_cmd_from_buffer\0").ok()?,
                    _lib: lib,
                })
            }
        }

        /// Runs `cmd` (JSON or nft syntax) in a fresh context, its output and errors captured
        /// in buffers so nothing reaches our stdout, which carries the CNI result.
        pub fn run(&self, cmd: &str) -> Result<String, RunError> {
            let cmd = CString::new(cmd)
                .map_err(|_| RunError::Failed("nft command holds a NUL byte".into()))?;
            // SAFETY: the context is created, used and freed here, on this thread; the
            // buffers it returns are copied before it is freed.
            unsafe {
                let ctx = (self.ctx_new)(0);
                if ctx.is_null() {
                    return Err(RunError::Unavailable("libnftables: no context".into()));
                }
                (self.output_set_flags)(ctx, OUTPUT_JSON);
                if (self.buffer_output)(ctx) != 0 || (self.buffer_error)(ctx) != 0 {
                    (self.ctx_free)(ctx);
                    return Err(RunError::Unavailable("libnftables: no buffers".into()));
                }
                let rc = (self.run_cmd)(ctx, cmd.as_ptr());
                let output = text((self.get_output)(ctx));
                let error = text((self.get_error)(ctx));
                (self.ctx_free)(ctx);
                if rc == 0 {
                    Ok(output)
                } else {
                    Err(RunError::Failed(error.trim().to_owned()))
                }
            }
        }
    }

    /// # Safety
    /// `p` is null or a NUL-terminated string.
    unsafe fn text(p: *const c_char) -> String {
        if p.is_null() {
            return String::new();
        }
        // SAFETY: per the contract above.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}
