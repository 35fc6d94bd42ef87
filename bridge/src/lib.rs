//! Turns a SeaweedFS filer webhook payload into the S3 event AWS would have sent.
//!
//! SeaweedFS does not implement `PutBucketNotificationConfiguration`; its filer posts its own
//! JSON (`key` = `/buckets/BUCKET/OBJECT`, `event_type`, `message.new_entry` / `old_entry`).
//! The ingest function must not know the difference, so the record carries every field
//! `aws_lambda_events` requires and the key is encoded the way S3 encodes it.

pub mod delivery;
pub mod queue;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{json, Value};

/// Characters S3 leaves as they are in event keys: unreserved ones and `/`. Space becomes `+`.
const S3_KEY: &AsciiSet =
    &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~').remove(b'/').remove(b' ');

/// `dir/a b+c.jpg` → `dir/a+b%2Bc.jpg`, as in S3 event notifications.
pub fn encode_s3_key(key: &str) -> String {
    utf8_percent_encode(key, S3_KEY).to_string().replace(' ', "+")
}

#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    Created { bucket: String, key: String, size: u64, etag: String, mtime: i64 },
    Removed { bucket: String, key: String, mtime: i64 },
}

/// The object change a webhook describes, or `None` for directories and events ingest does not need.
pub fn change_from_webhook(payload: &Value) -> Option<Change> {
    let path = payload.get("key")?.as_str()?;
    let (bucket, key) = path.strip_prefix("/buckets/")?.split_once('/')?;
    if key.is_empty() {
        return None;
    }
    let message = payload.get("message")?;
    let entry = |name: &str| message.get(name).filter(|e| !e.is_null());
    let is_dir = |e: &Value| e.get("is_directory").and_then(Value::as_bool).unwrap_or(false);
    let attr = |e: &Value, name: &str| e.get("attributes").and_then(|a| a.get(name)).and_then(Value::as_i64);
    match payload.get("event_type")?.as_str()? {
        "create" | "update" => {
            let new = entry("new_entry")?;
            if is_dir(new) {
                return None;
            }
            Some(Change::Created {
                bucket: bucket.into(),
                key: key.into(),
                size: attr(new, "file_size").unwrap_or(0).max(0) as u64,
                etag: etag(new),
                mtime: attr(new, "mtime").unwrap_or(0),
            })
        }
        "delete" => {
            let old = entry("old_entry")?;
            if is_dir(old) {
                return None;
            }
            Some(Change::Removed { bucket: bucket.into(), key: key.into(), mtime: attr(old, "mtime").unwrap_or(0) })
        }
        _ => None,
    }
}

/// The S3 ETag SeaweedFS keeps for the object (multipart ETags included), else the MD5.
fn etag(entry: &Value) -> String {
    let b64 = |v: &Value| v.as_str().and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok());
    if let Some(raw) = entry.get("extended").and_then(|x| x.get("Seaweed-X-Amz-ETag")).and_then(b64) {
        return String::from_utf8_lossy(&raw).trim_matches('"').to_string();
    }
    entry.get("attributes").and_then(|a| a.get("md5")).and_then(b64).map(hex::encode).unwrap_or_default()
}

/// The sequencer of the next event: nanoseconds since the epoch when the bridge received it,
/// raised where needed to stay increasing. Events are ordered as they arrive, and a restarted
/// bridge keeps counting upwards (a counter from 1 would make every new event look older than
/// what ingest already stored, and be ignored).
fn next_sequencer() -> String {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    let previous = LAST.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| Some(now.max(last + 1)));
    let previous = previous.unwrap_or_else(|last| last);
    format!("{:016X}", now.max(previous + 1))
}

