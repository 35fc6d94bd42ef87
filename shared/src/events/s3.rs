//! S3 event notifications: records to object changes, keys decoded as S3 encodes them.

use aws_lambda_events::s3::S3Event;
use percent_encoding::percent_decode_str;

use crate::domain::ingest::{IngestError, IngestReport, Ingestor, ObjectChange};

/// The ingest function's work: every record of the event, applied in one batch.
pub async fn ingest(ingestor: &Ingestor, event: &S3Event) -> Result<IngestReport, IngestError> {
    ingestor.apply(changes_from_event(event)).await
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
        if name.starts_with("ObjectCreated:") {
            let etag = record.s3.object.e_tag.clone();
            changes.push(ObjectChange::Created { bucket: bucket.to_string(), key, etag });
        } else if name.starts_with("ObjectRemoved:") {
            changes.push(ObjectChange::Removed { bucket: bucket.to_string(), key });
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
    fn keys_are_decoded_the_way_s3_encodes_them() {
        assert_eq!(decode_s3_key("dir/a+b%2Bc%25d+%C3%A9.jpg"), "dir/a b+c%d é.jpg");
        assert_eq!(decode_s3_key("plain/key.png"), "plain/key.png");
    }
}
