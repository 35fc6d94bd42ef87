//! `clip-search backfill` and `reconcile`, run as a user runs them (the built binary, settings from
//! `.local/stack.env`), against the local stack: real SeaweedFS, Milvus Lite and the tiny model.
//! Each test has its own bucket and collection (dropped by its guard); the stack's ingest function
//! indexes into another collection, so what these tests do in S3 happens behind their index's back.
//! The stack tests are `#[ignore]`d so that a plain `cargo test` needs nothing installed;
//! `bash scripts/test` runs them (`-- --include-ignored`).

use std::collections::BTreeSet;
use std::io::{Cursor, Read};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use shared::index::{MilvusIndex, VectorIndex};
use tests::{bad_input, fixture_image, put, Sandbox, Stack};

const DIM: usize = 64;

fn clip_search(collection: &str, args: &[&str]) -> Command {
    Stack::cli(env!("CARGO_BIN_EXE_clip-search"), collection, args)
}

fn run(collection: &str, args: &[&str]) -> (Output, Value) {
    let output = clip_search(collection, args).output().expect("clip-search runs");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let json = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!("{args:?}: stdout is not JSON ({e}): {stdout}\nstderr: {}", String::from_utf8_lossy(&output.stderr))
    });
    (output, json)
}

/// `count` distinct JPEGs made from the fixture photos: crops, sizes and flips.
fn photo_variants(count: usize) -> Vec<Vec<u8>> {
    let sources: Vec<image::DynamicImage> =
        ["baseline.jpg", "progressive.jpg", "landscape-1024.jpg", "grayscale.jpg", "exif-6.jpg", "cmyk.jpg"]
            .iter()
            .map(|name| image::load_from_memory(&fixture_image(name)).expect("fixture decodes"))
            .collect();
    (0..count)
        .map(|i| {
            let source = &sources[i % sources.len()];
            let (w, h) = (source.width(), source.height());
            let step = (i / sources.len()) as u32;
            let (cw, ch) = ((w * 3 / 4).max(16), (h * 3 / 4).max(16));
            let x = (step * 7) % (w - cw + 1);
            let y = (step * 5) % (h - ch + 1);
            let mut variant =
                source.crop_imm(x, y, cw, ch).resize(96 + step % 64, 96, image::imageops::FilterType::Triangle);
            if step % 2 == 1 {
                variant = variant.fliph();
            }
            let mut bytes = Vec::new();
            variant.to_rgb8().write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Jpeg).expect("encode");
            bytes
        })
        .collect()
}

async fn indexed_keys(index: &MilvusIndex, bucket: &str) -> Vec<String> {
    let mut keys: Vec<String> = index.list(bucket, "").await.expect("list index").into_iter().map(|o| o.key).collect();
    keys.sort();
    keys
}

/// Waits until the collection holds at least `n` records, failing loudly if the child exits first.
async fn wait_for_progress(child: &mut Child, index: &MilvusIndex, n: u64) -> u64 {
    let start = Instant::now();
    loop {
        let count = index.count().await.unwrap_or(0);
        if count >= n {
            return count;
        }
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                pipe.read_to_string(&mut stderr).ok();
            }
            panic!("backfill ended ({status}) before indexing {n} objects (indexed {count}); stderr:\n{stderr}");
        }
        assert!(start.elapsed() < Duration::from_secs(300), "backfill made no progress: {count} indexed after 5 min");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A [`Sandbox`] whose bucket holds `objects`.
async fn sandbox_with(name: &str, objects: &[(String, Vec<u8>)]) -> Sandbox {
    let sandbox = Sandbox::new(name, DIM).await;
    for (key, bytes) in objects {
        put(&sandbox.s3, &sandbox.bucket, key, bytes.clone(), "image/jpeg").await;
    }
    sandbox
}

