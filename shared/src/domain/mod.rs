//! The use cases and the types they speak in. Nothing here names Milvus, S3, ONNX Runtime or
//! Lambda: the use cases take the ports of [`crate::embedder`], [`crate::index`] and
//! [`crate::store`], so the Lambdas, the CLI and the tests all call the same code.

pub mod backfill;
pub mod ingest;
pub mod record;
pub mod retry;
pub mod scope;
pub mod search;

/// An error with every cause after it (`a: b: c`): errors keep their causes as `source`s, and the
/// edges (logs, the Lambda error report, the CLI) print the whole chain.
pub fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}
