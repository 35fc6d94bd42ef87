//! Fixtures and golden files shared by the integration tests in `tests/tests/`.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use shared::embedder::onnx::RuntimeOptions;
use shared::embedder::{ClipImageEncoder, ClipTextEncoder, ModelBundle};

/// `tests/fixtures/` of this repository.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// The committed tiny CLIP model (random weights, real architecture and vocabulary).
pub fn tiny_model() -> ModelBundle {
    ModelBundle::open(fixtures().join("tiny-clip")).expect("tiny model bundle")
}

/// Runtime options from the environment (ORT_DYLIB_PATH, ORT_INTRA_THREADS), defaults otherwise.
pub fn runtime() -> RuntimeOptions {
    let threads = std::env::var("ORT_INTRA_THREADS").ok().and_then(|v| v.parse().ok());
    RuntimeOptions { dylib_path: std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from), intra_threads: threads }
}

pub fn image_encoder() -> ClipImageEncoder {
    ClipImageEncoder::load(&tiny_model(), &runtime(), shared::config::DEFAULT_MAX_IMAGE_PIXELS)
        .expect("visual tower loads")
}

pub fn text_encoder() -> ClipTextEncoder {
    ClipTextEncoder::load(&tiny_model(), &runtime()).expect("textual tower loads")
}

#[derive(Debug, Deserialize)]
pub struct GoldenImage {
    pub file: String,
    pub width: u32,
    pub height: u32,
    pub tensor: String,
    pub embedding: Vec<f32>,
}

#[derive(Debug, Deserialize)]
pub struct GoldenText {
    pub text: String,
    pub ids: Vec<u32>,
    pub embedding: Vec<f32>,
}

#[derive(Deserialize)]
struct ImagesFile {
    images: Vec<GoldenImage>,
}

#[derive(Deserialize)]
struct TextsFile {
    texts: Vec<GoldenText>,
}

fn golden_dir() -> PathBuf {
    fixtures().join("golden")
}

/// Per fixture image: decoded size, reference tensor file and embedding (tests/reference/golden.py).
pub fn golden_images() -> Vec<GoldenImage> {
    let text = std::fs::read_to_string(golden_dir().join("images.json")).expect("golden/images.json");
    serde_json::from_str::<ImagesFile>(&text).expect("golden images parse").images
}

/// Per query: token ids and embedding from the reference.
pub fn golden_texts() -> Vec<GoldenText> {
    let text = std::fs::read_to_string(golden_dir().join("texts.json")).expect("golden/texts.json");
    serde_json::from_str::<TextsFile>(&text).expect("golden texts parse").texts
}

/// The reference's preprocessed tensor (little-endian f32, CHW).
pub fn golden_tensor(golden: &GoldenImage) -> Vec<f32> {
    let bytes = std::fs::read(golden_dir().join(&golden.tensor)).expect("golden tensor");
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

pub fn fixture_image(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join("images").join(name)).unwrap_or_else(|e| panic!("fixture image {name}: {e}"))
}

pub fn bad_input(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join("bad").join(name)).unwrap_or_else(|e| panic!("bad input {name}: {e}"))
}
