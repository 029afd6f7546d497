//! The `quiver` command line. See `quiver --help`.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
