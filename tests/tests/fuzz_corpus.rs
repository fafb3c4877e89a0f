//! Replays every committed fuzz corpus (`tests/fuzz/corpus/<target>/`)
//! through its target in `trygg_tests::fuzz`, on the stable toolchain, so
//! that what the fuzzer once found stays fixed and what it reached still
//! runs clean. Fuzzing itself needs nightly: see `tests/fuzz/README.md`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use trygg_tests::fuzz::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The names of the entries of `dir` (files or directories), sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn replay(target: &str) {
    let (_, run) = TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no fuzz target `{target}` in trygg_tests::fuzz::TARGETS"));
    let dir = fuzz_dir().join("corpus").join(target);
    let files = names_in(&dir);
    assert!(
        !files.is_empty(),
        "the corpus {} is empty: seed it (see tests/fuzz/README.md)",
        dir.display()
    );
    let mut failed = Vec::new();
    for name in &files {
        let path = dir.join(name);
        let data =
            std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        if catch_unwind(AssertUnwindSafe(|| run(&data))).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} inputs of `{target}` panicked (the message of each is above):\n{}",
        failed.len(),
        files.len(),
        failed.join("\n")
    );
}

macro_rules! replay_tests {
    ($($target:ident),* $(,)?) => {
        $(
            #[test]
            fn $target() {
                replay(stringify!($target));
            }
        )*

        #[test]
        fn every_target_has_a_replay_test_a_corpus_and_a_fuzz_binary() {
            let mut tested = vec![$(stringify!($target).to_string()),*];
            tested.sort();
            let mut listed: Vec<String> = TARGETS.iter().map(|(n, _)| n.to_string()).collect();
            listed.sort();
            assert_eq!(tested, listed, "replay tests vs trygg_tests::fuzz::TARGETS");
            assert_eq!(
                names_in(&fuzz_dir().join("corpus")),
                listed,
                "corpus directories vs TARGETS"
            );
            let binaries: Vec<String> = names_in(&fuzz_dir().join("fuzz_targets"))
                .iter()
                .map(|f| f.strip_suffix(".rs").unwrap_or(f).to_string())
                .collect();
            assert_eq!(binaries, listed, "fuzz_targets/*.rs vs TARGETS");
        }
    };
}

replay_tests!(
    device_classify,
    device_event,
    device_heartbeat,
    device_receipt,
    device_topic,
    uplink_batch,
    uplink_receipt,
    gateway_config,
    bridge_config,
    sim_config,
);
