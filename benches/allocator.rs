//! The `loyalty` binary's allocator options, for the benchmarks that measure against it or
//! as it runs (`src/main.rs`: a purge delay of a second, transparent huge pages off).

/// Sets them. Call it first, before the benchmark starts any thread.
#[allow(unsafe_code)]
pub fn tune() {
    /// `mi_option_purge_delay` in mimalloc's `mi_option_e`.
    const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: sets one of mimalloc's options, before any other thread of the benchmark.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 1000) }
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and changes only this process's
    // memory policy.
    unsafe {
        let (on, zero): (libc::c_ulong, libc::c_ulong) = (1, 0);
        libc::prctl(libc::PR_SET_THP_DISABLE, on, zero, zero, zero);
    }
}
