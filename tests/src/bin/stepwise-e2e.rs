//! The `stepwise` command, under another name so that this package's tests
//! can start it as a real process (and SIGKILL it).

fn main() -> std::process::ExitCode {
    stepwise_host::cli::main()
}
