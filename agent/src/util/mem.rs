//! Giving freed memory back to the system.
//!
//! The agent's allocator (jemalloc, chosen by the binary) keeps freed pages
//! for reuse and returns them only as allocations go on: after start-up
//! (the kernel's type information is parsed, then dropped: about 20 MB) or a
//! burst, an idle agent would hold them for good. [`release_free_memory`]
//! returns them at once; the pipeline calls it after start and while idle.

/// Returns the allocator's free pages of every arena to the system. Cheap
/// when there are none; with another global allocator it does nothing.
pub fn release_free_memory() {
    // `MALLCTL_ARENAS_ALL` (4096): every arena.
    const PURGE_ALL: &[u8] = b"arena.4096.purge\0";
    // SAFETY: a NUL-terminated control name that takes no input or output.
    let rc = unsafe {
        tikv_jemalloc_sys::mallctl(
            PURGE_ALL.as_ptr().cast(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    };
    if rc != 0 {
        tracing::debug!(rc, "allocator purge refused");
    }
}
