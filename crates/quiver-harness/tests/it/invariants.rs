//! ARCHITECTURE.md's invariants that reading the source tree can check:
//! where `unsafe` is written, which crate depends on which (the crate graph
//! ARCHITECTURE.md draws), the core's layers importing downward, the core's
//! one feature, the default build without librdkafka, the lints on unsafe
//! code, and the object-ID kinds. Nothing is built or run: the tests read
//! the Rust sources (comments and string literals blanked), the
//! `Cargo.toml` files (a small line-based reader) and ARCHITECTURE.md.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use quiver::IdKind;

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A file of the repository, by its path from the root.
fn read(rel: &str) -> String {
    let path = root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `path` relative to the root, with `/` separators.
fn relative(path: &Path) -> String {
    let root = root();
    let rel = path.strip_prefix(&root).unwrap_or(path);
    rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/")
}

/// Every `.rs` file under `dir` (a path from the root), sorted; build
/// output (`target/`) and hidden directories are skipped.
fn rust_files(dir: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if path.is_dir() {
                if name != "target" && !name.starts_with('.') {
                    walk(&path, out);
                }
            } else if name.ends_with(".rs") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&root().join(dir), &mut out);
    out.sort();
    out
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Rust source with its comments blanked, and its string literals too
/// unless `keep_strings` (character literals are kept, and skipped over so
/// that `'"'` opens no string). Every blanked character becomes a space and
/// newlines stay, so offsets and line numbers are the source's.
fn strip(text: &str, keep_strings: bool) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |out: &mut String, ch: char, keep: bool| out.push(if keep || ch == '\n' { ch } else { ' ' });
    let mut i = 0;
    while i < c.len() {
        let at = |k: usize| c.get(k).copied().unwrap_or('\0');
        let (p1, p2) = (if i >= 1 { c[i - 1] } else { '\0' }, if i >= 2 { c[i - 2] } else { '\0' });
        if c[i] == '/' && at(i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                blank(&mut out, c[i], false);
                i += 1;
            }
            continue;
        }
        if c[i] == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, c[i], false);
                    i += 1;
                }
            }
            continue;
        }
        // Raw strings: r"..", r#".."#, br"..", cr"..".
        let raw_start = c[i] == 'r' && (!is_ident(p1) || ((p1 == 'b' || p1 == 'c') && !is_ident(p2)));
        if raw_start {
            let mut j = i + 1;
            while at(j) == '#' {
                j += 1;
            }
            if at(j) == '"' {
                let hashes = j - i - 1;
                out.push('r');
                for &ch in &c[i + 1..=j] {
                    blank(&mut out, ch, keep_strings);
                }
                i = j + 1;
                while i < c.len() {
                    if c[i] == '"' && (1..=hashes).all(|h| at(i + h) == '#') {
                        for &ch in &c[i..=i + hashes] {
                            blank(&mut out, ch, keep_strings);
                        }
                        i += hashes + 1;
                        break;
                    }
                    blank(&mut out, c[i], keep_strings);
                    i += 1;
                }
                continue;
            }
        }
        if c[i] == '"' {
            blank(&mut out, '"', keep_strings);
            i += 1;
            while i < c.len() {
                if c[i] == '\\' {
                    blank(&mut out, c[i], keep_strings);
                    if i + 1 < c.len() {
                        blank(&mut out, c[i + 1], keep_strings);
                    }
                    i += 2;
                    continue;
                }
                let end = c[i] == '"';
                blank(&mut out, c[i], keep_strings);
                i += 1;
                if end {
                    break;
                }
            }
            continue;
        }
        if c[i] == '\'' {
            // A character literal ('x', '\n', '\u{1F600}', '"'), kept as it
            // is; otherwise a lifetime or a label.
            let end = if at(i + 1) == '\\' {
                (i + 3..(i + 12).min(c.len())).find(|&k| c[k] == '\'')
            } else if at(i + 2) == '\'' {
                Some(i + 2)
            } else {
                None
            };
            if let Some(end) = end {
                out.extend(&c[i..=end]);
                i = end + 1;
                continue;
            }
        }
        out.push(c[i]);
        i += 1;
    }
    out
}

