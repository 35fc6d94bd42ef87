//! Search results equal a brute-force cosine ranking computed from the golden embeddings.
//! Every fixture photo goes through S3 → ingest → Milvus; queries go through the search use case.

use std::sync::Arc;

use serde_json::json;
use shared::embedder::cosine;
use shared::search::SearchRequest;
use tests::{fixture_image, golden_images, golden_texts, ingestor, put, searcher, unique, Stack};

#[tokio::test]
async fn order_and_scores_match_brute_force_over_the_golden_embeddings() {
    let stack = Stack::load();
    let s3 = stack.s3().await;
    let bucket = stack.bucket(&s3, "ranking").await;
    let index = Arc::new(stack.milvus(&unique("t_ranking"), 64).await);
    let images = golden_images();
    let mut records = Vec::new();
    for image in &images {
        let key = format!("rank/{}", image.file);
        put(&s3, &bucket, &key, fixture_image(&image.file), "application/octet-stream").await;
        records.push(json!({
            "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1", "eventTime": "2026-11-26T17:00:00.000Z",
            "eventName": "ObjectCreated:Put", "userIdentity": {"principalId": "t"}, "requestParameters": {"sourceIPAddress": "127.0.0.1"},
            "responseElements": {"x-amz-request-id": "r", "x-amz-id-2": "i"},
            "s3": {"s3SchemaVersion": "1.0", "configurationId": "c", "bucket": {"name": bucket, "ownerIdentity": {"principalId": "t"}, "arn": "arn:aws:s3:::b"},
                   "object": {"key": key, "size": 1, "eTag": "", "sequencer": "1"}}
        }));
    }
    let event = serde_json::from_value(json!({ "Records": records })).unwrap();
    let report = ingestor(&s3, index.clone()).handle_event(&event).await.unwrap();
    assert_eq!(report.indexed.len(), images.len(), "skipped: {:?}", report.skipped);

    let searcher = searcher(&s3, index.clone());
    for text in golden_texts().iter().take(6) {
        let response = searcher.search(&SearchRequest::text(text.text.clone(), images.len())).await.unwrap();
        let mut expected: Vec<(f32, String)> =
            images.iter().map(|i| (cosine(&text.embedding, &i.embedding), format!("rank/{}", i.file))).collect();
        expected.sort_by(|a, b| b.0.total_cmp(&a.0));
        assert_eq!(response.results.len(), expected.len(), "{:?}", text.text);
        for (position, (got, (score, key))) in response.results.iter().zip(&expected).enumerate() {
            assert!((got.score - score).abs() <= 1e-4, "{:?} #{position}: score {} vs {score}", text.text, got.score);
            // Identical images (the three EXIF variants) tie; any order among equals is right.
            let tie = expected.iter().any(|(s, k)| k == &got.key && (s - score).abs() <= 1e-5);
            assert!(&got.key == key || tie, "{:?} #{position}: {} instead of {key}", text.text, got.key);
        }
    }
    index.drop_collection().await.unwrap();
}
