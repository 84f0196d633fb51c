//! Giving freed heap back to the operating system.
//!
//! A burst of runs allocates and frees a lot (each execution's sandbox state,
//! tasks, buffers); glibc keeps freed memory in per-thread arenas, so after
//! 10,000 runs have gone to sleep a host would still hold tens of MiB it no
//! longer uses. Two glibc settings fix most of it: one arena (measured: the
//! memory with 10,000 sleeping runs falls from ~80 to ~40 MiB above idle, and
//! steps/s do not change on 2 cores), and trimming after a burst (the host's
//! housekeeping calls [`release_free_memory`] when it goes quiet). Elsewhere
//! these do nothing.

/// Uses one malloc arena; call first thing in `main`, before threads start.
pub fn configure_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const M_ARENA_MAX: i32 = -8;
        // SAFETY: mallopt only changes allocator tuning; M_ARENA_MAX is a
        // valid parameter and 1 a valid value.
        unsafe {
            glibc::mallopt(M_ARENA_MAX, 1);
        }
    }
}

/// Returns free heap pages to the operating system.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases memory the allocator holds free.
    unsafe {
        glibc::malloc_trim(0);
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    unsafe extern "C" {
        pub fn mallopt(param: i32, value: i32) -> i32;
        pub fn malloc_trim(pad: usize) -> i32;
    }
}
