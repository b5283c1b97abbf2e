//! The `loyalty` binary: see `loyalty-cli`.

fn main() -> std::process::ExitCode {
    loyalty_cli::main()
}
