//! Reads the pinned ONNX Runtime version from `onnxruntime.version` at the repository root, the
//! one place it is written, so the code and the scripts cannot disagree.

fn main() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../onnxruntime.version");
    println!("cargo:rerun-if-changed={path}");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let version = text
        .lines()
        .find_map(|line| line.strip_prefix("version="))
        .unwrap_or_else(|| panic!("{path} has no `version=` line"));
    println!("cargo:rustc-env=ORT_VERSION={}", version.trim());
}
