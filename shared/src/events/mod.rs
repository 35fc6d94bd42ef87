//! Event sources: what arrives at the ingest function, decoded into the use case's
//! [`ObjectChange`](crate::domain::ingest::ObjectChange)s: S3 notifications invoking the function
//! directly ([`s3`]), through an SQS queue ([`sqs`]), and S3 Batch Operations tasks ([`batch`]).
//! [`handle`] tells them apart.

pub mod batch;
pub mod metrics;
pub mod s3;
pub mod sqs;

pub use aws_lambda_events::s3::S3Event;
pub use aws_lambda_events::sqs::SqsEvent;
pub use s3::{changes_from_event, decode_s3_key, ingest};
use serde_json::Value;

use crate::domain::ingest::{IngestError, Ingestor};

/// The ingest function's handler. An event whose records come from `aws:sqs` is a batch of queued
/// S3 notifications (`IngestTrigger=Queue`): the answer lists the failed messages, and the
/// invocation itself succeeds. Anything else with `Records` is an S3 notification (`Direct`): the
/// answer is the report, and a failure fails the invocation so that Lambda retries it. An S3
/// Batch Operations invocation (`invocationSchemaVersion`) is answered with each task's result
/// code, and succeeds: S3 itself retries the tasks marked `TemporaryFailure`.
pub async fn handle(
    ingestor: &Ingestor,
    event: Value,
    context: &lambda_runtime::Context,
) -> Result<Value, IngestError> {
    let unknown = |e: serde_json::Error| IngestError::UnknownEvent(e.to_string());
    if event.get("invocationSchemaVersion").is_some() {
        let event: batch::BatchEvent = serde_json::from_value(event).map_err(unknown)?;
        let deadline = s3::retry_deadline(context.deadline, std::time::SystemTime::now());
        let response = batch::ingest_tasks(ingestor, &event, deadline).await;
        let count = |code| response.results.iter().filter(|r| r.result_code == code).count() as u64;
        metrics::emit(
            "ingest",
            &[
                ("TasksSucceeded", count(batch::ResultCode::Succeeded)),
                ("TasksTemporaryFailure", count(batch::ResultCode::TemporaryFailure)),
                ("TasksPermanentFailure", count(batch::ResultCode::PermanentFailure)),
            ],
        );
        tracing::info!(invocation = %response.invocation_id, results = ?response.results, "S3 Batch Operations tasks");
        return Ok(serde_json::to_value(response).expect("plain data"));
    }
    let Some(records) = event.get("Records").and_then(Value::as_array) else {
        return Err(IngestError::UnknownEvent(
            "no `Records` or `invocationSchemaVersion`: expected an S3 event notification, an SQS batch of them \
             or an S3 Batch Operations invocation"
                .into(),
        ));
    };
    let from_sqs = records.first().and_then(|r| r.get("eventSource")).and_then(Value::as_str) == Some("aws:sqs");
    if from_sqs {
        let event: SqsEvent = serde_json::from_value(event).map_err(unknown)?;
        let outcome = sqs::ingest_within(ingestor, &event, context).await;
        tracing::info!(report = ?outcome.report, failed = ?outcome.failed, test_events = outcome.test_events, "SQS batch ingested");
        return Ok(serde_json::to_value(outcome.response()).expect("plain data"));
    }
    let event: S3Event = serde_json::from_value(event).map_err(unknown)?;
    let report = s3::ingest_within(ingestor, &event, context).await?;
    Ok(serde_json::to_value(report).expect("plain data"))
}
