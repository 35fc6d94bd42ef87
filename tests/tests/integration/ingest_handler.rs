//! The ingest use case with its real adapters: SeaweedFS (S3 API) and Milvus Lite, fed the
//! committed S3 event JSON. Needs the local stack (`bash scripts/stack up --detach --no-demo`).

use shared::domain::ingest::IngestError;
use shared::domain::record::record_id;
use shared::index::{IndexError, SearchQuery, VectorIndex};
use tests::{bad_input, fixture_image, golden_images, ingest, ingestor, put, s3_event, unique, Sandbox, Stack};

const DIM: usize = 64;

#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn a_put_event_indexes_the_object_with_its_metadata() {
    let Sandbox { s3, bucket, index, .. } = Sandbox::new("ingest-single", DIM).await;
    let bytes = fixture_image("baseline.jpg");
    put(&s3, &bucket, "uploads/baseline.jpg", bytes.clone(), "image/jpeg").await;

    let report = ingest(&ingestor(&s3, index.clone()), &s3_event("put-single.json", &bucket)).await.unwrap();
    assert_eq!(report.indexed, vec!["uploads/baseline.jpg"]);
    assert!(report.skipped.is_empty() && report.unchanged.is_empty());

    let golden = golden_images().into_iter().find(|g| g.file == "baseline.jpg").unwrap();
    let hits = index.search(&SearchQuery::top(&golden.embedding, 5)).await.unwrap();
    assert_eq!(hits.len(), 1);
    let (hit, score) = (&hits[0].record, hits[0].score);
    assert_eq!(hit.key, "uploads/baseline.jpg");
    assert_eq!(hit.bucket, bucket);
    assert_eq!(hit.id, record_id(&bucket, "uploads/baseline.jpg"));
    assert!((score - 1.0).abs() < 1e-4, "stored vector is the reference embedding: {score}");
    assert_eq!(hit.size as usize, bytes.len());
    assert_eq!((hit.width, hit.height), (512, 512));
    assert_eq!(hit.content_type, "image/jpeg");
    assert_eq!(hit.etag.len(), 32, "S3's MD5 ETag, unquoted: {}", hit.etag);
    assert!(hit.last_modified_ms > 1_700_000_000_000, "last-modified from S3: {}", hit.last_modified_ms);
}

#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn several_records_are_indexed_and_a_repeated_event_is_not_embedded_again() {
    let Sandbox { s3, bucket, index, .. } = Sandbox::new("ingest-multi", DIM).await;
    for (key, file, ct) in [
        ("uploads/progressive.jpg", "progressive.jpg", "image/jpeg"),
        ("uploads/lossy.webp", "lossy.webp", "image/webp"),
        ("uploads/palette.png", "palette.png", "binary/octet-stream"),
    ] {
        put(&s3, &bucket, key, fixture_image(file), ct).await;
    }
    let ingestor = ingestor(&s3, index.clone());
    let event = s3_event("put-multi.json", &bucket);
    let report = ingest(&ingestor, &event).await.unwrap();
    assert_eq!(report.indexed, vec!["uploads/progressive.jpg", "uploads/lossy.webp", "uploads/palette.png"]);
    assert_eq!(index.count().await.unwrap(), 3);

    // S3 delivers at least once: the same event again changes nothing and embeds nothing.
    let again = ingest(&ingestor, &event).await.unwrap();
    assert_eq!(again.unchanged.len(), 3, "{again:?}");
    assert!(again.indexed.is_empty());
    assert_eq!(index.count().await.unwrap(), 3);
    let hits = index.search(&SearchQuery::top(&[0.1; DIM], 10)).await.unwrap();
    let png = hits.iter().map(|h| &h.record).find(|r| r.key == "uploads/palette.png").unwrap();
    assert_eq!(png.content_type, "image/png", "octet-stream uploads get the type their bytes show");
}

#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn a_removed_event_deletes_the_entity_and_a_reupload_replaces_it() {
    let Sandbox { s3, bucket, index, .. } = Sandbox::new("ingest-remove", DIM).await;
    let ingestor = ingestor(&s3, index.clone());
    put(&s3, &bucket, "uploads/baseline.jpg", fixture_image("baseline.jpg"), "image/jpeg").await;
    ingest(&ingestor, &s3_event("put-single.json", &bucket)).await.unwrap();
    let first = index.etags(&[record_id(&bucket, "uploads/baseline.jpg")]).await.unwrap();

    // Same key, new bytes: one entity, new ETag.
    put(&s3, &bucket, "uploads/baseline.jpg", fixture_image("progressive.jpg"), "image/jpeg").await;
    let report = ingest(&ingestor, &s3_event("put-single.json", &bucket)).await.unwrap();
    assert_eq!(report.indexed, vec!["uploads/baseline.jpg"]);
    assert_eq!(index.count().await.unwrap(), 1);
    let second = index.etags(&[record_id(&bucket, "uploads/baseline.jpg")]).await.unwrap();
    assert_ne!(first, second);

    s3.client().delete_object().bucket(&bucket).key("uploads/baseline.jpg").send().await.unwrap();
    let report = ingest(&ingestor, &s3_event("removed.json", &bucket)).await.unwrap();
    assert_eq!(report.deleted, vec!["uploads/baseline.jpg"]);
    assert_eq!(index.count().await.unwrap(), 0);
}

