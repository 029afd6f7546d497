//! The `quiver` command line. See `quiver --help`.

fn main() -> std::process::ExitCode {
    quiver_cli::main()
}
