//! Everything the ingest and search Lambdas share: configuration, the CLIP embedder
//! (image decoding and preprocessing, tokenizer, ONNX Runtime sessions) and their errors.
//!
//! The Lambda binaries stay thin: they read [`config::Config`], build the adapters once at
//! init and hand events to the functions here.

pub mod config;
pub mod embedder;

pub use config::{Config, ConfigError};
pub use embedder::{Embedding, ImageEmbedder, TextEmbedder};
