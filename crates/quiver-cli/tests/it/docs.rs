//! Every command in README.md, CONTRIBUTING.md and docs/ stays true: each
//! line of a ```sh block is checked against what it names. A `quiver`
//! command (also as `cargo run --release -- ...` or `target/release/quiver`)
//! is parsed by the real command-line parser; a `quiver-harness` command is
//! run with `--help` appended, which its parser refuses if an argument is
//! wrong; a script, example or benchmark must exist; a `-p` package must be
//! a workspace member. Commands of other tools (pip, python3 -m venv,
//! cargo install, git) are counted, not checked.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use quiver_cli::Cli;

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The markdown files whose commands are checked.
fn documents() -> Vec<PathBuf> {
    let root = root();
    let mut files = vec![root.join("README.md"), root.join("CONTRIBUTING.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .map(|e| e.expect("an entry of docs/").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// One command: where it is and its words (comments and `VAR=value`
/// prefixes removed).
struct Line {
    place: String,
    words: Vec<String>,
}

/// The commands of the ```sh blocks of `path`.
fn commands(path: &Path) -> Vec<Line> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    let mut in_sh = false;
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if let Some(fence) = trimmed.strip_prefix("```") {
            in_sh = !in_sh && (fence == "sh" || fence == "bash");
            continue;
        }
        if !in_sh || trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let command = trimmed.split(" #").next().unwrap_or_default();
        let words: Vec<String> = command
            .split_whitespace()
            .skip_while(|w| w.contains('=') && !w.starts_with('-'))
            .map(str::to_string)
            .collect();
        if !words.is_empty() {
            out.push(Line { place: format!("{}:{}", path.display(), n + 1), words });
        }
    }
    out
}

/// The arguments after `quiver` if `words` runs the `quiver` binary.
fn quiver_args(words: &[String]) -> Option<Vec<String>> {
    let first = words.first()?.as_str();
    if first == "quiver" || first.ends_with("/quiver") {
        return Some(words[1..].to_vec());
    }
    if first == "cargo" && words.get(1).is_some_and(|w| w == "run") {
        let dash = words.iter().position(|w| w == "--")?;
        // `cargo run -p quiver-harness -- ...` or an example runs something else.
        let flags = &words[2..dash];
        if flags.iter().any(|w| w == "--example" || w == "--bin") || flags.windows(2).any(|p| p[0] == "-p") {
            return None;
        }
        return Some(words[dash + 1..].to_vec());
    }
    None
}

/// The workspace's members, by package name.
fn packages() -> Vec<String> {
    let mut names = Vec::new();
    for manifest in [root().join("python/Cargo.toml")].into_iter().chain(
        std::fs::read_dir(root().join("crates"))
            .expect("crates/")
            .map(|e| e.expect("a crate").path().join("Cargo.toml")),
    ) {
        let text = std::fs::read_to_string(&manifest).unwrap_or_default();
        if let Some(name) = text.lines().find_map(|l| l.strip_prefix("name = \"")) {
            names.push(name.trim_end_matches('"').to_string());
        }
    }
    names
}

/// Whether some crate has a target file `dir/name.rs` (`benches`, `examples`).
fn target_exists(dir: &str, name: &str) -> bool {
    std::fs::read_dir(root().join("crates"))
        .expect("crates/")
        .any(|e| e.expect("a crate").path().join(dir).join(format!("{name}.rs")).is_file())
}

/// What is wrong with a `cargo` command, if anything.
fn check_cargo(words: &[String], packages: &[String]) -> Option<String> {
    for pair in words.windows(2) {
        let (flag, value) = (pair[0].as_str(), pair[1].as_str());
        let missing = match flag {
            "-p" | "--package" => !packages.iter().any(|p| p == value),
            "--bench" => !target_exists("benches", value),
            "--example" => !target_exists("examples", value),
            "--manifest-path" | "--path" => !root().join(value).exists(),
            _ => false,
        };
        if missing {
            return Some(format!("{flag} {value}: no such package or target"));
        }
    }
    None
}

#[test]
fn every_command_in_the_readme_and_docs_is_valid() {
    let packages = packages();
    let (mut checked, mut counted, mut wrong) = (0, 0, Vec::new());
    for file in documents() {
        for Line { place, words } in commands(&file) {
            let first = words[0].as_str();
            let problem = if let Some(args) = quiver_args(&words) {
                let argv = std::iter::once("quiver".to_string()).chain(args);
                Cli::try_parse_from(argv).err().map(|e| e.to_string())
            } else if first.ends_with("quiver-harness") {
                let mut args: Vec<&str> = words[1..].iter().map(String::as_str).collect();
                args.push("--help");
                let out = crate::common::run_harness(&args, Duration::from_secs(30));
                (!out.status.success()).then(|| String::from_utf8_lossy(&out.stderr).into_owned())
            } else if first == "cargo" {
                check_cargo(&words, &packages)
            } else if first.starts_with("scripts/") || first.starts_with("./") {
                (!root().join(first).is_file()).then(|| format!("no script {first}"))
            } else if first.starts_with(".venv/bin/python") && words.get(1).is_some_and(|w| w.ends_with(".py")) {
                (!root().join(&words[1]).is_file()).then(|| format!("no file {}", words[1]))
            } else {
                counted += 1;
                continue;
            };
            checked += 1;
            if let Some(problem) = problem {
                wrong.push(format!("{place}: {}\n  {}", words.join(" "), problem.trim().replace('\n', "\n  ")));
            }
        }
    }
    assert!(wrong.is_empty(), "{} of {checked} commands are wrong:\n{}", wrong.len(), wrong.join("\n"));
    // The README alone has more than a handful: a parser that found none
    // would pass everything.
    assert!(checked >= 40, "only {checked} commands found ({counted} of other tools)");
}