/// The line numbers (from 1) at which `word` stands alone in `code`.
fn word_lines(code: &str, word: &str) -> Vec<usize> {
    let mut lines = Vec::new();
    for (n, line) in code.lines().enumerate() {
        let mut from = 0;
        while let Some(k) = line[from..].find(word) {
            let start = from + k;
            let end = start + word.len();
            let before = line[..start].chars().next_back().is_some_and(is_ident);
            let after = line[end..].chars().next().is_some_and(is_ident);
            if !before && !after {
                lines.push(n + 1);
                break;
            }
            from = end;
        }
    }
    lines
}

/// The lines of `code` before its first `#[cfg(test)]` (the unit tests sit
/// at the end of a file).
fn before_tests(code: &str) -> &str {
    code.find("#[cfg(test)]").map_or(code, |k| &code[..k])
}

/// The rows of the markdown table between `<!-- BEGIN name -->` and
/// `<!-- END name -->` in ARCHITECTURE.md: each row's cells, with the
/// header and separator rows left out.
fn architecture_table(name: &str) -> Vec<Vec<String>> {
    let text = read("ARCHITECTURE.md");
    let (begin, end) = (format!("<!-- BEGIN {name} -->"), format!("<!-- END {name} -->"));
    let start = text.find(&begin).unwrap_or_else(|| panic!("ARCHITECTURE.md has no {begin:?} marker"));
    let stop = text[start..].find(&end).unwrap_or_else(|| panic!("ARCHITECTURE.md has no {end:?} after {begin:?}"));
    let rows: Vec<Vec<String>> = text[start + begin.len()..start + stop]
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('|'))
        .map(|l| l.trim_matches('|').split('|').map(|cell| cell.trim().to_string()).collect())
        .collect();
    // The header row, then the |---| row.
    rows.into_iter().skip(2).collect()
}

/// The `code spans` of a markdown table cell.
fn code_spans(cell: &str) -> Vec<String> {
    cell.split('`').skip(1).step_by(2).map(str::to_string).collect()
}

/// A `Cargo.toml`, read line by line: every `[section]` with its keys and
/// values (a value spread over several lines is joined). Enough for the
/// workspace's manifests, not a TOML parser.
struct Manifest {
    path: String,
    sections: Vec<(String, Vec<(String, String)>)>,
}

impl Manifest {
    fn read(rel: &str) -> Manifest {
        let mut sections: Vec<(String, Vec<(String, String)>)> = vec![(String::new(), Vec::new())];
        let mut open = 0i32;
        for raw in read(rel).lines() {
            // Drop a comment: a `#` outside a string.
            let mut in_string = false;
            let line: String = raw
                .chars()
                .take_while(|&ch| {
                    if ch == '"' {
                        in_string = !in_string;
                    }
                    in_string || ch != '#'
                })
                .collect();
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let entries = &mut sections.last_mut().expect("a section").1;
            if open > 0 {
                let last = entries.last_mut().expect("a value being continued");
                last.1.push(' ');
                last.1.push_str(line);
            } else if line.starts_with('[') {
                sections.push((line.trim_matches(|c| c == '[' || c == ']').trim().to_string(), Vec::new()));
                continue;
            } else if let Some((key, value)) = line.split_once('=') {
                entries.push((key.trim().trim_matches('"').to_string(), value.trim().to_string()));
            } else {
                panic!("{rel}: cannot read the line {raw:?}");
            }
            let mut in_string = false;
            for ch in line.chars() {
                match ch {
                    '"' => in_string = !in_string,
                    '[' | '{' if !in_string => open += 1,
                    ']' | '}' if !in_string => open -= 1,
                    _ => {}
                }
            }
        }
        Manifest { path: rel.to_string(), sections }
    }

    /// The entries of section `name`.
    fn section(&self, name: &str) -> Vec<(String, String)> {
        self.sections.iter().filter(|(n, _)| n == name).flat_map(|(_, e)| e.clone()).collect()
    }