/// An S3 event with one record, as AWS delivers it to Lambda.
pub fn s3_event(change: &Change, region: &str) -> Value {
    let (name, bucket, key, mtime) = match change {
        Change::Created { bucket, key, mtime, .. } => ("ObjectCreated:Put", bucket, key, *mtime),
        Change::Removed { bucket, key, mtime } => ("ObjectRemoved:Delete", bucket, key, *mtime),
    };
    let sequencer = next_sequencer();
    let mut object = json!({"key": encode_s3_key(key), "sequencer": sequencer});
    if let Change::Created { size, etag, .. } = change {
        object["size"] = json!(size);
        object["eTag"] = json!(etag);
    }
    json!({"Records": [{
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": region,
        "eventTime": event_time(mtime),
        "eventName": name,
        "userIdentity": {"principalId": "local-bridge"},
        "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {"x-amz-request-id": sequencer, "x-amz-id-2": "local-bridge"},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "local-bridge",
            "bucket": {"name": bucket, "ownerIdentity": {"principalId": "local-bridge"}, "arn": format!("arn:aws:s3:::{bucket}")},
            "object": object,
        },
    }]})
}

/// Seconds since the epoch → `2026-11-26T17:00:00.000Z`, as S3 writes `eventTime`.
fn event_time(secs: i64) -> String {
    let ms = secs.saturating_mul(1000);
    shared::time::rfc3339_ms(ms, 0).unwrap_or_else(|| "1970-01-01T00:00:00.000Z".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_encoded_like_s3_event_keys() {
        assert_eq!(encode_s3_key("dir/a b+c%d é.jpg"), "dir/a+b%2Bc%25d+%C3%A9.jpg");
        assert_eq!(encode_s3_key("deep/er/x-y_z.~.png"), "deep/er/x-y_z.~.png");
    }

    #[test]
    fn create_update_and_delete_become_put_and_delete_records() {
        let created = json!({"event_type": "create", "key": "/buckets/photos/dir/a b.jpg", "message": {"new_entry": {
            "name": "a b.jpg", "attributes": {"file_size": 5, "mtime": 1795713470, "md5": "XUFAKrxLKna5cZ2REBfFkg=="},
            "extended": {"Seaweed-X-Amz-ETag": "NWQ0MTQwMmFiYzRiMmE3NmI5NzE5ZDkxMTAxN2M1OTI="}}}});
        let change = change_from_webhook(&created).unwrap();
        assert_eq!(
            change,
            Change::Created {
                bucket: "photos".into(),
                key: "dir/a b.jpg".into(),
                size: 5,
                etag: "5d41402abc4b2a76b9719d911017c592".into(),
                mtime: 1795713470
            }
        );
        let event = s3_event(&change, "us-east-1");
        let record = &event["Records"][0];
        assert_eq!(record["eventName"], "ObjectCreated:Put");
        assert_eq!(record["s3"]["object"]["key"], "dir/a+b.jpg");
        assert_eq!(record["s3"]["object"]["eTag"], "5d41402abc4b2a76b9719d911017c592");
        assert_eq!(record["eventTime"], "2026-11-26T17:17:50.000Z");

        let deleted = json!({"event_type": "delete", "key": "/buckets/photos/x.png", "message": {"old_entry": {"attributes": {}}}});
        let change = change_from_webhook(&deleted).unwrap();
        assert_eq!(s3_event(&change, "us-east-1")["Records"][0]["eventName"], "ObjectRemoved:Delete");
    }

    #[test]
    fn sequencers_increase_and_start_from_the_clock() {
        let first = next_sequencer();
        let second = next_sequencer();
        assert!(second > first, "{first} < {second}");
        assert_eq!(first.len(), 16);
        let clock = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
        let value = u64::from_str_radix(&second, 16).unwrap();
        assert!(value <= clock && clock - value < 60_000_000_000, "a restarted bridge continues above earlier events");
    }

    #[test]
    fn directories_and_other_paths_are_ignored() {
        let dir = json!({"event_type": "create", "key": "/buckets/photos/dir", "message": {"new_entry": {"is_directory": true}}});
        assert_eq!(change_from_webhook(&dir), None);
        let other = json!({"event_type": "create", "key": "/etc/iam/x", "message": {"new_entry": {}}});
        assert_eq!(change_from_webhook(&other), None);
    }

    #[test]
    fn md5_is_the_etag_when_seaweedfs_kept_none() {
        let entry = json!({"attributes": {"md5": "XUFAKrxLKna5cZ2REBfFkg=="}});
        assert_eq!(etag(&entry), "5d41402abc4b2a76b9719d911017c592");
    }
}
