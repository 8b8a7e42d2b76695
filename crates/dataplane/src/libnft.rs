//! libnftables, loaded at run time (`dlopen`) when the machine has it (it comes with the `nft`
//! command): transactions then run in-process, without spawning `nft` for each one. Without
//! the library, [`crate::Nft`] spawns `nft` as before.
//!
//! The library is the same code the `nft` command runs, so the scripts and their meaning are
//! identical either way. A context is used from one thread at a time.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_int, c_void};

type CtxNew = unsafe extern "C" fn(u32) -> *mut c_void;
type CtxFree = unsafe extern "C" fn(*mut c_void);
type CtxOp = unsafe extern "C" fn(*mut c_void) -> c_int;
type CtxBuffer = unsafe extern "C" fn(*mut c_void) -> *const c_char;
type RunCmd = unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int;

/// One libnftables context.
pub struct LibNft {
    ctx: *mut c_void,
    free: CtxFree,
    run: RunCmd,
    output: CtxBuffer,
    error: CtxBuffer,
}

// SAFETY: the context is owned by this value and only used through `&mut self`, so by one
// thread at a time; libnftables keeps no thread-local state.
unsafe impl Send for LibNft {}

impl std::fmt::Debug for LibNft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LibNft")
    }
}

fn symbol<T: Copy>(lib: *mut c_void, name: &CStr) -> Option<T> {
    // SAFETY: `lib` is a handle from dlopen; dlsym returns null or the symbol's address, which
    // the caller types with the library's documented signature.
    let p = unsafe { libc::dlsym(lib, name.as_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: T is a function pointer type of the same size as a data pointer.
    Some(unsafe { std::mem::transmute_copy::<*mut c_void, T>(&p) })
}

impl LibNft {
    /// Loads libnftables and makes a context, or `None` if the library is not there.
    pub fn open() -> Option<LibNft> {
        // SAFETY: dlopen with a constant, NUL-terminated name; the handle is never closed, so
        // the function pointers stay valid for the life of the process.
        let lib = unsafe { libc::dlopen(c"libnftables.so.1".as_ptr(), libc::RTLD_NOW) };
        if lib.is_null() {
            return None;
        }
        let new: CtxNew = symbol(lib, c"nft_ctx_new")?;
        let free: CtxFree = symbol(lib, c"nft_ctx_free")?;
        let buffer_output: CtxOp = symbol(lib, c"nft_ctx_buffer_output")?;
        let buffer_error: CtxOp = symbol(lib, c"nft_ctx_buffer_error")?;
        let output: CtxBuffer = symbol(lib, c"nft_ctx_get_output_buffer")?;
        let error: CtxBuffer = symbol(lib, c"nft_ctx_get_error_buffer")?;
        let run: RunCmd = symbol(lib, c"nft_run_cmd_from_buffer")?;
        // SAFETY: documented libnftables calls on a fresh context (flags 0: NFT_CTX_DEFAULT).
        let ctx = unsafe { new(0) };
        if ctx.is_null() {
            return None;
        }
        // SAFETY: as above; both only switch the context to buffering its messages.
        unsafe {
            buffer_output(ctx);
            buffer_error(ctx);
        }
        Some(LibNft {
            ctx,
            free,
            run,
            output,
            error,
        })
    }

    /// Runs a script (one transaction); `Err` carries nft's error messages.
    pub fn run(&mut self, script: &str) -> Result<(), String> {
        let text = CString::new(script).map_err(|_| "the script contains a NUL byte".to_owned())?;
        // SAFETY: a valid context and a NUL-terminated buffer that outlives the call.
        let rc = unsafe { (self.run)(self.ctx, text.as_ptr()) };
        // SAFETY: buffering is on, so these return NUL-terminated strings owned by the context
        // (valid until the next call on it); they are copied at once. Reading the output buffer
        // also empties it.
        let (_, err) = unsafe {
            let read = |p: *const c_char| {
                (!p.is_null()).then(|| CStr::from_ptr(p).to_string_lossy().into_owned())
            };
            (read((self.output)(self.ctx)), read((self.error)(self.ctx)))
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(err.unwrap_or_default().trim().to_owned())
        }
    }
}

impl Drop for LibNft {
    fn drop(&mut self) {
        // SAFETY: the context came from nft_ctx_new and is freed once.
        unsafe { (self.free)(self.ctx) }
    }
}
