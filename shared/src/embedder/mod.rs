//! The CLIP embedder: the ports ([`ImageEmbedder`], [`TextEmbedder`]) and their ONNX Runtime
//! adapters ([`ClipImageEncoder`], [`ClipTextEncoder`]), which load a model bundle in
//! immich's layout and reproduce the reference preprocessing and tokenization.

pub mod bundle;
mod clip;
pub mod compare;
pub mod decode;
mod jpeg;
pub mod onnx;
pub mod preprocess;
pub mod resample;
pub mod tokenize;

pub use bundle::{ModelBundle, ModelConfig, ModelError, ModelIdentity, PreprocessConfig, Tower};
pub use clip::{ClipImageEncoder, ClipTextEncoder, ImageInputLayout, PreparedImage, DEFAULT_JPEG_REDUCTION_MARGIN};
pub use decode::{DecodeLimits, DecodedImage, ImageError, SupportedFormat};
pub use tokenize::{TextError, Tokens};

/// An L2-normalised embedding.
pub type Embedding = Vec<f32>;

/// An image's embedding and what decoding learned about it.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageEmbedding {
    pub vector: Embedding,
    /// Size after EXIF orientation, before resizing.
    pub width: u32,
    pub height: u32,
    pub format: SupportedFormat,
}

/// ONNX Runtime failed while running a model: the whole batch failed, and a retry may help.
#[derive(Debug, Clone, thiserror::Error)]
#[error("inference failed: {0}")]
pub struct InferenceError(pub String);

/// Why texts could not be embedded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TextEmbedError {
    #[error(transparent)]
    Text(#[from] TextError),
    #[error(transparent)]
    Inference(#[from] InferenceError),
}

/// Turns image bytes into embeddings.
pub trait ImageEmbedder: Send + Sync {
    /// Embedding dimension.
    fn dim(&self) -> usize;
    /// Embeds several images in one model run. A bad image gets its own `Err` and does not
    /// affect the others; the outer `Err` means inference itself failed.
    fn embed_images(&self, images: &[&[u8]]) -> Result<Vec<Result<ImageEmbedding, ImageError>>, InferenceError>;
}

/// Turns query text into embeddings in the same space as the images.
pub trait TextEmbedder: Send + Sync {
    fn dim(&self) -> usize;
    /// Embeds several texts in one model run; any invalid text fails the call.
    fn embed_texts(&self, texts: &[&str]) -> Result<Vec<Embedding>, TextEmbedError>;

    fn embed_text(&self, text: &str) -> Result<Embedding, TextEmbedError> {
        Ok(self.embed_texts(&[text])?.remove(0))
    }
}

/// Scales `v` to unit length (a zero vector stays zero).
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// Cosine similarity of two vectors (1.0 = same direction).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}
