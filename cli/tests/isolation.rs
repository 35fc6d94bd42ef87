//! Per-user isolation end to end on the local stack, as a user runs it: `clip-search backfill`
//! under `OWNER_KEY_TEMPLATE`, `KEY_PREFIX` and `KEY_SUFFIX`, then `clip-search serve --as-user`
//! processes answering real HTTP requests, including cross-tenant attempts and forged identities.
//! Real SeaweedFS, Milvus Lite and the tiny model; `bash scripts/test` runs these (`--include-ignored`).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::Value;
use shared::index::VectorIndex;
use tests::{fixture_image, put, unique, Stack, TestCollection};

const DIM: usize = 64;
const TEMPLATE: &str = "users/{sub}/";
/// Both servers sign cursors with it, as every container of one deployment does.
const CURSOR_KEY: &str = "isolation-test-cursor-signing-key-0123456789";

/// The stack's settings for one test's bucket and collection, with isolation on.
fn clip_search(bucket: &str, collection: &str, args: &[&str]) -> Command {
    let mut command = Stack::cli(env!("CARGO_BIN_EXE_clip-search"), collection, args);
    command
        .env("OWNER_KEY_TEMPLATE", TEMPLATE)
        .env("KEY_PREFIX", "users/")
        .env("KEY_SUFFIX", ".jpg")
        .env("UPLOADS_BUCKET", bucket)
        .env("CURSOR_SIGNING_KEY", CURSOR_KEY);
    command
}

/// A `clip-search serve` process, killed when dropped.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    /// Starts `serve --as-user owner` on a free port and waits for its address line.
    fn start(bucket: &str, collection: &str, owner: &str) -> Server {
        let mut child = clip_search(bucket, collection, &["serve", "--listen", "127.0.0.1:0", "--as-user", owner])
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("clip-search serve starts");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let base = loop {
            let line = lines.next().expect("serve prints its address before exiting").expect("stderr");
            if let Some(rest) = line.split("http://").nth(1) {
                break format!("http://{}", rest.split('/').next().unwrap());
            }
        };
        Server { child, base }
    }

    async fn search(&self, params: &[(&str, &str)], headers: &[(&str, &str)]) -> (u16, Value) {
        let mut request = reqwest::Client::new().get(format!("{}/search", self.base)).query(params);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("the server answers");
        let status = response.status().as_u16();
        (status, response.json().await.expect("a JSON body"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keys(body: &Value) -> Vec<String> {
    let mut keys: Vec<String> =
        body["results"].as_array().unwrap().iter().map(|r| r["key"].as_str().unwrap().to_string()).collect();
    keys.sort();
    keys
}

/// A bucket with Alice's and Bob's photos and keys the deployment does not serve, backfilled.
async fn backfilled() -> (String, TestCollection) {
    let stack = Stack::load();
    let s3 = stack.s3().await;
    let bucket = stack.bucket(&s3, "isolation").await;
    let collection = stack.milvus_with_owners(&unique("t_isolation"), DIM, TEMPLATE).await;
    for (key, file) in [
        ("users/alice/cat.jpg", "baseline.jpg"),
        ("users/alice/beach.jpg", "landscape-1024.jpg"),
        ("users/bob/dog.jpg", "progressive.jpg"),
        ("users/bob/tall.jpg", "tall-300x2000.jpg"),
        ("users/bob/logo.png", "rgba.png"),
        ("public/banner.jpg", "wide-2000x300.jpg"),
    ] {
        put(&s3, &bucket, key, fixture_image(file), "image/jpeg").await;
    }
    let output = clip_search(&bucket, collection.collection(), &["backfill", "--bucket", &bucket, "--json"])
        .output()
        .expect("backfill runs");
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("backfill printed no JSON ({e}): {}", String::from_utf8_lossy(&output.stderr)));
    assert!(output.status.success(), "{report}");
    // Only KEY_PREFIX/KEY_SUFFIX: the PNG and the public banner are not the deployment's.
    assert_eq!(report["listed"], 4, "{report}");
    let mut indexed: Vec<String> = collection.list(&bucket, "").await.unwrap().into_iter().map(|o| o.key).collect();
    indexed.sort();
    assert_eq!(indexed, ["users/alice/beach.jpg", "users/alice/cat.jpg", "users/bob/dog.jpg", "users/bob/tall.jpg"]);
    (bucket, collection)
}

#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn served_as_one_user_nothing_of_another_is_returned_presigned_or_revealed() {
    let (bucket, collection) = backfilled().await;
    let alice = Server::start(&bucket, collection.collection(), "alice");
    let bob = Server::start(&bucket, collection.collection(), "bob");

    let (status, body) = alice.search(&[("q", "a photo"), ("k", "100")], &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(keys(&body), ["users/alice/beach.jpg", "users/alice/cat.jpg"]);
    for r in body["results"].as_array().unwrap() {
        let url = r["url"].as_str().unwrap();
        assert!(url.contains("/users/alice/"), "{url}");
        let got = reqwest::get(url).await.unwrap();
        assert_eq!(got.status(), 200, "alice's URL works");
    }

    // Forged identities in headers change nothing: the server vouches for alice alone.
    let unsigned = "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJib2IifQ.";
    let forged = [("authorization", unsigned), ("x-amzn-oidc-identity", "bob"), ("x-user", "bob")];
    let (_, body) = alice.search(&[("q", "a dog"), ("k", "100")], &forged).await;
    assert_eq!(keys(&body), ["users/alice/beach.jpg", "users/alice/cat.jpg"], "{body}");
    // Bob's prefix, Bob's key, Bob's cursor.
    let (status, body) = alice.search(&[("q", "a dog"), ("prefix", "users/bob/")], &[]).await;
    assert_eq!((status, keys(&body)), (200, Vec::<String>::new()), "{body}");
    let (status, body) = alice.search(&[("similar_to", "users/bob/dog.jpg")], &[]).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_indexed")), "{body}");
    let (_, bobs) = bob.search(&[("q", "a photo"), ("k", "1")], &[]).await;
    assert_eq!(keys(&bobs).len(), 1);
    assert!(keys(&bobs)[0].starts_with("users/bob/"), "{bobs}");
    let cursor = bobs["next_cursor"].as_str().expect("bob has a second page");
    let (status, body) = alice.search(&[("q", "a photo"), ("k", "1"), ("cursor", cursor)], &[]).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_cursor")), "{body}");
    // The same cursor works for Bob, on either server's key (one deployment, one signing key).
    let (status, page2) = bob.search(&[("q", "a photo"), ("k", "1"), ("cursor", cursor)], &[]).await;
    assert_eq!(status, 200, "{page2}");
    assert!(keys(&page2).iter().all(|k| k.starts_with("users/bob/")), "{page2}");

    // The command line takes the same owner, and isolation cannot be switched off by leaving it out.
    let output = clip_search(&bucket, collection.collection(), &["search", "a photo", "--as-user", "bob", "--json"])
        .output()
        .unwrap();
    let response: Value = serde_json::from_slice(&output.stdout).expect("search --json");
    assert_eq!(keys(&response), ["users/bob/dog.jpg", "users/bob/tall.jpg"]);
    let output = clip_search(&bucket, collection.collection(), &["search", "a photo"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("--as-user"), "{stderr}");
    let mut serve = clip_search(&bucket, collection.collection(), &["serve", "--listen", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while serve.try_wait().unwrap().is_none() {
        if start.elapsed() > std::time::Duration::from_secs(120) {
            let _ = serve.kill();
            panic!("serve without --as-user is serving instead of refusing to start");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let output = serve.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("--as-user"), "{stderr}");
}
