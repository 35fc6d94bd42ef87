//! S3 Batch Operations invocations (`LambdaInvoke`): how a bucket of millions of existing objects
//! is indexed on AWS's own fan-out (`clip-search backfill --batch-operations` creates the job).
//!
//! Each invocation names objects (tasks) of the job's manifest, in invocation schema 1.0 (the
//! bucket as an ARN) or 2.0 (the bucket by name, and the job's user arguments). The answer gives
//! each task a result code that S3 writes into the job's completion report: `Succeeded`,
//! `TemporaryFailure` (S3 invokes the function again for it) or `PermanentFailure` with the reason,
//! for an object that is skipped (not an image, corrupt, too large, missing) or outside the
//! deployment's keys.

use serde::{Deserialize, Serialize};

use super::s3::decode_s3_key;
use crate::domain::describe;
use crate::domain::ingest::{IngestError, IngestReport, Ingestor, ObjectChange};

/// An S3 Batch Operations invocation event.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchEvent {
    pub invocation_schema_version: String,
    pub invocation_id: String,
    #[serde(default)]
    pub tasks: Vec<BatchTask>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchTask {
    pub task_id: String,
    /// URL-encoded, as in the manifest.
    pub s3_key: String,
    /// Schema 1.0: `arn:aws:s3:::BUCKET`.
    #[serde(default)]
    pub s3_bucket_arn: Option<String>,
    /// Schema 2.0.
    #[serde(default)]
    pub s3_bucket: Option<String>,
}

impl BatchTask {
    fn bucket(&self) -> Option<&str> {
        self.s3_bucket
            .as_deref()
            .or_else(|| self.s3_bucket_arn.as_deref().map(|arn| arn.rsplit(":::").next().unwrap_or(arn)))
            .filter(|b| !b.is_empty())
    }
}

