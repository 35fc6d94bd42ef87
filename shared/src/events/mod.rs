//! Event sources: what arrives at the ingest function, decoded into the use case's
//! [`ObjectChange`](crate::domain::ingest::ObjectChange)s. Only S3 notifications today; another
//! source (SQS, S3 Batch Operations) gets a module of its own here.

pub mod metrics;
pub mod s3;

pub use aws_lambda_events::s3::S3Event;
pub use s3::{changes_from_event, decode_s3_key, ingest};