/// An object that a lifecycle rule expired leaves the index like a deleted one (S3 sends
/// `LifecycleExpiration:Delete`, not `ObjectRemoved:*`); one that a rule has not removed yet stays.
#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn a_lifecycle_expiration_removes_the_record_once_the_object_is_gone() {
    let Sandbox { s3, bucket, index, .. } = Sandbox::new("ingest-expired", DIM).await;
    let ingestor = ingestor(&s3, index.clone());
    put(&s3, &bucket, "uploads/baseline.jpg", fixture_image("baseline.jpg"), "image/jpeg").await;
    ingest(&ingestor, &s3_event("put-single.json", &bucket)).await.unwrap();
    let report = ingest(&ingestor, &s3_event("lifecycle-expired.json", &bucket)).await.unwrap();
    assert!(report.deleted.is_empty(), "the object still exists: {report:?}");
    assert_eq!(index.count().await.unwrap(), 1);
    s3.client().delete_object().bucket(&bucket).key("uploads/baseline.jpg").send().await.unwrap();
    let report = ingest(&ingestor, &s3_event("lifecycle-expired.json", &bucket)).await.unwrap();
    assert_eq!(report.deleted, vec!["uploads/baseline.jpg"]);
    assert_eq!(index.count().await.unwrap(), 0);
}

/// Overwriting an indexed photo with a corrupt file removes its record: search must not hand out
/// a URL to bytes that are no longer that photo.
#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn an_overwrite_with_a_corrupt_file_removes_the_old_record() {
    let Sandbox { s3, bucket, index, .. } = Sandbox::new("ingest-overwrite", DIM).await;
    let ingestor = ingestor(&s3, index.clone());
    put(&s3, &bucket, "uploads/baseline.jpg", fixture_image("baseline.jpg"), "image/jpeg").await;
    ingest(&ingestor, &s3_event("put-single.json", &bucket)).await.unwrap();
    assert_eq!(index.count().await.unwrap(), 1);

    put(&s3, &bucket, "uploads/baseline.jpg", bad_input("truncated.jpg"), "image/jpeg").await;
    let report = ingest(&ingestor, &s3_event("put-single.json", &bucket)).await.unwrap();
    assert_eq!(report.skipped.len(), 1, "{report:?}");
    assert_eq!(report.unindexed, vec!["uploads/baseline.jpg"]);
    assert!(index.etags(&[record_id(&bucket, "uploads/baseline.jpg")]).await.unwrap().is_empty());
    assert_eq!(index.count().await.unwrap(), 0);
}

#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn url_encoded_keys_are_decoded_to_the_real_object_keys() {
    let Sandbox { s3, bucket, index, .. } = Sandbox::new("ingest-keys", DIM).await;
    let keys =
        ["deep/er/and/deeper/with space.jpg", "plus+sign & more.png", "100% real.png", "unicode/café 日本 😀.png"];
    for key in keys {
        put(&s3, &bucket, key, fixture_image("tiny-10x10.png"), "image/png").await;
    }
    let report = ingest(&ingestor(&s3, index.clone()), &s3_event("put-encoded-keys.json", &bucket)).await.unwrap();
    assert_eq!(report.indexed, keys, "skipped: {:?}", report.skipped);
}

#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn a_corrupt_or_non_image_object_is_skipped_and_the_others_are_indexed() {
    let Sandbox { s3, bucket, index, .. } = Sandbox::new("ingest-mixed", DIM).await;
    put(&s3, &bucket, "mixed/good-1.jpg", fixture_image("baseline.jpg"), "image/jpeg").await;
    put(&s3, &bucket, "mixed/truncated.jpg", bad_input("truncated.jpg"), "image/jpeg").await;
    put(&s3, &bucket, "mixed/notes.txt", bad_input("not-an-image.txt"), "text/plain").await;
    put(&s3, &bucket, "mixed/good-2.png", fixture_image("rgba.png"), "image/png").await;

    let report = ingest(&ingestor(&s3, index.clone()), &s3_event("mixed-with-corrupt.json", &bucket)).await.unwrap();
    assert_eq!(report.indexed, vec!["mixed/good-1.jpg", "mixed/good-2.png"]);
    let skipped: Vec<(&str, &str)> = report.skipped.iter().map(|s| (s.key.as_str(), s.reason.as_str())).collect();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(skipped.iter().any(|(k, r)| *k == "mixed/notes.txt" && r.contains("text/plain")), "{skipped:?}");
    assert!(skipped.iter().any(|(k, r)| *k == "mixed/truncated.jpg" && r.contains("truncated")), "{skipped:?}");
    assert_eq!(index.count().await.unwrap(), 2);
}

