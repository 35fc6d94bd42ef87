//! The queue path (`IngestTrigger=Queue`): S3 events in SQS messages, batched into one invocation.
//! - At the handler: a batch of good, bad-image, test-event, malformed and transiently failing
//!   messages reports exactly the messages that failed, and indexes the rest.
//! - End to end: a private queue on the stack's SQS (moto), read by the bridge's event source
//!   mapping (`bridge::queue::poll_once`), invoking the ingest function under `cargo lambda watch`:
//!   good images indexed once, bad ones skipped and not retried, a failing message delivered
//!   again and then parked in the failure queue by the redrive policy.
//!
//! Needs the stack.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use shared::domain::record::record_id;
use shared::index::VectorIndex;
use tests::{bad_input, fixture_image, ingestor, put, s3_put_event, unique, FlakyStore, Sandbox, Stack};

const DIM: usize = 64;

/// An SQS message as the event source mapping hands it over, with `body`.
fn message(id: &str, body: &str) -> Value {
    json!({
        "messageId": id, "receiptHandle": format!("r-{id}"), "body": body,
        "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {},
        "md5OfBody": "", "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:ingest", "awsRegion": "us-east-1",
    })
}

fn put_event(bucket: &str, key: &str) -> String {
    serde_json::to_string(&s3_put_event(bucket, &[key.to_string()])).unwrap()
}

#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn a_batch_reports_only_the_messages_that_failed() {
    let Sandbox { s3, bucket, index, .. } = Sandbox::new("queue-batch", DIM).await;
    for (key, bytes) in [
        ("a.jpg", fixture_image("baseline.jpg")),
        ("b.png", fixture_image("rgba.png")),
        ("corrupt.jpg", bad_input("truncated.jpg")),
        ("flaky.jpg", fixture_image("progressive.jpg")),
    ] {
        put(&s3, &bucket, key, bytes, "image/jpeg").await;
    }
    let mut ingestor = ingestor(&s3, index.clone());
    ingestor.store = Arc::new(FlakyStore(s3.clone()));
    ingestor.retry = shared::domain::retry::RetryPolicy::new(1);
    let test_event = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2026-11-30T00:00:00.000Z","Bucket":"b","RequestId":"1","HostId":"2"}"#;
    let event = json!({"Records": [
        message("m-a", &put_event(&bucket, "a.jpg")),
        message("m-corrupt", &put_event(&bucket, "corrupt.jpg")),
        message("m-test", test_event),
        message("m-flaky", &put_event(&bucket, "flaky.jpg")),
        message("m-malformed", "{\"not\": \"an S3 event\"}"),
        message("m-b", &put_event(&bucket, "b.png")),
    ]});
    let answer = shared::events::handle(&ingestor, event, &tests::lambda_context(Duration::from_secs(120)))
        .await
        .expect("a batch never fails as a whole");
    let mut failed: Vec<&str> =
        answer["batchItemFailures"].as_array().unwrap().iter().map(|f| f["itemIdentifier"].as_str().unwrap()).collect();
    failed.sort();
    // The corrupt image is skipped (the message succeeds: retrying cannot help); the test event is acknowledged.
    assert_eq!(failed, ["m-flaky", "m-malformed"], "{answer}");
    let ids: Vec<String> =
        ["a.jpg", "b.png", "corrupt.jpg", "flaky.jpg"].iter().map(|k| record_id(&bucket, k)).collect();
    let mut indexed: Vec<String> = index.versions(&ids).await.unwrap().into_keys().collect();
    indexed.sort();
    let mut expected = vec![record_id(&bucket, "a.jpg"), record_id(&bucket, "b.png")];
    expected.sort();
    assert_eq!(indexed, expected);
    // A plain S3 event still works, and an event of no known shape fails the invocation.
    let direct = serde_json::to_value(s3_put_event(&bucket, &["a.jpg".to_string()])).unwrap();
    let report =
        shared::events::handle(&ingestor, direct, &tests::lambda_context(Duration::from_secs(120))).await.unwrap();
    assert_eq!(report["unchanged"], json!(["a.jpg"]), "{report}");
    let unknown =
        shared::events::handle(&ingestor, json!({"detail": {}}), &tests::lambda_context(Duration::from_secs(120)))
            .await
            .unwrap_err();
    assert!(!unknown.is_retryable(), "{unknown}");
}

