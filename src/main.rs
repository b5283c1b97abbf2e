//! The `loyalty` binary: see `loyalty-cli`.

/// mimalloc: the engine allocates many small strings; glibc malloc's bookkeeping was about
/// 15% of a fold's profile (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc's `mi_option_e` (the same in its v2 and v3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Memory freed goes back to the OS after a second instead of 10 ms: a growing state
/// otherwise has its pages returned and faulted in again (a sixth of a long fold).
#[allow(unsafe_code)]
fn tune_allocator() {
    // SAFETY: sets one of mimalloc's options; called first in `main`, before any other
    // thread exists (the function is not thread safe).
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 1000) }
}

fn main() -> std::process::ExitCode {
    tune_allocator();
    loyalty_cli::main()
}
