//! The `sluice` binary: parse the command line and hand over to [`sluice::cli`].

fn main() -> std::process::ExitCode {
    sluice::cli::main()
}
