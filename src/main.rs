//! The `millrace` binary: the command line lives in [`millrace::cli`].

fn main() -> std::process::ExitCode {
    millrace::cli::main()
}