    /// A key of section `name`.
    fn value(&self, section: &str, key: &str) -> Option<String> {
        self.section(section).into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The package's name.
    fn name(&self) -> String {
        let name = self.value("package", "name").unwrap_or_else(|| panic!("{}: no package name", self.path));
        name.trim_matches('"').to_string()
    }

    /// Every dependency of `kind` (`dependencies`, `dev-dependencies`,
    /// `build-dependencies`, platform-specific ones included): the package
    /// it names and what the manifest says of it.
    fn dependencies(&self, kind: &str) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for (section, entries) in &self.sections {
            let section = section
                .strip_prefix("target.")
                .and_then(|s| s.split_once("'.").map(|x| x.1))
                .unwrap_or(section.as_str());
            if section == kind {
                for (key, value) in entries {
                    // `name = ...`, or a dotted key: `name.workspace = true`.
                    let (name, rest) = key.split_once('.').unwrap_or((key, ""));
                    let value = if rest.is_empty() { value.clone() } else { format!("{rest} = {value}") };
                    out.push((name.trim_matches('"').to_string(), value));
                }
            } else if let Some(name) = section.strip_prefix(&format!("{kind}.")) {
                let value = entries.iter().map(|(k, v)| format!("{k} = {v}")).collect::<Vec<_>>().join(", ");
                out.push((name.to_string(), value));
            }
        }
        // A renamed dependency names its package.
        for (name, value) in &mut out {
            if let Some(package) = value.split("package").nth(1).and_then(|s| s.split('"').nth(1)) {
                *name = package.to_string();
            }
        }
        out
    }
}

/// The workspace's members: the path of each one's directory and its
/// manifest.
fn members() -> Vec<(String, Manifest)> {
    let root = Manifest::read("Cargo.toml");
    let members = root.value("workspace", "members").expect("[workspace] members");
    let dirs: Vec<String> = members.split('"').skip(1).step_by(2).map(str::to_string).collect();
    assert!(dirs.len() >= 6, "the workspace's members, read from Cargo.toml: {dirs:?}");
    dirs.into_iter().map(|dir| (dir.clone(), Manifest::read(&format!("{dir}/Cargo.toml")))).collect()
}

/// The crates that ship (everything but the test machinery).
fn shipped(name: &str) -> bool {
    name != "quiver-harness"
}

/// Checked: `unsafe` is written only in the files the table of
/// ARCHITECTURE.md names, and each of them has some.
#[test]
fn unsafe_only_in_the_files_architecture_names() {
    let listed: BTreeSet<String> =
        architecture_table("unsafe-files").iter().filter_map(|row| code_spans(&row[0]).into_iter().next()).collect();
    assert!(!listed.is_empty(), "ARCHITECTURE.md's unsafe-files table names no file");

    let mut found: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let dirs = ["crates", "python/src", "fuzz", "benches"];
    let files: Vec<PathBuf> = dirs.iter().flat_map(|dir| rust_files(dir)).collect();
    assert!(files.len() > 50, "only {} Rust files found under {dirs:?}", files.len());
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let lines = word_lines(&strip(&text, false), "unsafe");
        if !lines.is_empty() {
            found.insert(relative(path), lines);
        }
    }

    let unlisted: Vec<String> = found
        .iter()
        .filter(|(file, _)| !listed.contains(*file))
        .map(|(file, lines)| format!("{file} (lines {lines:?})"))
        .collect();
    let stale: Vec<&String> = listed.iter().filter(|file| !found.contains_key(*file)).collect();
    assert!(
        unlisted.is_empty() && stale.is_empty(),
        "`unsafe` outside the files ARCHITECTURE.md names: {unlisted:#?}\nnamed there but without `unsafe` (or \
         missing): {stale:#?}\nevery file with `unsafe`: {found:#?}"
    );
}

