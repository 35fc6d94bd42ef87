//! S3 event notifications: records to object changes, keys decoded as S3 encodes them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lambda_events::s3::S3Event;
use percent_encoding::percent_decode_str;

use crate::domain::ingest::{IngestError, IngestReport, Ingestor, ObjectChange};
use crate::domain::record::{Sequencer, SkipCause};

/// Every record of the event, applied in one batch.
pub async fn ingest(ingestor: &Ingestor, event: &S3Event) -> Result<IngestReport, IngestError> {
    ingestor.apply(changes_from_event(event)).await
}

/// Time kept back from the invocation's deadline: one last S3 or Milvus call (their timeouts are
/// 10 s by default) and the report must fit after the last retry starts.
pub const DEADLINE_RESERVE: Duration = Duration::from_secs(15);

/// The ingest function's work: [`ingest`], with no retry started later than
/// [`DEADLINE_RESERVE`] before the invocation's deadline, so a long outage fails the invocation
/// (and Lambda retries the event) instead of running into the timeout.
pub async fn ingest_within(
    ingestor: &Ingestor,
    event: &S3Event,
    context: &lambda_runtime::Context,
) -> Result<IngestReport, IngestError> {
    let result =
        ingestor.apply_before(changes_from_event(event), retry_deadline(context.deadline, SystemTime::now())).await;
    super::metrics::emit("ingest", &outcome_metrics(&result));
    result
}

/// Skips (in total and per cause), failures and ignored events as CloudWatch metrics, which
/// the template's alarms and dashboards watch.
pub(super) fn outcome_metrics(result: &Result<IngestReport, IngestError>) -> Vec<(&'static str, u64)> {
    let count = |n: usize| n as u64;
    let Ok(report) = result else {
        return vec![("ObjectsIndexed", 0), ("ObjectsSkipped", 0), ("IngestFailures", 1)];
    };
    let mut metrics = vec![
        ("ObjectsIndexed", count(report.indexed.len())),
        ("ObjectsSkipped", count(report.skipped.len())),
        ("IngestFailures", 0),
        ("EventsSuperseded", count(report.superseded.len())),
    ];
    for cause in SkipCause::ALL {
        metrics.push((cause.metric(), count(report.skipped.iter().filter(|s| s.cause == Some(cause)).count())));
    }
    metrics
}

/// The last moment to start a retry, from Lambda's deadline (milliseconds since the epoch).
pub(super) fn retry_deadline(deadline_ms: u64, now: SystemTime) -> tokio::time::Instant {
    let now_ms = now.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let left = Duration::from_millis(deadline_ms.saturating_sub(now_ms));
    tokio::time::Instant::now() + left.saturating_sub(DEADLINE_RESERVE)
}

/// How a failed event reaches Lambda: the error type says whether a retry can help
/// (`IngestError.Retryable` / `IngestError.NeedsFix`), the message carries every cause.
impl From<IngestError> for lambda_runtime::Diagnostic {
    fn from(error: IngestError) -> Self {
        let kind = if error.is_retryable() { "IngestError.Retryable" } else { "IngestError.NeedsFix" };
        lambda_runtime::Diagnostic { error_type: kind.to_string(), error_message: crate::domain::describe(&error) }
    }
}

/// Decodes an S3 event key: `+` is a space, `%XX` an escaped byte (S3 never fills `urlDecodedKey`).
pub fn decode_s3_key(raw: &str) -> String {
    percent_decode_str(&raw.replace('+', " ")).decode_utf8_lossy().into_owned()
}

/// The changes an S3 event describes. Records that are neither created nor removed are ignored, with a log line.
pub fn changes_from_event(event: &S3Event) -> Vec<ObjectChange> {
    let mut changes = Vec::new();
    for record in &event.records {
        let name = record.event_name.as_deref().unwrap_or_default();
        let (Some(bucket), Some(raw_key)) = (record.s3.bucket.name.as_deref(), record.s3.object.key.as_deref()) else {
            tracing::warn!(event_name = name, "S3 record without bucket or key, ignored");
            continue;
        };
        let key = decode_s3_key(raw_key);
        let raw_sequencer = record.s3.object.sequencer.as_deref();
        let sequencer = raw_sequencer.and_then(Sequencer::parse);
        if sequencer.is_none() && raw_sequencer.is_some() {
            tracing::warn!(key = %key, sequencer = ?raw_sequencer, "S3 record with a malformed sequencer; applied unordered");
        }
        if name.starts_with("ObjectCreated:") {
            let etag = record.s3.object.e_tag.clone();
            changes.push(ObjectChange::Created { bucket: bucket.to_string(), key, etag, sequencer });
        } else if name.starts_with("ObjectRemoved:") || name.starts_with("LifecycleExpiration:") {
            // An expired object (or, with versioning, one hidden by a delete marker) is gone like a
            // deleted one; the removal is checked against the bucket before anything is deleted.
            changes.push(ObjectChange::Removed { bucket: bucket.to_string(), key, sequencer });
        } else {
            tracing::info!(event_name = name, key = %key, "S3 event type not handled, ignored");
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_stop_a_reserve_before_the_invocation_deadline() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let before = tokio::time::Instant::now();
        let deadline = retry_deadline(1_000_000 + 120_000, now);
        let after = tokio::time::Instant::now();
        // 120 s left, 15 s kept back: retries may start for 105 s.
        assert!(deadline >= before + Duration::from_secs(105) && deadline <= after + Duration::from_secs(105));
        // Past or too close to the deadline: no time for a retry at all.
        assert!(retry_deadline(1_000_000 + 5_000, now) <= tokio::time::Instant::now());
        assert!(retry_deadline(0, now) <= tokio::time::Instant::now());
    }

    #[test]
    fn lifecycle_expirations_are_removals_and_other_events_are_ignored() {
        // The committed removal event, with another event name.
        let event = |name: &str| -> S3Event {
            let mut event: serde_json::Value =
                serde_json::from_str(include_str!("../../../tests/fixtures/events/removed.json")).unwrap();
            event["Records"][0]["eventName"] = serde_json::json!(name);
            event["Records"].as_array_mut().unwrap().truncate(1);
            serde_json::from_value(event).unwrap()
        };
        for name in ["LifecycleExpiration:Delete", "LifecycleExpiration:DeleteMarkerCreated", "ObjectRemoved:Delete"] {
            let changes = changes_from_event(&event(name));
            assert!(matches!(&changes[..], [ObjectChange::Removed { .. }]), "{name}: {changes:?}");
        }
        for name in ["LifecycleTransition", "ObjectRestore:Completed", "s3:TestEvent"] {
            assert!(changes_from_event(&event(name)).is_empty(), "{name}");
        }
    }

    #[test]
    fn keys_are_decoded_the_way_s3_encodes_them() {
        assert_eq!(decode_s3_key("dir/a+b%2Bc%25d+%C3%A9.jpg"), "dir/a b+c%d é.jpg");
        assert_eq!(decode_s3_key("plain/key.png"), "plain/key.png");
    }
}
