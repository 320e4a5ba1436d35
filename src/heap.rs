//! Hands freed heap memory back to the system.
//!
//! glibc keeps the pages of freed allocations for reuse, so a process's RSS stays at its
//! high-water mark: after a collector outage the delta buffer's megabytes would stay resident
//! for the life of the agent. `malloc_trim` returns every whole free page of every arena.
//! With `kafka/native/` and `signal.rs`, the only code with `unsafe`: one foreign call, no
//! pointers.
#![allow(unsafe_code)]

/// Returns the heap's free pages to the system; a no-op where the C library is not glibc.
/// Costs a walk over the free lists (a few milliseconds at most): call it after a large
/// release, not on every free.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes an integer, touches only the allocator's own state under its
    // own locks, and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
