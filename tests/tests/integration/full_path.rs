//! The whole local path, as a user meets it: put objects with the S3 API → SeaweedFS filer
//! webhook → event bridge → ingest under `cargo lambda watch` → search over HTTP through the
//! emulator → fetch each presigned URL. Needs `bash scripts/stack up --detach --no-demo`.

use std::time::{Duration, Instant};

use serde_json::Value;
use tests::{bad_input, fixture_image, put, unique, Stack};

const WAIT: Duration = Duration::from_secs(180);

struct Api {
    client: reqwest::Client,
    search_url: String,
}

impl Api {
    fn new(stack: &Stack) -> Api {
        Api { client: reqwest::Client::new(), search_url: stack.get("SEARCH_URL").to_string() }
    }

    /// Every result of a k=100 search whose key is under `prefix` (filtered by the API, so that
    /// other uploads in the stack's bucket cannot push them out of the top 100).
    async fn results_under(&self, prefix: &str) -> Vec<Value> {
        let response = self
            .client
            .get(&self.search_url)
            .query(&[("q", "a photo"), ("k", "100"), ("prefix", prefix)])
            .send()
            .await
            .expect("search answers");
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        body["results"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["key"].as_str().unwrap().starts_with(prefix))
            .cloned()
            .collect()
    }

    /// Polls until `done` holds for the results under `prefix`, failing loudly after [`WAIT`].
    async fn wait_until(&self, prefix: &str, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let start = Instant::now();
        loop {
            let results = self.results_under(prefix).await;
            if done(&results) {
                return results;
            }
            assert!(start.elapsed() < WAIT, "{what}: not seen after {WAIT:?}; results: {results:#?}; see .local/logs/");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

fn keys(results: &[Value]) -> Vec<String> {
    let mut keys: Vec<String> = results.iter().map(|r| r["key"].as_str().unwrap().to_string()).collect();
    keys.sort();
    keys
}

#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn upload_search_fetch_delete_and_reupload_through_the_real_path() {
    let stack = Stack::load();
    let s3 = stack.s3().await;
    let bucket = stack.get("STACK_BUCKET").to_string();
    let api = Api::new(&stack);
    let prefix = format!("{}/", unique("fullpath"));
    let uploads = [
        (format!("{prefix}holiday photos/beach day.jpg"), "baseline.jpg", "image/jpeg"),
        (format!("{prefix}a+b=c & 100% sure.png"), "rgba.png", "image/png"),
        (format!("{prefix}deep/er/café 日本.webp"), "lossy.webp", "image/webp"),
    ];
    for (key, file, ct) in &uploads {
        put(&s3, &bucket, key, fixture_image(file), ct).await;
    }
    // A corrupt upload among good ones.
    put(&s3, &bucket, &format!("{prefix}broken.jpg"), bad_input("truncated.jpg"), "image/jpeg").await;

    let mut expected: Vec<String> = uploads.iter().map(|(k, ..)| k.clone()).collect();
    expected.sort();
    let results = api.wait_until(&prefix, "the three good uploads indexed", |r| keys(r) == expected).await;

    // Each presigned URL serves exactly the uploaded bytes.
    for result in &results {
        let key = result["key"].as_str().unwrap();
        let (_, file, ct) = uploads.iter().find(|(k, ..)| k == key).unwrap();
        assert_eq!(result["content_type"], *ct);
        let got = api.client.get(result["url"].as_str().unwrap()).send().await.unwrap();
        assert_eq!(got.status(), 200, "presigned URL for {key:?}");
        assert_eq!(got.bytes().await.unwrap().to_vec(), fixture_image(file), "bytes of {key:?}");
    }

    // Delete one: it disappears from the results.
    let gone = &uploads[0].0;
    s3.client().delete_object().bucket(&bucket).key(gone).send().await.unwrap();
    api.wait_until(&prefix, "the deleted object gone", |r| !keys(r).contains(gone)).await;

    // Re-upload another key with new bytes: replaced, never duplicated.
    let again = &uploads[1].0;
    let old_size = results.iter().find(|r| r["key"] == again.as_str()).unwrap()["size"].as_i64().unwrap();
    put(&s3, &bucket, again, fixture_image("tiny-10x10.png"), "image/png").await;
    let results = api
        .wait_until(&prefix, "the re-upload indexed", |r| {
            r.iter().any(|x| x["key"] == again.as_str() && x["size"].as_i64() != Some(old_size))
        })
        .await;
    assert_eq!(results.iter().filter(|r| r["key"] == again.as_str()).count(), 1, "no duplicate for a re-upload");
    let replaced = results.iter().find(|r| r["key"] == again.as_str()).unwrap();
    assert_eq!((replaced["width"].as_i64(), replaced["height"].as_i64()), (Some(10), Some(10)));
    assert!(!keys(&results).iter().any(|k| k.ends_with("broken.jpg")), "the corrupt upload is never indexed");
}

/// The hostile files uploaded to the running stack beside good photos: every good one is indexed,
/// each hostile one is indexed or left out as `tests::hostile` says, and the ingest function is
/// still alive afterwards (`cargo lambda watch` does not restart a dead function, so a photo
/// uploaded last would never be indexed).
#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn hostile_uploads_through_the_real_path_cost_only_themselves() {
    let stack = Stack::load();
    let s3 = stack.s3().await;
    let bucket = stack.get("STACK_BUCKET").to_string();
    let api = Api::new(&stack);
    let prefix = format!("{}/", unique("hostile"));
    let files = tests::hostile::all(true);
    put(&s3, &bucket, &format!("{prefix}good/first.jpg"), fixture_image("baseline.jpg"), "image/jpeg").await;
    for file in &files {
        put(&s3, &bucket, &format!("{prefix}{}", file.name), file.bytes.clone(), "application/octet-stream").await;
    }
    put(&s3, &bucket, &format!("{prefix}good/last.png"), fixture_image("rgba.png"), "image/png").await;

    let mut expected: Vec<String> = files
        .iter()
        .filter(|f| f.expect == tests::hostile::Expect::Embedded)
        .map(|f| format!("{prefix}{}", f.name))
        .chain([format!("{prefix}good/first.jpg"), format!("{prefix}good/last.png")])
        .collect();
    expected.sort();
    let results = api
        .wait_until(&prefix, "the good photos and the valid hostile files indexed", |r| {
            expected.iter().all(|k| keys(r).contains(k))
        })
        .await;
    // The skipped ones were handled before the last photo (events arrive in order): never indexed.
    assert_eq!(keys(&results), expected, "exactly the good photos and the valid hostile files");
}