/// Checked: the crate graph. Each crate's workspace dependencies are the
/// ones ARCHITECTURE.md's table gives it; the core depends on no other
/// crate of the workspace; the adapters besides the CLI on neither the CLI
/// nor the harness; nothing shipped on the harness but as a
/// dev-dependency; and no crate's `src/` names a crate it does not depend
/// on.
#[test]
fn crates_depend_only_downward() {
    let members = members();
    let names: BTreeSet<String> = members.iter().map(|(_, m)| m.name()).collect();
    let drawn: BTreeMap<String, BTreeSet<String>> = architecture_table("crate-graph")
        .iter()
        .map(|row| {
            let name = code_spans(&row[0]).into_iter().next().unwrap_or_else(|| panic!("a crate-graph row {row:?}"));
            (name, row.get(1).map(|cell| code_spans(cell).into_iter().collect()).unwrap_or_default())
        })
        .collect();
    let workspace_deps = |m: &Manifest, kind: &str| -> BTreeSet<String> {
        m.dependencies(kind).into_iter().map(|(name, _)| name).filter(|name| names.contains(name)).collect()
    };

    let mut wrong = Vec::new();
    for (dir, manifest) in &members {
        let name = manifest.name();
        let normal: BTreeSet<String> = workspace_deps(manifest, "dependencies")
            .union(&workspace_deps(manifest, "build-dependencies"))
            .cloned()
            .collect();
        match drawn.get(&name) {
            None => wrong.push(format!("{name} ({dir}) is not in ARCHITECTURE.md's crate graph")),
            Some(drawn) if *drawn != normal => {
                wrong.push(format!("{name} depends on {normal:?}; ARCHITECTURE.md's crate graph says {drawn:?}"))
            }
            Some(_) => {}
        }
        let never: &[&str] = match name.as_str() {
            "quiver" => &["quiver-train", "quiver-kafka", "quiver-cli", "quiver-harness", "quiver-python"],
            "quiver-train" | "quiver-kafka" => &["quiver-cli", "quiver-harness", "quiver-python"],
            _ if shipped(&name) => &["quiver-harness"],
            _ => &[],
        };
        for dep in never.iter().filter(|dep| normal.contains(**dep)) {
            wrong.push(format!("{name} depends on {dep} (only a dev-dependency may be on the harness)"));
        }

        // The crates `src/` names, by their library names.
        let mut allowed: BTreeSet<String> = normal.iter().map(|n| n.replace('-', "_")).collect();
        allowed.insert(name.replace('-', "_"));
        for path in rust_files(&format!("{dir}/src")) {
            let code = strip(&std::fs::read_to_string(&path).expect("a source file"), false);
            for other in &names {
                let lib = other.replace('-', "_");
                if lib == "quiver" || allowed.contains(&lib) {
                    continue;
                }
                let lines = word_lines(&code, &lib);
                if !lines.is_empty() {
                    wrong.push(format!(
                        "{} names `{lib}` (lines {lines:?}), not a dependency of {name}",
                        relative(&path)
                    ));
                }
            }
        }
    }
    for name in drawn.keys().filter(|n| !names.contains(*n)) {
        wrong.push(format!("ARCHITECTURE.md's crate graph has {name}, which is not a workspace member"));
    }
    assert!(wrong.is_empty(), "the crate graph does not hold:\n{}", wrong.join("\n"));
}

/// Checked: the core's layers import downward only (shm, store, arrow,
/// stream, shard), and a layer names what is below it by that layer's
/// path, never through the crate-wide re-exports (`crate::Store`,
/// `crate::error`). Unit tests (after `#[cfg(test)]`) may.
#[test]
fn core_layers_import_downward() {
    const LAYERS: [&str; 5] = ["shm", "store", "arrow", "stream", "shard"];
    let mut wrong = Vec::new();
    let mut seen = 0;
    for (rank, layer) in LAYERS.iter().enumerate() {
        for path in rust_files(&format!("crates/quiver/src/{layer}")) {
            let code = strip(&std::fs::read_to_string(&path).expect("a source file"), false);
            let code = before_tests(&code);
            for (n, line) in code.lines().enumerate() {
                let mut rest = line;
                while let Some(k) = rest.find("crate::") {
                    let before = rest[..k].chars().next_back().is_some_and(|c| is_ident(c) || c == '$');
                    rest = &rest[k + "crate::".len()..];
                    if before {
                        continue;
                    }
                    // `crate::name` or `crate::{a, b::c}` (on one line).
                    let heads: Vec<String> = match rest.strip_prefix('{') {
                        Some(group) => {
                            let group = group.split('}').next().unwrap_or_default();
                            let mut depth = 0;
                            let mut heads = vec![String::new()];
                            for ch in group.chars() {
                                match ch {
                                    '{' => depth += 1,
                                    '}' => depth -= 1,
                                    ',' if depth == 0 => heads.push(String::new()),
                                    _ => heads.last_mut().expect("a head").push(ch),
                                }
                            }
                            heads.iter().map(|h| h.trim().split("::").next().unwrap_or_default().to_string()).collect()
                        }
                        None => vec![rest.chars().take_while(|&c| is_ident(c)).collect()],
                    };
                    for head in heads.into_iter().filter(|h| !h.is_empty()) {
                        seen += 1;
                        let ok = LAYERS.iter().position(|l| *l == head).is_some_and(|r| r <= rank);
                        if !ok {
                            wrong.push(format!("{}:{}: `crate::{head}` in the {layer} layer", relative(&path), n + 1));
                        }
                    }
                }
            }
        }
    }
    assert!(seen > 50, "only {seen} `crate::` paths found in the core's layers: is the scan broken?");
    assert!(wrong.is_empty(), "imports that point up the layers or through the re-exports:\n{}", wrong.join("\n"));
}