/// The answer S3 Batch Operations expects.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BatchResponse {
    pub invocation_schema_version: String,
    /// A task the answer leaves out fails permanently (none is left out).
    pub treat_missing_keys_as: ResultCode,
    pub invocation_id: String,
    pub results: Vec<TaskResult>,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub enum ResultCode {
    Succeeded,
    TemporaryFailure,
    PermanentFailure,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TaskResult {
    pub task_id: String,
    pub result_code: ResultCode,
    pub result_string: String,
}

/// Result strings are kept short: the completion report is a CSV a person reads.
const MAX_RESULT_STRING: usize = 512;

fn result(task: &BatchTask, code: ResultCode, text: impl Into<String>) -> TaskResult {
    let mut text: String = text.into();
    if text.len() > MAX_RESULT_STRING {
        let mut end = MAX_RESULT_STRING;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    TaskResult { task_id: task.task_id.clone(), result_code: code, result_string: text }
}

/// Indexes the invocation's objects together and gives each task its result code. A failure of
/// the whole invocation (S3 or Milvus down after retries) makes every task a `TemporaryFailure`
/// when a retry can help, else a `PermanentFailure` with the reason.
pub async fn ingest_tasks(ingestor: &Ingestor, event: &BatchEvent, deadline: tokio::time::Instant) -> BatchResponse {
    let mut results = Vec::new();
    let mut pending = Vec::new();
    for task in &event.tasks {
        match task.bucket() {
            Some(bucket) => pending.push((task, bucket.to_string(), decode_s3_key(&task.s3_key))),
            None => results.push(result(task, ResultCode::PermanentFailure, "the task names no bucket")),
        }
    }
    let changes: Vec<ObjectChange> = pending
        .iter()
        .map(|(_, bucket, key)| ObjectChange::Created {
            bucket: bucket.clone(),
            key: key.clone(),
            etag: None,
            sequencer: None,
        })
        .collect();
    if !changes.is_empty() {
        match ingestor.apply_before(changes, deadline).await {
            Ok(report) => results.extend(pending.iter().map(|(task, _, key)| task_result(task, key, &report))),
            Err(e) => results.extend(pending.iter().map(|(task, _, _)| failed(task, &e))),
        }
    }
    // In the event's order, as the report lists them.
    results.sort_by_key(|r| event.tasks.iter().position(|t| t.task_id == r.task_id));
    BatchResponse {
        invocation_schema_version: event.invocation_schema_version.clone(),
        treat_missing_keys_as: ResultCode::PermanentFailure,
        invocation_id: event.invocation_id.clone(),
        results,
    }
}

fn failed(task: &BatchTask, error: &IngestError) -> TaskResult {
    let code = if error.is_retryable() { ResultCode::TemporaryFailure } else { ResultCode::PermanentFailure };
    result(task, code, describe(error))
}

/// The outcome of one object in the report of its invocation.
fn task_result(task: &BatchTask, key: &str, report: &IngestReport) -> TaskResult {
    let has = |list: &[String]| list.iter().any(|k| k == key);
    if let Some(skip) = report.skipped.iter().find(|s| s.key == key) {
        return result(task, ResultCode::PermanentFailure, format!("skipped: {}", skip.reason));
    }
    if has(&report.outside_scope) {
        return result(task, ResultCode::PermanentFailure, "outside UPLOADS_BUCKET/KEY_PREFIX/KEY_SUFFIX: not indexed");
    }
    if has(&report.indexed) {
        return result(task, ResultCode::Succeeded, "indexed");
    }
    if has(&report.unchanged) {
        return result(task, ResultCode::Succeeded, "already indexed with this ETag");
    }
    if has(&report.deleted) {
        return result(task, ResultCode::PermanentFailure, "the object is gone; its record was removed");
    }
    result(task, ResultCode::Succeeded, "nothing to do")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(json: &str) -> BatchEvent {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn both_schemas_name_the_bucket_and_keys_are_decoded() {
        let v1 = event(
            r#"{"invocationSchemaVersion": "1.0", "invocationId": "i", "job": {"id": "j"},
                "tasks": [{"taskId": "t", "s3Key": "dir/a+b%2Bc.jpg", "s3VersionId": "1", "s3BucketArn": "arn:aws:s3:::photos"}]}"#,
        );
        assert_eq!(v1.tasks[0].bucket(), Some("photos"));
        assert_eq!(decode_s3_key(&v1.tasks[0].s3_key), "dir/a b+c.jpg");
        let v2 = event(
            r#"{"invocationSchemaVersion": "2.0", "invocationId": "i", "job": {"id": "j", "userArguments": {"k": "v"}},
                "tasks": [{"taskId": "t", "s3Key": "x.jpg", "s3VersionId": null, "s3Bucket": "photos"}]}"#,
        );
        assert_eq!(v2.tasks[0].bucket(), Some("photos"));
        let none = event(
            r#"{"invocationSchemaVersion": "2.0", "invocationId": "i", "tasks": [{"taskId": "t", "s3Key": "x"}]}"#,
        );
        assert_eq!(none.tasks[0].bucket(), None);
    }

    #[test]
    fn the_response_has_the_field_names_s3_reads() {
        let task =
            BatchTask { task_id: "t".into(), s3_key: "k".into(), s3_bucket_arn: None, s3_bucket: Some("b".into()) };
        let response = BatchResponse {
            invocation_schema_version: "2.0".into(),
            treat_missing_keys_as: ResultCode::PermanentFailure,
            invocation_id: "i".into(),
            results: vec![result(&task, ResultCode::TemporaryFailure, "é".repeat(600))],
        };
        let json = serde_json::to_value(&response).unwrap();
        assert_eq!(json["treatMissingKeysAs"], "PermanentFailure");
        assert_eq!(json["results"][0]["resultCode"], "TemporaryFailure");
        assert_eq!(json["results"][0]["taskId"], "t");
        assert!(json["results"][0]["resultString"].as_str().unwrap().len() <= MAX_RESULT_STRING);
    }
}