#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn backfill_indexes_every_good_object_once_even_when_interrupted_and_killed() {
    let mut objects: Vec<(String, Vec<u8>)> = photo_variants(204)
        .into_iter()
        .enumerate()
        .map(|(i, b)| (format!("photos/{:03}/v{i}.jpg", i % 17), b))
        .collect();
    let good: BTreeSet<String> = objects.iter().map(|(k, _)| k.clone()).collect();
    let corrupt = [
        ("photos/broken/truncated.jpg", bad_input("truncated.jpg")),
        ("photos/broken/not-an-image.jpg", b"this is text, not a JPEG".to_vec()),
        ("photos/broken/empty.jpg", Vec::new()),
    ];
    objects.extend(corrupt.iter().map(|(k, b)| (k.to_string(), b.clone())));
    let Sandbox { bucket, index, .. } = sandbox_with("backfill", &objects).await;
    let collection = index.collection().to_string();
    let args = ["backfill", "--bucket", bucket.as_str(), "--batch-size", "8", "--concurrency", "1", "--json"];

    // Ctrl-C: the batches in flight finish, the summary says it was interrupted, exit code 130.
    let mut first = clip_search(&collection, &args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    wait_for_progress(&mut first, &index, 16).await;
    Command::new("kill").args(["-INT", &first.id().to_string()]).status().expect("kill -INT");
    let output = first.wait_with_output().unwrap();
    let summary: Value = serde_json::from_slice(&output.stdout).expect("JSON summary after Ctrl-C");
    assert_eq!(output.status.code(), Some(130), "{summary}");
    assert_eq!(summary["interrupted"], true);
    let after_interrupt = index.count().await.unwrap();
    assert!(after_interrupt < good.len() as u64, "interrupted too late to prove anything: {after_interrupt}");

    // A crash (SIGKILL) mid-run loses nothing that was upserted.
    let mut second = clip_search(&collection, &args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait_for_progress(&mut second, &index, after_interrupt + 16).await;
    second.kill().unwrap();
    second.wait().unwrap();
    let after_kill = index.count().await.unwrap();
    assert!(after_kill < good.len() as u64, "killed too late to prove anything: {after_kill}");

    // The rerun does the rest: skips what is indexed, reports each corrupt object with its reason.
    let (output, summary) = run(&collection, &args);
    assert_eq!(output.status.code(), Some(1), "failures make a non-zero exit: {summary}");
    assert_eq!(summary["listed"], objects.len());
    assert_eq!(summary["interrupted"], false);
    let indexed_now = summary["indexed"].as_array().unwrap().len() as u64;
    let unchanged = summary["unchanged"].as_u64().unwrap();
    assert_eq!(unchanged, after_kill, "{summary}");
    assert_eq!(indexed_now + unchanged, good.len() as u64, "{summary}");
    let failed: BTreeSet<&str> =
        summary["failed"].as_array().unwrap().iter().map(|f| f["key"].as_str().unwrap()).collect();
    assert_eq!(failed, corrupt.iter().map(|(k, _)| *k).collect());
    assert!(summary["failed"].as_array().unwrap().iter().all(|f| !f["reason"].as_str().unwrap().is_empty()));

    // Exactly the good objects, once each.
    assert_eq!(index.count().await.unwrap(), good.len() as u64);
    assert_eq!(indexed_keys(&index, &bucket).await, good.iter().cloned().collect::<Vec<_>>());

    // Nothing left to do.
    let (_, summary) = run(&collection, &args);
    assert_eq!(
        (summary["indexed"].as_array().unwrap().len(), summary["unchanged"].as_u64()),
        (0, Some(good.len() as u64))
    );
}

#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn reconcile_removes_entries_of_deleted_objects_and_fix_indexes_the_missing() {
    let variants = photo_variants(14);
    let objects: Vec<(String, Vec<u8>)> =
        variants[..10].iter().enumerate().map(|(i, b)| (format!("album/{i}.jpg"), b.clone())).collect();
    let Sandbox { s3, bucket, index, .. } = sandbox_with("reconcile", &objects).await;
    let collection = index.collection().to_string();
    let (output, _) = run(&collection, &["backfill", "--bucket", &bucket, "--json"]);
    assert!(output.status.success());
    assert_eq!(index.count().await.unwrap(), 10);

    // Behind the index's back: delete three, add two, overwrite one.
    for key in ["album/1.jpg", "album/4.jpg", "album/7.jpg"] {
        s3.client().delete_object().bucket(&bucket).key(key).send().await.unwrap();
    }
    put(&s3, &bucket, "album/new-a.jpg", variants[10].clone(), "image/jpeg").await;
    put(&s3, &bucket, "album/new-b.jpg", variants[11].clone(), "image/jpeg").await;
    put(&s3, &bucket, "album/2.jpg", variants[12].clone(), "image/jpeg").await;

    let (output, report) = run(&collection, &["reconcile", "--bucket", &bucket, "--json"]);
    assert!(output.status.success(), "{report}");
    let strings =
        |v: &Value| -> Vec<String> { v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().into()).collect() };
    let mut removed = strings(&report["removed"]);
    removed.sort();
    assert_eq!(removed, ["album/1.jpg", "album/4.jpg", "album/7.jpg"]);
    assert_eq!(strings(&report["missing"]), ["album/2.jpg", "album/new-a.jpg", "album/new-b.jpg"]);
    assert_eq!(report["fixed"], Value::Null);
    let mut bucket_keys: Vec<String> = s3
        .client()
        .list_objects_v2()
        .bucket(&bucket)
        .send()
        .await
        .unwrap()
        .contents()
        .iter()
        .map(|o| o.key().unwrap().to_string())
        .collect();
    bucket_keys.sort();
    let expected_after_removal: Vec<String> = bucket_keys.iter().filter(|k| !k.contains("new-")).cloned().collect();
    assert_eq!(indexed_keys(&index, &bucket).await, expected_after_removal);

    let (output, report) = run(&collection, &["reconcile", "--bucket", &bucket, "--fix", "--json"]);
    assert!(output.status.success(), "{report}");
    assert_eq!(report["fixed"]["indexed"].as_array().unwrap().len(), 3, "{report}");
    assert_eq!(indexed_keys(&index, &bucket).await, bucket_keys, "the index matches the bucket");
    let etags = index.etags(&[shared::domain::record::record_id(&bucket, "album/2.jpg")]).await.unwrap();
    let head = s3.client().head_object().bucket(&bucket).key("album/2.jpg").send().await.unwrap();
    assert_eq!(
        etags.values().next().map(String::as_str),
        head.e_tag().map(|e| e.trim_matches('"')),
        "overwrite re-indexed"
    );

    let (_, report) = run(&collection, &["reconcile", "--bucket", &bucket, "--json"]);
    assert_eq!((report["removed"].as_array().unwrap().len(), report["missing"].as_array().unwrap().len()), (0, 0));
}