/// Checked: the core has one feature, `test-hooks`, and its code asks for
/// no other; only `quiver-harness` turns it on; the core depends on
/// nothing an adapter brings (the Kafka client, the CLI's crates, PyO3).
#[test]
fn the_core_has_no_adapter_features() {
    let core = Manifest::read("crates/quiver/Cargo.toml");
    let features: Vec<String> = core.section("features").into_iter().map(|(k, _)| k).collect();
    assert_eq!(features, ["test-hooks"], "the core's [features]");

    let mut asked = BTreeMap::<String, Vec<String>>::new();
    for path in rust_files("crates/quiver/src") {
        let code = strip(&std::fs::read_to_string(&path).expect("a source file"), true);
        for (n, line) in code.lines().enumerate() {
            for piece in line.split("feature").skip(1) {
                let Some(value) = piece.trim_start().strip_prefix('=') else { continue };
                if let Some(name) = value.trim_start().strip_prefix('"').and_then(|v| v.split('"').next()) {
                    asked.entry(name.to_string()).or_default().push(format!("{}:{}", relative(&path), n + 1));
                }
            }
        }
    }
    assert!(asked.contains_key("test-hooks"), "no `feature = \"test-hooks\"` found in crates/quiver/src: {asked:?}");
    asked.remove("test-hooks");
    assert!(asked.is_empty(), "crates/quiver/src asks for features it does not have: {asked:#?}");

    let mut turned_on = Vec::new();
    let manifests: Vec<String> =
        members().into_iter().map(|(dir, _)| format!("{dir}/Cargo.toml")).chain(["fuzz/Cargo.toml".into()]).collect();
    for rel in &manifests {
        if rel == "crates/quiver/Cargo.toml" {
            continue;
        }
        let m = Manifest::read(rel);
        if m.sections.iter().flat_map(|(_, e)| e).any(|(k, v)| k.contains("test-hooks") || v.contains("test-hooks")) {
            turned_on.push(rel.clone());
        }
    }
    assert_eq!(turned_on, ["crates/quiver-harness/Cargo.toml"], "the manifests that turn `test-hooks` on");

    const ADAPTERS_ONLY: [&str; 7] = ["rdkafka", "clap", "anyhow", "indicatif", "signal-hook", "pyo3", "arrow-pyarrow"];
    let deps: Vec<String> = ["dependencies", "build-dependencies"]
        .iter()
        .flat_map(|kind| core.dependencies(kind))
        .map(|(name, _)| name)
        .filter(|name| ADAPTERS_ONLY.contains(&name.as_str()))
        .collect();
    assert!(deps.is_empty(), "the core depends on an adapter's crates: {deps:?}");
}

