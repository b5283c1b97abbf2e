//! The `loyalty` binary: see `loyalty-cli`.

/// mimalloc: the engine allocates many small strings; glibc malloc's bookkeeping was about
/// 15% of a fold's profile (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc's `mi_option_e` (the same in its v2 and v3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Memory freed goes back to the OS after a second instead of 10 ms: a growing state
/// otherwise has its pages returned and faulted in again (a sixth of a long fold).
///
/// Transparent huge pages are off for the process: mimalloc asks for them, and each fault
/// of one clears 2 MiB, again after every purge. A fold of a million records spent 2.3 s
/// of 13.3 in the kernel clearing pages with them, 0.6 s without, and finished in 12.0 s
/// (BENCHMARKS.md). This is what `MIMALLOC_ALLOW_THP=0` does, which mimalloc reads before
/// `main`, too early for a program to set.
#[allow(unsafe_code)]
fn tune_allocator() {
    // SAFETY: sets one of mimalloc's options; called first in `main`, before any other
    // thread exists (the function is not thread safe).
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 1000) }
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and changes only this process's
    // memory policy; a failure (an old kernel) leaves the default, which is only slower.
    unsafe {
        let (on, zero): (libc::c_ulong, libc::c_ulong) = (1, 0);
        libc::prctl(libc::PR_SET_THP_DISABLE, on, zero, zero, zero);
    }
}

fn main() -> std::process::ExitCode {
    tune_allocator();
    loyalty_cli::main()
}