/// `clip-search backfill` over a bucket of hostile files and good photos finishes, indexes the good
/// photos and the valid hostile files, and lists every other hostile file as failed with its reason.
#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn backfill_over_hostile_files_finishes_and_lists_them_as_failed() {
    let files = tests::hostile::all(false);
    let mut objects: Vec<(String, Vec<u8>)> =
        files.iter().map(|f| (format!("hostile/{}", f.name), f.bytes.clone())).collect();
    objects.push(("good/baseline.jpg".into(), fixture_image("baseline.jpg")));
    objects.push(("good/rgba.png".into(), fixture_image("rgba.png")));
    let Sandbox { bucket, index, .. } = sandbox_with("hostile", &objects).await;
    let collection = index.collection().to_string();
    let (output, report) = run(&collection, &["backfill", "--bucket", &bucket, "--batch-size", "4", "--json"]);
    // It finishes (no crash, no signal); exit status 1 says that some objects were not indexed.
    assert_eq!(output.status.code(), Some(1), "{report}\n{}", String::from_utf8_lossy(&output.stderr));
    let indexed = indexed_keys(&index, &bucket).await;
    let failed: Vec<(String, String)> = report["failed"]
        .as_array()
        .expect("a failed list")
        .iter()
        .map(|f| (f["key"].as_str().unwrap().to_string(), f["reason"].as_str().unwrap().to_string()))
        .collect();
    for key in ["good/baseline.jpg", "good/rgba.png"] {
        assert!(indexed.contains(&key.to_string()), "{key} indexed: {indexed:?}");
    }
    for file in &files {
        let key = format!("hostile/{}", file.name);
        file.check(match failed.iter().find(|(k, _)| *k == key) {
            Some((_, reason)) => Err(reason.clone()),
            None => {
                assert!(indexed.contains(&key), "{key} neither indexed nor listed as failed: {report}");
                Ok((0, 0))
            }
        });
    }
}

#[test]
fn every_command_has_help() {
    for command in [&[][..], &["backfill"], &["reconcile"], &["search"], &["embed"], &["serve"]] {
        let output = Command::new(env!("CARGO_BIN_EXE_clip-search")).args(command).arg("--help").output().unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success() && text.contains("Usage:"), "{command:?} --help: {text}");
    }
}
