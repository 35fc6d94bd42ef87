//! Loading a bundle that is incomplete or wrong gives a typed error naming the file.

use std::path::Path;

use shared::embedder::{ClipImageEncoder, ClipTextEncoder, ModelBundle, ModelError};
use tests::{runtime, tiny_model};

/// A copy of the tiny model to break.
fn copy_of_tiny_model() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = tiny_model().root().to_path_buf();
    for sub in ["", "visual", "textual"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        for entry in std::fs::read_dir(src.join(sub)).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                std::fs::copy(&path, dir.path().join(sub).join(path.file_name().unwrap())).unwrap();
            }
        }
    }
    dir
}

fn visual(dir: &Path) -> Result<ClipImageEncoder, ModelError> {
    ClipImageEncoder::load(&ModelBundle::open(dir)?, &runtime(), 1_000_000)
}

fn textual(dir: &Path) -> Result<ClipTextEncoder, ModelError> {
    ClipTextEncoder::load(&ModelBundle::open(dir)?, &runtime())
}

fn message<T>(result: Result<T, ModelError>) -> (ModelError, String) {
    let err = result.err().expect("loading should fail");
    let msg = err.to_string();
    (err, msg)
}

#[test]
#[ignore = "needs ONNX Runtime: bash scripts/test (or scripts/install-onnxruntime)"]
fn a_renamed_visual_model_is_reported_with_its_path() {
    let dir = copy_of_tiny_model();
    std::fs::rename(dir.path().join("visual/model.onnx"), dir.path().join("visual/visual.onnx")).unwrap();
    let (err, msg) = message(visual(dir.path()));
    assert!(matches!(err, ModelError::MissingFile { .. }), "{err:?}");
    assert!(msg.contains("visual/model.onnx") && msg.contains("image tower"), "{msg}");
    // The text tower does not need the visual files.
    textual(dir.path()).expect("text tower still loads");
}

#[test]
#[ignore = "needs ONNX Runtime: bash scripts/test (or scripts/install-onnxruntime)"]
fn a_missing_tokenizer_is_reported_with_its_path() {
    let dir = copy_of_tiny_model();
    std::fs::remove_file(dir.path().join("textual/tokenizer.json")).unwrap();
    let (err, msg) = message(textual(dir.path()));
    assert!(matches!(err, ModelError::MissingFile { .. }), "{err:?}");
    assert!(msg.contains("textual/tokenizer.json"), "{msg}");
    visual(dir.path()).expect("image tower still loads");
}

#[test]
fn a_missing_config_fails_at_open() {
    let dir = copy_of_tiny_model();
    std::fs::remove_file(dir.path().join("config.json")).unwrap();
    let (err, msg) = message(ModelBundle::open(dir.path()));
    assert!(matches!(err, ModelError::MissingFile { .. }), "{err:?}");
    assert!(msg.contains("config.json"), "{msg}");
}

#[test]
#[ignore = "needs ONNX Runtime: bash scripts/test (or scripts/install-onnxruntime)"]
fn unreadable_json_names_the_file() {
    let dir = copy_of_tiny_model();
    std::fs::write(dir.path().join("visual/preprocess_cfg.json"), "{ \"size\": [224, ").unwrap();
    let (err, msg) = message(visual(dir.path()));
    assert!(matches!(err, ModelError::BadJson { .. }), "{err:?}");
    assert!(msg.contains("preprocess_cfg.json"), "{msg}");
}

#[test]
#[ignore = "needs ONNX Runtime: bash scripts/test (or scripts/install-onnxruntime)"]
fn an_unknown_interpolation_is_refused() {
    let dir = copy_of_tiny_model();
    let path = dir.path().join("visual/preprocess_cfg.json");
    let cfg = std::fs::read_to_string(&path).unwrap().replace("\"bicubic\"", "\"hamming\"");
    std::fs::write(&path, cfg).unwrap();
    let (err, msg) = message(visual(dir.path()));
    assert!(matches!(err, ModelError::UnknownInterpolation { .. }), "{err:?}");
    assert!(msg.contains("hamming"), "{msg}");
}