/// Checked: the default build (`cargo run --release -- demo`, the default
/// member `quiver-cli`) pulls in no librdkafka: `rdkafka` is optional
/// wherever it is named, `quiver-kafka` is used without its default
/// `client` feature, and the CLI's `kafka` feature is not a default.
#[test]
fn the_default_build_has_no_librdkafka() {
    let root = Manifest::read("Cargo.toml");
    assert_eq!(
        root.value("workspace", "default-members").as_deref(),
        Some(r#"["crates/quiver-cli"]"#),
        "the default member"
    );
    let kafka_entry = root.value("workspace.dependencies", "quiver-kafka").expect("the workspace's quiver-kafka");
    let mut wrong = Vec::new();
    let mut seen = 0;
    for (dir, m) in members() {
        for (name, value) in m.dependencies("dependencies") {
            let value = value.replace(' ', "");
            if name == "rdkafka" {
                seen += 1;
                if !value.contains("optional=true") {
                    wrong.push(format!("{dir}: rdkafka is not optional ({value})"));
                }
            }
            if name == "quiver-kafka" {
                seen += 1;
                let entry = if value.contains("workspace=true") { kafka_entry.replace(' ', "") } else { value.clone() };
                if !entry.contains("default-features=false") || value.contains("\"client\"") {
                    wrong.push(format!("{dir}: quiver-kafka with its client ({value}; workspace entry {kafka_entry})"));
                }
            }
        }
        if let Some(default) = m.value("features", "default") {
            if m.name() == "quiver-cli" && default.contains("kafka") {
                wrong.push(format!("{dir}: the kafka feature is a default ({default})"));
            }
        }
    }
    assert!(seen >= 3, "rdkafka and quiver-kafka named only {seen} times: is the scan broken?");
    assert!(wrong.is_empty(), "the default build would compile librdkafka:\n{}", wrong.join("\n"));
}

/// Checked: every crate has the lints that make an `unsafe` block without
/// a `// SAFETY:` comment, or an unsafe operation unmarked inside an
/// `unsafe fn`, an error.
#[test]
fn every_crate_denies_undocumented_unsafe() {
    let root = Manifest::read("Cargo.toml");
    let denied = |m: &Manifest, rust: &str, clippy: &str| {
        m.value(rust, "unsafe_op_in_unsafe_fn").as_deref() == Some("\"deny\"")
            && m.value(clippy, "undocumented_unsafe_blocks").as_deref() == Some("\"deny\"")
    };
    assert!(denied(&root, "workspace.lints.rust", "workspace.lints.clippy"), "the workspace's [workspace.lints]");
    let wrong: Vec<String> = members()
        .into_iter()
        .filter(|(_, m)| {
            let inherits = m.value("lints", "workspace").as_deref() == Some("true");
            !inherits && !denied(m, "lints.rust", "lints.clippy")
        })
        .map(|(dir, _)| dir)
        .collect();
    assert!(wrong.is_empty(), "crates without the unsafe lints ([lints] workspace = true): {wrong:?}");
}

/// Checked: every `IdKind` has its own byte and is in `IdKind::ALL`, and no
/// code outside `store/id.rs` makes an ID from a literal kind byte.
#[test]
fn id_kinds_are_listed_once() {
    let bytes: Vec<(IdKind, u8)> = IdKind::ALL.iter().map(|k| (*k, k.byte())).collect();
    let distinct: BTreeSet<u8> = bytes.iter().map(|(_, b)| *b).collect();
    assert_eq!(distinct.len(), bytes.len(), "two kinds share a byte: {bytes:?}");
    for (kind, byte) in &bytes {
        assert_eq!(IdKind::from_byte(*byte), Some(*kind), "kind {kind:?} (byte {byte:#04x}) does not round-trip");
    }

    // Every variant of the enum is in ALL.
    let id_rs = strip(&read("crates/quiver/src/store/id.rs"), false);
    let body = id_rs.split("pub enum IdKind").nth(1).and_then(|s| s.split('}').next()).expect("`pub enum IdKind`");
    let variants: BTreeSet<String> = body
        .trim_start_matches([' ', '{'])
        .split(',')
        .map(|v| v.split_whitespace().filter(|w| !w.starts_with("#[")).collect::<String>())
        .filter(|v| !v.is_empty() && !v.contains('{'))
        .collect();
    let in_all: BTreeSet<String> = IdKind::ALL.iter().map(|k| format!("{k:?}")).collect();
    assert_eq!(variants, in_all, "IdKind's variants (store/id.rs) and IdKind::ALL");

    // No ID built from a literal kind byte outside id.rs.
    let mut wrong = Vec::new();
    let files: Vec<PathBuf> = std::fs::read_dir(root().join("crates"))
        .expect("crates/")
        .map(|e| e.expect("an entry of crates/").path())
        .flat_map(|krate| rust_files(&format!("{}/src", relative(&krate))))
        .chain(rust_files("python/src"))
        .filter(|p| relative(p) != "crates/quiver/src/store/id.rs")
        .collect();
    assert!(files.len() > 50, "only {} source files found", files.len());
    for path in &files {
        let code = strip(&std::fs::read_to_string(path).expect("a source file"), false);
        for (n, line) in code.lines().enumerate() {
            let compact = line.replace(' ', "");
            let sets_kind = compact.contains("bytes[0]=") || compact.contains("[0]=b'");
            let literal_id = compact.split("ObjectId::from_bytes(").skip(1).any(|args| args.contains("b'"));
            if sets_kind || literal_id {
                wrong.push(format!("{}:{}: {}", relative(path), n + 1, line.trim()));
            }
        }
    }
    assert!(wrong.is_empty(), "IDs made from a literal kind byte, not an IdKind:\n{}", wrong.join("\n"));

    // The Python package's literal kinds (Plasma's IDs) are listed kinds.
    let mut python = Vec::new();
    if let Ok(entries) = std::fs::read_dir(root().join("python/quiver")) {
        for path in entries.map(|e| e.expect("an entry").path()).filter(|p| p.extension().is_some_and(|e| e == "py")) {
            let text = std::fs::read_to_string(&path).expect("a Python file");
            for (n, line) in text.lines().enumerate() {
                for marker in ["ObjectId(b\"", "PREFIX = b\""] {
                    for rest in line.split(marker).skip(1) {
                        let byte = rest.bytes().next().unwrap_or(0);
                        python.push((format!("{}:{}", relative(&path), n + 1), byte));
                    }
                }
            }
        }
    }
    let unlisted: Vec<_> = python.iter().filter(|(_, b)| IdKind::from_byte(*b).is_none()).collect();
    assert!(unlisted.is_empty(), "kind bytes in python/quiver/ that are no IdKind: {unlisted:?}");
}

/// The scanner itself: comments and strings are blanked, identifiers that
/// contain `unsafe` are not the word, character literals open no string.
#[test]
fn the_scanner_reads_rust() {
    let text = r##"// unsafe in a comment
/* unsafe /* nested */ unsafe */ let a = "unsafe \" unsafe"; #![deny(unsafe_op_in_unsafe_fn)]
let q = '"'; let r = r#"unsafe "# ; let lt: &'a str = x; unsafe { f() }
let s = b"unsafe"; let c = b'"'; unsafe_code();"##;
    let code = strip(text, false);
    assert_eq!(word_lines(&code, "unsafe"), [3], "{code}");
    assert_eq!(code.lines().count(), text.lines().count());
    assert!(strip(text, true).contains("\"unsafe \\\" unsafe\""));
}

/// No shipped code starts a process but the one worker supervisor (the
/// harness's own test helpers, `procs`, start the binaries under test).
#[test]
fn only_the_supervisor_starts_processes() {
    let mut found = Vec::new();
    for dir in ["crates", "python/src"] {
        for path in rust_files(dir) {
            let rel = relative(&path);
            if !rel.contains("/src/") || rel == "crates/quiver-cli/src/supervisor.rs" || rel.ends_with("/procs.rs") {
                continue;
            }
            let code = strip(&std::fs::read_to_string(&path).expect("a source file"), false);
            for line in word_lines(&code, "Command") {
                if code.lines().nth(line - 1).is_some_and(|l| l.contains("Command::new")) {
                    found.push(format!("{rel}:{line}"));
                }
            }
        }
    }
    assert!(found.is_empty(), "processes started outside crates/quiver-cli/src/supervisor.rs: {found:?}");
}
