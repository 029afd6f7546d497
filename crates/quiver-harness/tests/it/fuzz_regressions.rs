//! Replays every input under `fuzz/regressions/TARGET/` (and the seeds under
//! `fuzz/corpus/TARGET/seed-*`) through the fuzz targets' functions, so what
//! a fuzzer once found stays fixed in `cargo test`, without nightly.

use std::path::Path;

fn inputs(target: &str) -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut found = Vec::new();
    for dir in [root.join("regressions").join(target), root.join("corpus").join(target)] {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if dir.ends_with(target) && (dir.parent().unwrap().ends_with("regressions") || name.starts_with("seed-")) {
                found.push(std::fs::read(entry.path()).unwrap());
            }
        }
    }
    found
}

/// Runs `f` on every input of `target`, failing if any of them panicked,
/// even where the code under test catches the panic (as the batch reader
/// does around arrow-ipc): the fuzzer treats those as crashes too.
fn replay(target: &str, f: fn(&[u8])) {
    use std::cell::Cell;
    // Per thread: the tests run in parallel, and the hook runs on the
    // panicking thread.
    thread_local!(static PANICS: Cell<u32> = const { Cell::new(0) });
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.with(|p| p.set(p.get() + 1));
            previous(info);
        }));
    });
    for (i, input) in inputs(target).iter().enumerate() {
        let before = PANICS.with(Cell::get);
        f(input);
        assert_eq!(PANICS.with(Cell::get), before, "{target} input {i} panicked");
    }
}

#[test]
fn checkpoint_inputs_give_errors_or_checkpoints() {
    replay("checkpoint", quiver_harness::fuzz::checkpoint_bytes);
}

#[test]
fn ipc_object_inputs_give_errors_or_batches() {
    replay("ipc_object", quiver_harness::fuzz::ipc_object);
}

#[test]
fn cached_layout_inputs_give_errors_or_valid_batches() {
    replay("cached_layout", quiver_harness::fuzz::cached_layout);
    // And inputs made here: null counts from 0 to past the row count (and
    // negative), bodies of random bytes.
    let mut rng = quiver::shm::rand::SplitMix64::new(15);
    for i in 0..2_000u64 {
        let mut input: Vec<u8> = (0..rng.next_u64() % 1_200).map(|_| rng.next_u64() as u8).collect();
        if input.len() >= 16 {
            let counts = [i % 45, (rng.next_u64() % 45).wrapping_sub(i % 3)];
            input[..8].copy_from_slice(&counts[0].to_le_bytes());
            input[8..16].copy_from_slice(&counts[1].to_le_bytes());
        }
        quiver_harness::fuzz::cached_layout(&input);
    }
}

#[test]
fn model_file_inputs_give_errors_or_models_that_work() {
    replay("model_file", quiver_harness::fuzz::model_file);
    // And inputs made here: the sample file, mutated (bytes changed,
    // dropped, numbers swapped for extreme ones).
    let sample = quiver_harness::fuzz::sample_model_file();
    quiver_harness::fuzz::model_file(&sample);
    for mutant in quiver_harness::fuzz::mutants(&sample, 17, 1_500) {
        quiver_harness::fuzz::model_file(&mutant);
    }
    let text = String::from_utf8(sample).unwrap();
    for (from, to) in [
        ("\"eta0\": 0.01", "\"eta0\": 1e308"),
        ("\"rows_seen\": 20", "\"rows_seen\": 18446744073709551615"),
        ("\"stalled\": 0", "\"stalled\": 4294967295"),
        ("\"power_t\": 0.25", "\"power_t\": -1e300"),
        ("\"alpha\": 0.0001", "\"alpha\": 1e300"),
        ("\"n_iter_no_change\": 5", "\"n_iter_no_change\": 0"),
        ("\"epoch_rows\": 10000", "\"epoch_rows\": 1"),
    ] {
        assert!(text.contains(from), "{from}");
        quiver_harness::fuzz::model_file(text.replace(from, to).as_bytes());
    }
}

#[test]
fn store_file_inputs_give_errors_or_work() {
    replay("store_file", quiver_harness::fuzz::store_patches);
}

#[test]
fn import_file_inputs_give_errors_or_batches() {
    replay("import_file", quiver_harness::fuzz::import_file);
}

/// Issue 12, case 6: corrupt Arrow files made arrow-ipc's reader panic in
/// `quiver produce` (35 of 500 mutants). Now every mutant of every seed
/// gives an error or batches that validate, with no panic, caught or not.
#[test]
fn mutated_import_files_give_errors_never_panics() {
    use std::cell::Cell;
    thread_local!(static PANICS: Cell<u32> = const { Cell::new(0) });
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.with(|p| p.set(p.get() + 1));
        previous(info);
    }));
    let (mut refused, mut read) = (0, 0);
    for (name, bytes) in quiver_harness::fuzz::sample_import_files() {
        for (i, mutant) in quiver_harness::fuzz::mutants(&bytes, 12, 500).iter().enumerate() {
            let before = PANICS.with(Cell::get);
            match quiver::arrow::import::read_bytes(mutant, 7) {
                Ok(_) => read += 1,
                Err(_) => refused += 1,
            }
            quiver_harness::fuzz::import_file(mutant);
            assert_eq!(PANICS.with(Cell::get), before, "mutant {i} of {name} panicked");
        }
    }
    assert!(refused > 100 && read > 100, "the mutants exercise both outcomes: {refused} refused, {read} read");
}

/// Writes the seed inputs (run by hand when the formats change).
#[test]
#[ignore = "writes fuzz/corpus/*/seed-*"]
fn write_the_fuzz_seeds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    for target in ["checkpoint", "ipc_object", "store_file", "import_file", "cached_layout", "model_file"] {
        std::fs::create_dir_all(root.join(target)).unwrap();
    }
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../quiver/tests/fixtures/checkpoint-v1.qvck");
    std::fs::copy(fixture, root.join("checkpoint/seed-fixture")).unwrap();
    std::fs::write(root.join("ipc_object/seed-batch"), quiver_harness::fuzz::sample_message()).unwrap();
    // A patch of four bytes at offset 0 (the magic), and one in the table region.
    std::fs::write(root.join("store_file/seed-magic"), [0, 0, 0, 0, 4, 1, 2, 3, 4]).unwrap();
    let mut table = 6_320_128u32.to_le_bytes().to_vec();
    table.extend([8, 0xff, 0, 0, 0, 0, 0, 0, 0]);
    std::fs::write(root.join("store_file/seed-table"), table).unwrap();
    std::fs::write(root.join("model_file/seed-model"), quiver_harness::fuzz::sample_model_file()).unwrap();
    for (name, bytes) in quiver_harness::fuzz::sample_import_files() {
        std::fs::write(root.join("import_file").join(name), bytes).unwrap();
    }
    // The null counts of the good message (6 and 6), its body untouched.
    let counts: Vec<u8> = [6i64, 6].iter().flat_map(|c| c.to_le_bytes()).collect();
    std::fs::write(root.join("cached_layout/seed-good"), counts).unwrap();
}