#[test]
#[ignore = "needs ONNX Runtime: bash scripts/test (or scripts/install-onnxruntime)"]
fn an_embedding_dim_that_differs_from_the_config_is_refused_for_both_towers() {
    let dir = copy_of_tiny_model();
    let path = dir.path().join("config.json");
    let cfg = std::fs::read_to_string(&path).unwrap().replace("\"embed_dim\": 64", "\"embed_dim\": 512");
    std::fs::write(&path, cfg).unwrap();
    for (err, msg) in [message(visual(dir.path())), message(textual(dir.path()))] {
        assert!(matches!(err, ModelError::DimMismatch { actual: 64, expected: 512, .. }), "{err:?}");
        assert!(msg.contains("config.json") && msg.contains("64") && msg.contains("512"), "{msg}");
    }
}

#[test]
#[ignore = "needs ONNX Runtime: bash scripts/test (or scripts/install-onnxruntime)"]
fn a_context_length_the_text_model_cannot_take_is_refused() {
    let dir = copy_of_tiny_model();
    let path = dir.path().join("config.json");
    let cfg = std::fs::read_to_string(&path).unwrap().replace("\"context_length\": 77", "\"context_length\": 64");
    std::fs::write(&path, cfg).unwrap();
    let (err, msg) = message(textual(dir.path()));
    assert!(matches!(err, ModelError::UnsupportedInput { .. }), "{err:?}");
    assert!(msg.contains("textual/model.onnx") && msg.contains("64"), "{msg}");
}

#[test]
#[ignore = "needs ONNX Runtime: bash scripts/test (or scripts/install-onnxruntime)"]
fn a_model_size_that_differs_from_the_preprocess_config_is_refused() {
    let dir = copy_of_tiny_model();
    let path = dir.path().join("visual/preprocess_cfg.json");
    let cfg = std::fs::read_to_string(&path).unwrap().replace("224", "256");
    std::fs::write(&path, cfg).unwrap();
    let (err, msg) = message(visual(dir.path()));
    assert!(matches!(err, ModelError::UnsupportedInput { .. }), "{err:?}");
    assert!(msg.contains("224x224") && msg.contains("256x256"), "{msg}");
}

#[test]
#[ignore = "needs ONNX Runtime: bash scripts/test (or scripts/install-onnxruntime)"]
fn a_model_that_is_not_onnx_is_reported_with_its_path() {
    let dir = copy_of_tiny_model();
    std::fs::write(dir.path().join("visual/model.onnx"), b"not a model").unwrap();
    let (err, msg) = message(visual(dir.path()));
    assert!(matches!(err, ModelError::Session(_)), "{err:?}");
    assert!(msg.contains("visual/model.onnx"), "{msg}");
}

#[test]
fn each_family_bundle_says_what_its_family_needs() {
    use shared::embedder::bundle::ResizeMode;
    use tests::{CLIP, SIGLIP, SIGLIP2, XLMR};
    // (family, context length, canonicalize, resize mode, pad token)
    let expected = [
        (CLIP, 77, false, ResizeMode::Shortest, "<|endoftext|>"),
        (SIGLIP, 64, true, ResizeMode::Squash, "<pad>"),
        (SIGLIP2, 64, true, ResizeMode::Squash, "<pad>"),
        (XLMR, 77, false, ResizeMode::Shortest, "<pad>"),
    ];
    for (family, context_length, canonicalize, resize_mode, pad) in expected {
        let bundle = family.model();
        let config = bundle.model_config().unwrap();
        assert_eq!((config.context_length, config.canonicalize), (context_length, canonicalize), "{}", family.name);
        assert_eq!(bundle.preprocess_config().unwrap().resize_mode, resize_mode, "{}", family.name);
        assert_eq!(bundle.pad_token().unwrap().as_deref(), Some(pad), "{}", family.name);
    }
}
