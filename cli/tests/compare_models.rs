//! `clip-search compare-models`, run as a user runs it, on the committed tiny model: a bundle agrees
//! with a copy of itself, and a copy whose preprocessing drifts fails the gate and names the worst image.

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use tests::{fixtures, onnxruntime_library};

fn compare(reference: &Path, candidate: &Path, queries: &Path) -> (bool, Value) {
    let output = Command::new(env!("CARGO_BIN_EXE_clip-search"))
        .arg("compare-models")
        .args([reference, candidate])
        .arg("--images")
        .args([fixtures().join("images"), fixtures().join("bad").join("empty.jpg")])
        .arg("--queries")
        .arg(queries)
        .arg("--json")
        .env("ORT_DYLIB_PATH", onnxruntime_library().expect("ONNX Runtime: bash scripts/install-onnxruntime"))
        .output()
        .expect("clip-search runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\nstderr: {}", String::from_utf8_lossy(&output.stderr)));
    (output.status.success(), report)
}

/// A copy of the tiny model whose image normalisation is shifted: the candidate "drifts".
fn drifted_copy(dir: &Path) {
    let source = fixtures().join("tiny-clip");
    for entry in walk(&source) {
        let target = dir.join(entry.strip_prefix(&source).unwrap());
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(&entry, &target).unwrap();
    }
    let path = dir.join("visual/preprocess_cfg.json");
    let mut cfg: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg["mean"] = serde_json::json!([0.2, 0.7, 0.1]);
    std::fs::write(&path, cfg.to_string()).unwrap();
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flat_map(|e| {
            let path = e.unwrap().path();
            if path.is_dir() {
                walk(&path)
            } else {
                vec![path]
            }
        })
        .collect()
}

#[test]
#[ignore = "needs ONNX Runtime: bash scripts/test (or scripts/install-onnxruntime)"]
fn a_bundle_passes_against_itself_and_a_drifting_copy_fails_the_gate() {
    let work = tempfile::tempdir().unwrap();
    let queries = work.path().join("queries.txt");
    std::fs::write(&queries, "a photo of a cat\n\nred car on a street\n一只猫在沙发上\n").unwrap();
    let model = fixtures().join("tiny-clip");

    let (passed, same) = compare(&model, &model, &queries);
    assert!(passed, "{same:#}");
    let comparison = &same["comparison"];
    assert_eq!(comparison["texts"]["count"], 3, "blank lines are not queries: {same:#}");
    assert!(comparison["images"]["min"].as_f64().unwrap() > 0.9999, "{same:#}");
    assert_eq!(comparison["ranking"]["top1"], 1.0, "{same:#}");
    let skipped = comparison["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "the empty file is skipped, not fatal: {same:#}");
    assert!(skipped[0]["reason"].as_str().unwrap().contains("empty"), "{same:#}");

    let drifted = work.path().join("drifted");
    drifted_copy(&drifted);
    let (passed, report) = compare(&model, &drifted, &queries);
    assert!(!passed, "a drifting image tower must fail the gate: {report:#}");
    assert_eq!(report["passed"], false);
    let images = &report["comparison"]["images"];
    assert!(images["min"].as_f64().unwrap() < 0.99, "{report:#}");
    assert!(images["worst"].as_str().unwrap().contains("fixtures/images/"), "{report:#}");
    // Only the image tower drifted: the queries still agree exactly.
    assert!(report["comparison"]["texts"]["min"].as_f64().unwrap() > 0.9999, "{report:#}");
}
