//! Everything the ingest and search Lambdas share: configuration, the CLIP embedder, the ports
//! to the world (vector index, object store) with their Milvus and S3 adapters, and the use
//! cases that combine them (ingest an S3 event, answer a search request).
//!
//! The Lambda binaries stay thin: they read the configuration, build the adapters once at
//! init (see [`setup`]) and hand each event to a use case here.

pub mod api;
pub mod backfill;
pub mod config;
pub mod embedder;
pub mod index;
pub mod ingest;
pub mod retry;
pub mod search;
pub mod setup;
pub mod store;

pub use config::{Config, ConfigError};
pub use embedder::{Embedding, ImageEmbedder, TextEmbedder};
