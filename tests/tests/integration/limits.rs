//! Answers larger than gRPC's 4 MiB default message limit, which milvus-sdk-rust keeps (issue 12):
//! a bucket listing of 16,384 records with 1 KB keys (reconcile), and a `dedup` page deep in a
//! ranking whose records carry 1 KB keys and their vectors. Both used to fail with "message
//! length too large"; listing now pages by 2,048 rows and dedup reads its window 512 hits at a time.

use shared::domain::record::{record_id, ImageRecord};
use shared::domain::search::SearchRequest;
use shared::index::VectorIndex;
use tests::{searcher, Sandbox};

const DIM: usize = 64;

/// `count` records whose keys are about 1 KB, with pseudo-random unit vectors (no two near-duplicates).
fn records(bucket: &str, count: usize) -> Vec<ImageRecord> {
    let mut state = 0x2545_f491u32;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        (state as f32 / u32::MAX as f32) - 0.5
    };
    (0..count)
        .map(|i| {
            let key = format!("{i:05}/{}", "k".repeat(1_000));
            let mut vector: Vec<f32> = (0..DIM).map(|_| next()).collect();
            let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
            vector.iter_mut().for_each(|v| *v /= norm);
            ImageRecord {
                id: record_id(bucket, &key),
                bucket: bucket.to_string(),
                key,
                owner: String::new(),
                size: 1,
                etag: format!("etag-{i}"),
                content_type: "image/jpeg".into(),
                last_modified_ms: 0,
                width: 1,
                height: 1,
                indexed_at_ms: 0,
                sequencer: None,
                vector,
            }
        })
        .collect()
}

async fn fill(index: &dyn VectorIndex, records: &[ImageRecord]) {
    for chunk in records.chunks(512) {
        index.upsert(chunk).await.expect("upsert");
    }
}

#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn a_listing_of_16384_records_with_1_kb_keys_is_read_whole() {
    let Sandbox { bucket, index, .. } = Sandbox::new("limits-list", DIM).await;
    let all = records(&bucket, 16_384);
    fill(&**index, &all).await;
    let mut listed: Vec<String> =
        index.list(&bucket, "").await.expect("the listing fits its messages").into_iter().map(|o| o.key).collect();
    listed.sort();
    listed.dedup();
    assert_eq!(listed.len(), 16_384);
    assert_eq!(listed.first(), Some(&all[0].key));
}

#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn a_deep_dedup_page_over_records_with_1_kb_keys_is_answered() {
    let sandbox = Sandbox::new("limits-dedup", DIM).await;
    fill(&**sandbox.index, &records(&sandbox.bucket, 2_500)).await;
    let searcher = searcher(&sandbox.s3, sandbox.index.clone());
    let request = SearchRequest { dedup: true, offset: 1_900, ..SearchRequest::text("a photo", 100) };
    let page = searcher.search(&request).await.expect("a deep dedup page");
    assert_eq!(page.results.len(), 100, "the page is full: no two random vectors are near-duplicates");
    assert!(page.results.iter().all(|r| r.hit.record.key.len() > 1_000));
}