#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn milvus_down_fails_the_event_so_lambda_retries_it() {
    let stack = Stack::load();
    let s3 = stack.s3().await;
    let bucket = stack.bucket(&s3, "ingest-down").await;
    put(&s3, &bucket, "uploads/baseline.jpg", fixture_image("baseline.jpg"), "image/jpeg").await;
    let nowhere = stack.unreachable_milvus(DIM).await;
    let err = ingest(&ingestor(&s3, nowhere), &s3_event("put-single.json", &bucket)).await.unwrap_err();
    assert!(matches!(err, IngestError::Index(IndexError::Unavailable(_))), "{err}");
}

#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn a_collection_with_another_dimension_is_refused_with_both_values() {
    let stack = Stack::load();
    let name = unique("t_dim");
    let index = stack.milvus(&name, DIM).await;
    assert_eq!(index.count().await.unwrap(), 0, "created with 64 dimensions");
    let other = stack.milvus(&name, 512).await;
    let err = other.count().await.unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, IndexError::Incompatible { .. }), "{err}");
    assert!(message.contains("64") && message.contains("512") && message.contains(&name), "{message}");
}

#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn stored_vectors_equal_a_direct_embedding() {
    // The vector that lands in Milvus is the one the embedder computes (no transformation on the way).
    let Sandbox { s3, bucket, index, .. } = Sandbox::new("ingest-vector", DIM).await;
    put(&s3, &bucket, "uploads/baseline.jpg", fixture_image("exif-6.jpg"), "image/jpeg").await;
    ingest(&ingestor(&s3, index.clone()), &s3_event("put-single.json", &bucket)).await.unwrap();
    let golden = golden_images().into_iter().find(|g| g.file == "exif-6.jpg").unwrap();
    let hit = index.search(&SearchQuery::top(&golden.embedding, 1)).await.unwrap().remove(0);
    assert!(hit.score > 0.9999, "{}", hit.score);
    assert_eq!((hit.record.width, hit.record.height), (640, 427), "EXIF orientation applied before measuring");
}

#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn containers_starting_together_all_get_the_same_new_collection() {
    // A fresh deployment: many cold containers race to create the collection and its index.
    let stack = Stack::load();
    let name = unique("t_race");
    let mut indexes = Vec::new();
    for _ in 0..8 {
        indexes.push(stack.milvus(&name, DIM).await);
    }
    let counts = futures::future::join_all(indexes.iter().map(|index| index.count())).await;
    for count in counts {
        assert_eq!(count.expect("every racer sees a usable collection"), 0);
    }
}

/// A server that sends no Content-Length (or a wrong one) cannot make ingest read an unbounded
/// body: `S3Store::get` stops at `MAX_OBJECT_BYTES` + 1 whatever the headers say. The server is a
/// plain HTTP endpoint answering every GET with a chunked body of 1 MiB, in front of the real SDK.
#[tokio::test]
async fn a_body_without_a_length_is_read_only_up_to_the_limit() {
    use shared::store::{ObjectStore, StoreError};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(|| async {
        let chunks = futures::stream::iter((0..256).map(|_| Ok::<_, std::io::Error>(vec![7u8; 4096])));
        axum::response::Response::builder()
            .header("content-type", "image/png")
            .header("etag", "\"e\"")
            .body(axum::body::Body::from_stream(chunks))
            .unwrap()
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    let credentials = aws_sdk_s3::config::Credentials::new("k", "s", None, None, "test");
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(credentials)
        .endpoint_url(format!("http://{address}"))
        .load()
        .await;
    let store = shared::store::S3Store::from_sdk_config(&sdk, &shared::config::S3Config { force_path_style: true });
    match store.get("bucket", "key", 100_000).await {
        Err(StoreError::TooLarge { size, max: 100_000 }) => assert!(size <= 100_000 + 64 * 1024, "read {size} bytes"),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    let whole = store.get("bucket", "key", 1 << 20).await.expect("a body within the limit is read");
    assert_eq!(whole.bytes.len(), 1 << 20);
}
