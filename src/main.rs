//! The `loyalty` binary: see `loyalty-cli`.

/// mimalloc: the engine allocates many small strings; glibc malloc's bookkeeping was about
/// 15% of a fold's profile (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    loyalty_cli::main()
}
