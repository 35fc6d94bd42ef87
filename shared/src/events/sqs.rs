//! S3 notifications delivered through an SQS queue (the template's `IngestTrigger=Queue`): an
//! event source mapping hands ingest up to `IngestBatchSize` messages at once, each carrying one
//! S3 event (or the `s3:TestEvent` S3 sends when notifications are configured).
//!
//! All the objects of a batch are embedded together. Only the messages that failed are reported
//! (`batchItemFailures`), so Lambda deletes the others and the failed ones come back after the
//! visibility timeout, until the queue's redrive policy parks them in the failure queue.

use std::collections::BTreeSet;

use aws_lambda_events::s3::S3Event;
use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use serde_json::Value;

use super::s3::changes_from_event;
use crate::domain::describe;
use crate::domain::ingest::{IngestReport, Ingestor, ObjectChange};

/// What one message holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// An S3 event notification.
    Changes(Vec<ObjectChange>),
    /// `s3:TestEvent`: S3 checking that it may write to the queue; nothing to do.
    Test,
    /// Not an S3 event: it can never succeed, so it is reported failed and ends in the failure queue.
    Malformed(String),
}

/// Reads a message body as S3 writes it to a queue.
pub fn message(body: Option<&str>) -> Message {
    let Some(body) = body else { return Message::Malformed("the message has no body".into()) };
    let value: Value = match serde_json::from_str(body) {
        Ok(value) => value,
        Err(e) => return Message::Malformed(format!("the body is not JSON: {e}")),
    };
    if value.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        return Message::Test;
    }
    if value.get("Records").is_none() {
        return Message::Malformed("the body is not an S3 event notification (no Records)".into());
    }
    match serde_json::from_value::<S3Event>(value) {
        Ok(event) => Message::Changes(changes_from_event(&event)),
        Err(e) => Message::Malformed(format!("the body is not an S3 event notification: {e}")),
    }
}

/// What a batch did: the report over every message, and the messages to deliver again.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    pub report: IngestReport,
    /// Message ids, each with why it failed.
    pub failed: Vec<(String, String)>,
    pub test_events: usize,
}

impl BatchOutcome {
    /// The function's answer to the event source mapping (with `ReportBatchItemFailures`).
    pub fn response(&self) -> SqsBatchResponse {
        let mut response = SqsBatchResponse::default();
        for (id, _) in &self.failed {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id.clone();
            response.batch_item_failures.push(failure);
        }
        response
    }
}

/// Applies every message of the batch in one go: their objects are fetched and embedded together.
/// If that fails (a transient S3 or Milvus error that outlasted its retries), each message is
/// applied again on its own, so that only the messages that still fail are delivered again;
/// what the first pass already indexed is unchanged by then and is not embedded twice.
/// `deadline`: no retry starts after it (the invocation's deadline less a reserve).
pub async fn ingest_batch(ingestor: &Ingestor, event: &SqsEvent, deadline: tokio::time::Instant) -> BatchOutcome {
    let mut outcome = BatchOutcome::default();
    let mut messages: Vec<(String, Vec<ObjectChange>)> = Vec::new();
    for record in &event.records {
        let id = record.message_id.clone().unwrap_or_default();
        match message(record.body.as_deref()) {
            Message::Changes(changes) => messages.push((id, changes)),
            Message::Test => outcome.test_events += 1,
            Message::Malformed(reason) => {
                tracing::error!(message_id = %id, reason = %reason, "SQS message is not an S3 event; reported failed");
                outcome.failed.push((id, reason));
            }
        }
    }
    let all: Vec<ObjectChange> = messages.iter().flat_map(|(_, changes)| changes.iter().cloned()).collect();
    if all.is_empty() {
        return outcome;
    }
    match ingestor.apply_before(all, deadline).await {
        Ok(report) => merge(&mut outcome.report, report),
        Err(batch_error) => {
            tracing::warn!(error = %describe(&batch_error), messages = messages.len(), "the batch failed; applying its messages one by one");
            for (id, changes) in messages {
                match ingestor.apply_before(changes, deadline).await {
                    Ok(report) => merge(&mut outcome.report, report),
                    Err(e) => {
                        tracing::error!(message_id = %id, error = %describe(&e), retryable = e.is_retryable(), "message failed; SQS delivers it again");
                        outcome.failed.push((id, describe(&e)));
                    }
                }
            }
        }
    }
    outcome
}

/// The ingest function's work on an SQS batch: [`ingest_batch`] within the invocation's time,
/// with its metrics (`MessagesFailed` counts the messages delivered again).
pub async fn ingest_within(ingestor: &Ingestor, event: &SqsEvent, context: &lambda_runtime::Context) -> BatchOutcome {
    let deadline = super::s3::retry_deadline(context.deadline, std::time::SystemTime::now());
    let outcome = ingest_batch(ingestor, event, deadline).await;
    let mut metrics = super::s3::outcome_metrics(&Ok(outcome.report.clone()));
    metrics.push(("MessagesFailed", outcome.failed.len() as u64));
    super::metrics::emit("ingest", &metrics);
    outcome
}

/// Adds one report's lists to another's, keeping each key once per list.
fn merge(into: &mut IngestReport, from: IngestReport) {
    fn extend(into: &mut Vec<String>, from: Vec<String>) {
        let seen: BTreeSet<String> = into.iter().cloned().collect();
        into.extend(from.into_iter().filter(|k| !seen.contains(k)));
    }
    extend(&mut into.indexed, from.indexed);
    extend(&mut into.unchanged, from.unchanged);
    extend(&mut into.deleted, from.deleted);
    extend(&mut into.unindexed, from.unindexed);
    extend(&mut into.superseded, from.superseded);
    extend(&mut into.outside_scope, from.outside_scope);
    for skip in from.skipped {
        if !into.skipped.iter().any(|s| s.key == skip.key) {
            into.skipped.push(skip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_s3_events_test_events_or_malformed() {
        let removed = include_str!("../../../tests/fixtures/events/removed.json");
        assert!(matches!(message(Some(removed)), Message::Changes(c) if c.len() == 1));
        let test = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2026-11-30T00:00:00.000Z","Bucket":"photos","RequestId":"1","HostId":"2"}"#;
        assert_eq!(message(Some(test)), Message::Test);
        for bad in [None, Some("not json"), Some("{}"), Some(r#"{"Records": 5}"#), Some("[1]")] {
            assert!(matches!(message(bad), Message::Malformed(_)), "{bad:?}");
        }
    }

    #[test]
    fn the_response_lists_only_the_failed_messages() {
        let outcome = BatchOutcome { failed: vec![("m2".into(), "why".into())], ..Default::default() };
        let json = serde_json::to_value(outcome.response()).unwrap();
        assert_eq!(json, serde_json::json!({"batchItemFailures": [{"itemIdentifier": "m2"}]}));
        let none = serde_json::to_value(BatchOutcome::default().response()).unwrap();
        assert_eq!(none, serde_json::json!({"batchItemFailures": []}));
    }
}
