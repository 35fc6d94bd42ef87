//! The integration tests: one test binary (one link, one process), a module per area. The helpers
//! they share are the test kit, `tests/src/lib.rs` (the `tests` crate); a module keeps only what
//! is its own.
//!
//! What goes where:
//! - the embedder alone (fixtures and the tiny model, no services):
//!   - `image_parity`, `text_parity`: the image and text paths against the Python reference's golden files, for
//!     every model family's tiny bundle (`tests::FAMILIES`);
//!   - `reduced_decode`: large JPEGs decoded at reduced scale against the full decode;
//!   - `bad_input`: inputs that must be refused with the right error;
//!   - `model_bundle`: incomplete or wrong model bundles;
//! - the HTTP API's contract: `openapi` (the committed OpenAPI document; its live test uses the stack);
//! - the use cases with real adapters (the local stack's SeaweedFS and Milvus Lite):
//!   - `ingest_handler`: S3 events through ingest into Milvus;
//!   - `batch_operations`: S3 Batch Operations invocations (schema 1.0 and 2.0) and each task's result code;
//!   - `queue`: SQS batches at the handler (only failed messages reported) and through a real queue
//!     with the bridge's event source mapping (redelivery, then the failure queue);
//!   - `consistency`: reordered, repeated and racing events, bad overwrites, one model per collection;
//!   - `flush`: Milvus Lite's flushes lose and duplicate nothing, also under concurrent reads; the idle flush;
//!   - `faults`: Milvus and S3 faults through fault-injecting proxies, then the failure queue replayed;
//!   - `search_handler`: the search API on API Gateway v1 and v2 requests;
//!   - `search_params`: every `/search` parameter;
//!   - `isolation`: per-user isolation, with verified claims, forged ones and cross-tenant attempts;
//!   - `ranking`: results against a brute-force ranking of the golden embeddings, per model family;
//!   - `model_fetch`: the model fetched from S3 at init, in ranged GETs or whole;
//! - the whole deployment, locally: `full_path` (S3 → webhook → ingest → search over HTTP) and
//!   `browser` (the web page in headless Chromium).
//!
//! Which tests run: a plain `cargo test` runs those that need nothing installed. A test that
//! needs ONNX Runtime (it loads the tiny model) is `#[ignore = "needs ONNX Runtime: …"]`; one that
//! needs the local stack is `#[ignore = "needs the local stack: …"]`. `bash scripts/test` installs
//! both and runs everything (`-- --include-ignored`); run one group by hand with
//! `cargo test -p tests --test integration -- --ignored`, after `bash scripts/install-onnxruntime`
//! (and `bash scripts/stack up --detach --no-demo`). A stack test never skips itself: without the
//! stack it fails, saying how to start it.

mod bad_input;
mod batch_operations;
mod browser;
mod consistency;
mod faults;
mod flush;
mod full_path;
mod fuzz_regressions;
mod hostile;
mod image_parity;
mod ingest_handler;
mod isolation;
mod limits;
mod model_bundle;
mod model_fetch;
mod openapi;
mod queue;
mod ranking;
mod reduced_decode;
mod search_handler;
mod search_params;
mod text_parity;
