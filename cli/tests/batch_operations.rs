//! `clip-search backfill --batch-operations --dry-run` on the local stack: the manifest it writes
//! to SeaweedFS lists exactly the served keys, encoded as S3 Batch Operations reads them, the job
//! request names it by ETag, and every task of that manifest, handed to the ingest handler as S3
//! would, succeeds. Creating the job needs S3 Control on AWS: not run here (docs/deploy.md).

use std::process::Stdio;

use serde_json::{json, Value};
use shared::domain::scope::{Access, KeyScope};
use tests::{fixture_image, ingestor, put, Sandbox, Stack};

const DIM: usize = 64;
const ROLE: &str = "arn:aws:iam::123456789012:role/clip-search-BatchOperationsRole";
const FUNCTION: &str = "arn:aws:lambda:us-east-1:123456789012:function:clip-search-IngestFunction";

fn dry_run(collection: &str, args: &[&str]) -> Value {
    let mut base = vec!["backfill", "--batch-operations", "--role-arn", ROLE, "--function-arn", FUNCTION, "--dry-run"];
    base.extend_from_slice(args);
    let output = Stack::cli(env!("CARGO_BIN_EXE_clip-search"), collection, &base)
        .env("KEY_PREFIX", "photos/")
        .env("KEY_SUFFIX", ".jpg")
        .stderr(Stdio::piped())
        .output()
        .expect("clip-search runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("a JSON summary")
}

#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn the_manifest_lists_the_served_keys_and_each_of_its_tasks_succeeds() {
    let Sandbox { stack, s3, bucket, index } = Sandbox::new("batch-manifest", DIM).await;
    let manifests = stack.bucket(&s3, "batch-reports").await;
    let served = ["photos/a b+c.jpg", "photos/2024/é.jpg", "photos/plain.jpg"];
    for key in served.iter().chain(&["photos/logo.png", "other/x.jpg"]) {
        put(&s3, &bucket, key, fixture_image("baseline.jpg"), "image/jpeg").await;
    }
    let summary = dry_run(index.collection(), &["--bucket", &bucket, "--manifest-bucket", &manifests]);
    assert_eq!(summary["objects"], 3, "{summary}");
    let request = &summary["request"];
    assert_eq!(request["AccountId"], "123456789012");
    assert_eq!(
        request["Operation"],
        json!({"LambdaInvoke": {"FunctionArn": FUNCTION, "InvocationSchemaVersion": "2.0"}})
    );
    assert_eq!(request["Report"]["ReportScope"], "FailedTasksOnly");
    assert_eq!(request["Report"]["Bucket"], format!("arn:aws:s3:::{manifests}"));
    assert_eq!(
        request["Manifest"]["Spec"],
        json!({"Format": "S3BatchOperations_CSV_20180820", "Fields": ["Bucket", "Key"]})
    );

    // The manifest is in SeaweedFS, and the request names it with its ETag.
    let uri = summary["manifest"].as_str().unwrap();
    let key = uri.strip_prefix(&format!("s3://{manifests}/")).expect("in the manifest bucket");
    assert!(key.starts_with("manifests/"), "{key}");
    let object = s3.client().get_object().bucket(&manifests).key(key).send().await.unwrap();
    let etag = object.e_tag().unwrap().trim_matches('"').to_string();
    assert_eq!(
        request["Manifest"]["Location"],
        json!({"ObjectArn": format!("arn:aws:s3:::{manifests}/{key}"), "ETag": etag})
    );
    let csv = String::from_utf8(object.body.collect().await.unwrap().to_vec()).unwrap();
    let mut listed: Vec<String> = csv
        .lines()
        .map(|line| {
            let (b, k) = line.split_once(',').expect("bucket,key");
            assert_eq!(b, bucket);
            assert!(!k.contains([' ', '+', ',']), "keys are URL-encoded: {k}");
            shared::events::decode_s3_key(k)
        })
        .collect();
    listed.sort();
    let mut expected: Vec<String> = served.iter().map(|k| k.to_string()).collect();
    expected.sort();
    assert_eq!(listed, expected);

    // Each manifest line as the task S3 would send: all succeed, and the photos are indexed.
    let mut ingestor = ingestor(&s3, (*index).clone());
    ingestor.access =
        Access { keys: KeyScope { prefix: "photos/".into(), suffix: ".jpg".into() }, ..Default::default() };
    let tasks: Vec<Value> = csv
        .lines()
        .enumerate()
        .map(|(i, line)| {
            let (b, k) = line.split_once(',').unwrap();
            json!({"taskId": format!("t{i}"), "s3Key": k, "s3VersionId": null, "s3Bucket": b})
        })
        .collect();
    let event = json!({"invocationSchemaVersion": "2.0", "invocationId": "inv", "job": {"id": "job"}, "tasks": tasks});
    let context = tests::lambda_context(std::time::Duration::from_secs(120));
    let answer = shared::events::handle(&ingestor, event, &context).await.unwrap();
    for result in answer["results"].as_array().unwrap() {
        assert_eq!(result["resultCode"], "Succeeded", "{answer}");
    }
    assert_eq!(shared::index::VectorIndex::count(&**index).await.unwrap(), 3);

    // An S3 Inventory report is used as it is: no listing, the inventory's own format.
    put(&s3, &manifests, "inventory/manifest.json", br#"{"files": []}"#.to_vec(), "application/json").await;
    let summary = dry_run(
        index.collection(),
        &[
            "--bucket",
            &bucket,
            "--manifest-bucket",
            &manifests,
            "--inventory-manifest",
            &format!("s3://{manifests}/inventory/manifest.json"),
            "--report-all",
        ],
    );
    assert_eq!(summary["request"]["Manifest"]["Spec"]["Format"], "S3InventoryReport_CSV_20161130");
    assert_eq!(summary["request"]["Report"]["ReportScope"], "AllTasks");
    assert!(summary["objects"].is_null());
}

#[test]
fn a_role_that_is_not_an_iam_role_is_refused_before_anything_is_written() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_clip-search"))
        .args(["backfill", "--bucket", "b", "--batch-operations", "--manifest-bucket", "m"])
        .args(["--role-arn", "not-an-arn", "--function-arn", FUNCTION, "--dry-run"])
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("--role-arn"), "{stderr}");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_clip-search"))
        .args(["backfill", "--bucket", "b", "--batch-operations", "--role-arn", ROLE])
        .output()
        .unwrap();
    assert!(!output.status.success(), "--manifest-bucket and --function-arn are required with --batch-operations");
}
