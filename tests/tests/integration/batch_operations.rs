//! S3 Batch Operations invocations at the ingest handler (`shared::events::handle`), from the
//! committed schema 1.0 and 2.0 events with their bucket and keys replaced, against SeaweedFS
//! and Milvus Lite: each task gets the result code S3 writes into the job's completion report.
//! The job itself needs AWS (S3 Control); `cli/tests/batch_operations.rs` checks the manifest
//! that `clip-search backfill --batch-operations` writes. Needs the stack.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use shared::domain::record::record_id;
use shared::domain::scope::{Access, KeyScope};
use shared::index::VectorIndex;
use tests::{bad_input, fixture_image, fixtures, ingestor, put, FlakyStore, Sandbox};

const DIM: usize = 64;

/// The committed event of `schema` with one task per (task id, encoded key) in `bucket`.
fn event(schema: &str, bucket: &str, tasks: &[(&str, &str)]) -> Value {
    let path = fixtures().join("events").join(format!("batch-operations-{schema}.json"));
    let mut event: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let template = event["tasks"][0].clone();
    event["tasks"] = tasks
        .iter()
        .map(|(id, key)| {
            let mut task = template.clone();
            task["taskId"] = json!(id);
            task["s3Key"] = json!(key);
            if task.get("s3Bucket").is_some() {
                task["s3Bucket"] = json!(bucket);
            } else {
                task["s3BucketArn"] = json!(format!("arn:aws:s3:::{bucket}"));
            }
            task
        })
        .collect();
    event
}

/// Task id → (result code, result string).
fn results(answer: &Value) -> Vec<(String, String, String)> {
    answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let text = |f: &str| r[f].as_str().unwrap().to_string();
            (text("taskId"), text("resultCode"), text("resultString"))
        })
        .collect()
}

#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn each_task_gets_the_result_code_its_object_deserves_in_both_schemas() {
    let Sandbox { s3, bucket, index, .. } = Sandbox::new("batch-ops", DIM).await;
    put(&s3, &bucket, "photos/beach day.jpg", fixture_image("baseline.jpg"), "image/jpeg").await;
    put(&s3, &bucket, "photos/cat.png", fixture_image("rgba.png"), "image/png").await;
    put(&s3, &bucket, "photos/corrupt.jpg", bad_input("truncated.jpg"), "image/jpeg").await;
    put(&s3, &bucket, "photos/flaky.jpg", fixture_image("progressive.jpg"), "image/jpeg").await;
    put(&s3, &bucket, "private/secret.jpg", fixture_image("grayscale.jpg"), "image/jpeg").await;
    let mut ingestor = ingestor(&s3, index.clone());
    ingestor.access =
        Access { keys: KeyScope { prefix: "photos/".into(), suffix: String::new() }, ..Default::default() };

    for schema in ["v1", "v2"] {
        let tasks = [
            ("space", "photos/beach%20day.jpg"),
            ("png", "photos/cat.png"),
            ("corrupt", "photos/corrupt.jpg"),
            ("missing", "photos/never-uploaded.jpg"),
            ("outside", "private/secret.jpg"),
        ];
        let answer = shared::events::handle(
            &ingestor,
            event(schema, &bucket, &tasks),
            &tests::lambda_context(Duration::from_secs(120)),
        )
        .await
        .unwrap();
        assert_eq!(answer["treatMissingKeysAs"], "PermanentFailure");
        assert_eq!(answer["invocationSchemaVersion"], if schema == "v1" { "1.0" } else { "2.0" });
        let got = results(&answer);
        let code = |id: &str| got.iter().find(|r| r.0 == id).map(|r| r.1.as_str()).unwrap_or("absent");
        let text = |id: &str| got.iter().find(|r| r.0 == id).map(|r| r.2.clone()).unwrap_or_default();
        assert_eq!(got.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(), tasks.map(|t| t.0), "every task, in order");
        assert_eq!((code("space"), code("png")), ("Succeeded", "Succeeded"), "{schema}: {answer}");
        assert_eq!(code("corrupt"), "PermanentFailure");
        assert!(text("corrupt").starts_with("skipped:"), "the reason goes into the report: {}", text("corrupt"));
        assert_eq!(code("missing"), "PermanentFailure", "{}", text("missing"));
        assert_eq!(code("outside"), "PermanentFailure", "{}", text("outside"));
        if schema == "v2" {
            assert_eq!(text("space"), "already indexed with this ETag", "the second job finds it indexed");
        }
    }
    let ids: Vec<String> = ["photos/beach day.jpg", "photos/cat.png", "photos/corrupt.jpg", "private/secret.jpg"]
        .iter()
        .map(|k| record_id(&bucket, k))
        .collect();
    assert_eq!(index.versions(&ids).await.unwrap().len(), 2, "only the two good photos in scope");

    // A transient failure is a TemporaryFailure (S3 invokes again for it), never a lost task.
    let mut flaky = ingestor;
    flaky.store = Arc::new(FlakyStore(s3.clone()));
    flaky.retry = shared::domain::retry::RetryPolicy::new(1);
    let answer = shared::events::handle(
        &flaky,
        event("v2", &bucket, &[("f", "photos/flaky.jpg")]),
        &tests::lambda_context(Duration::from_secs(120)),
    )
    .await
    .unwrap();
    let got = results(&answer);
    assert_eq!(got[0].1, "TemporaryFailure", "{answer}");
    assert!(got[0].2.contains("injected"), "{answer}");
}
