//! Giving freed heap back to the kernel. glibc's allocator keeps the pages of freed memory (per
//! thread arena) for reuse, so a resync's transient peak (the listing, every decoded resource,
//! the first table and its kernel read-back: about twice what stays live at 10,000 policies)
//! would otherwise stay in the agent's resident set for good. After a resync the agent asks the
//! allocator to return them (`malloc_trim`, which also releases free pages inside its heaps).
//! The only `unsafe` of the agent: one call that takes no pointers.
#![allow(unsafe_code)]

/// Returns the allocator's free pages to the kernel (glibc on Linux; elsewhere nothing).
pub fn release_free() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers and only walks the allocator's own free lists; it
    // is thread-safe (each arena is locked while it is trimmed).
    unsafe {
        libc::malloc_trim(0);
    }
}
