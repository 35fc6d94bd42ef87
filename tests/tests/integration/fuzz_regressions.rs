//! Replays every committed fuzz input (`fuzz/regressions/TARGET/*`) through the fuzz target's
//! own function, on stable, so a crash the fuzzer once found stays fixed. CI runs these, not
//! the fuzzer (`scripts/fuzz` runs that; docs/fuzzing.md has the record).

#[path = "../../../fuzz/src/targets.rs"]
mod targets;

use std::path::PathBuf;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions").join(target);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("readable directory").path())
        .filter(|path| path.is_file())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "{} holds no regression inputs", dir.display());
    for input in inputs {
        let bytes = std::fs::read(&input).expect("readable input");
        let outcome = std::panic::catch_unwind(|| run(&bytes));
        assert!(outcome.is_ok(), "{} fails again", input.display());
    }
}

#[test]
fn decode_image_regressions() {
    replay("decode_image", targets::decode_image);
}

#[test]
fn sniff_exif_regressions() {
    replay("sniff_exif", targets::sniff_exif);
}

#[test]
fn search_request_regressions() {
    replay("search_request", targets::search_request);
}

#[test]
fn s3_event_regressions() {
    replay("s3_event", targets::s3_event);
}

#[test]
fn webhook_regressions() {
    replay("webhook", targets::webhook);
}