/// Everything the stack's ingest function has indexed under `bucket` (its own collection).
async fn indexed_by_the_stack(stack: &Stack, bucket: &str) -> Vec<String> {
    let collection = stack.get("MILVUS_COLLECTION").to_string();
    let reader = stack.milvus_reader(&collection, DIM).await;
    let mut keys: Vec<String> = reader.list(bucket, "").await.unwrap().into_iter().map(|o| o.key).collect();
    keys.sort();
    keys
}

#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn through_a_real_queue_failures_come_back_and_end_in_the_failure_queue() {
    let stack = Stack::load();
    let s3 = stack.s3().await;
    let bucket = stack.bucket(&s3, "queue-e2e").await;
    let good: Vec<String> = (0..12).map(|i| format!("photos/{i:02}.jpg")).collect();
    let sources = ["baseline.jpg", "progressive.jpg", "landscape-1024.jpg", "grayscale.jpg"];
    for (i, key) in good.iter().enumerate() {
        put(&s3, &bucket, key, fixture_image(sources[i % sources.len()]), "image/jpeg").await;
    }
    put(&s3, &bucket, "photos/corrupt.jpg", bad_input("truncated.jpg"), "image/jpeg").await;

    let sqs = stack.sqs().await;
    let mapping = bridge::queue::Mapping {
        batch_size: 5,
        window: Duration::from_millis(300),
        visibility_timeout: Duration::from_secs(2),
        max_receive_count: 2,
    };
    let queues = bridge::queue::ensure_queues(&sqs, &unique("t_queue"), &mapping).await.expect("queues on moto");
    let mut keys = good.clone();
    keys.push("photos/corrupt.jpg".into());
    for key in &keys {
        let event = serde_json::to_value(s3_put_event(&bucket, std::slice::from_ref(key))).unwrap();
        bridge::queue::send(&sqs, &queues, &event).await.unwrap();
    }
    let malformed = json!({"Records": "not a list"});
    bridge::queue::send(&sqs, &queues, &malformed).await.unwrap();

    let http = reqwest::Client::new();
    let invoke_url = stack.get("INGEST_INVOKE_URL").to_string();
    let invoke = |event: Value| {
        let (http, url) = (http.clone(), invoke_url.clone());
        async move {
            let response = http.post(url).json(&event).send().await.map_err(|e| e.to_string())?;
            response.text().await.map_err(|e| e.to_string())
        }
    };
    let (mut deleted, mut failures, mut batches) = (0, 0, 0);
    let started = std::time::Instant::now();
    // Until the malformed message has been delivered max_receive_count times and moved on.
    while started.elapsed() < Duration::from_secs(120) {
        match bridge::queue::poll_once(&sqs, &queues, &mapping, "us-east-1", invoke).await.unwrap() {
            Some(polled) => {
                assert!(!polled.invocation_failed, "{polled:?}");
                assert!(polled.received <= mapping.batch_size);
                batches += 1;
                deleted += polled.deleted;
                failures += polled.failed.len();
            }
            None if deleted == keys.len() && failures >= 2 => break,
            None => {}
        }
    }
    assert_eq!(deleted, keys.len(), "every S3 event message succeeded once, the corrupt image's included");
    assert_eq!(failures, 2, "the malformed message failed on each of its 2 deliveries, then was parked");
    assert!(batches < keys.len(), "messages were batched: {batches} invocations for {} messages", keys.len() + 1);
    let parked = sqs
        .receive_message()
        .queue_url(&queues.failed_url)
        .max_number_of_messages(10)
        .wait_time_seconds(2)
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default();
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(serde_json::from_str::<Value>(parked[0].body().unwrap()).unwrap(), malformed);
    // Each good image indexed once; the corrupt one not at all.
    assert_eq!(indexed_by_the_stack(&stack, &bucket).await, good);
}
