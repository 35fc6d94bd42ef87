//! Everything the ingest and search Lambdas share, in layers:
//!
//! - [`domain`]: the use cases (ingest, search, backfill, reconcile) and the types they speak in.
//!   They reach the world only through the ports below.
//! - [`embedder`], [`index`], [`store`]: the ports (traits) with their adapters: CLIP on ONNX
//!   Runtime, Milvus, S3.
//! - [`http`] and [`events`]: entrypoints that only translate: HTTP requests and S3 events in,
//!   use-case calls and JSON out.
//! - [`config`] reads the environment; [`wiring`] builds the adapters from it once per container.

pub mod config;
pub mod domain;
pub mod embedder;
pub mod events;
pub mod http;
pub mod index;
pub mod store;
pub mod time;
pub mod wiring;

pub use config::{Config, ConfigError};
pub use embedder::{Embedding, ImageEmbedder, TextEmbedder};
