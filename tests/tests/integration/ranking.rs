//! Search results equal a brute-force cosine ranking computed from the golden embeddings, for
//! every model family's tiny bundle. Every fixture photo goes through S3 → ingest → Milvus with
//! the family's image tower; queries go through the search use case with its text tower.

use serde_json::json;
use shared::domain::search::SearchRequest;
use shared::embedder::cosine;
use tests::{fixture_image, ingest, ingestor_of, put, searcher_of, unique, Family, Stack, FAMILIES};

#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn order_and_scores_match_brute_force_over_the_golden_embeddings_for_every_family() {
    for family in &FAMILIES {
        ranking_matches_the_reference(family).await;
    }
}

async fn ranking_matches_the_reference(family: &Family) {
    let images = family.golden_images();
    let dim = images[0].embedding.len();
    let stack = Stack::load();
    let s3 = stack.s3().await;
    let bucket = stack.bucket(&s3, &format!("ranking-{}", family.name)).await;
    let index = stack.milvus_of_family(&unique(&format!("t_ranking_{}", family.name)), dim, family).await;
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
    let report = ingest(&ingestor_of(family, &s3, index.clone()), &event).await.unwrap();
    assert_eq!(report.indexed.len(), images.len(), "{}: skipped {:?}", family.name, report.skipped);

    let searcher = searcher_of(family, &s3, index.clone());
    // Three English queries, then Japanese, Arabic and emoji (the multilingual bundle's point).
    let texts = family.golden_texts();
    for text in [0, 2, 4, 7, 9, 10].map(|n| &texts[n]) {
        let response = searcher.search(&SearchRequest::text(text.text.clone(), images.len())).await.unwrap();
        let mut expected: Vec<(f32, String)> =
            images.iter().map(|i| (cosine(&text.embedding, &i.embedding), format!("rank/{}", i.file))).collect();
        expected.sort_by(|a, b| b.0.total_cmp(&a.0));
        let query = format!("{} {:?}", family.name, text.text);
        assert_eq!(response.results.len(), expected.len(), "{query}");
        for (position, (found, (score, key))) in response.results.iter().zip(&expected).enumerate() {
            let (got, got_key) = (&found.hit, &found.hit.record.key);
            assert!((got.score - score).abs() <= 1e-4, "{query} #{position}: score {} vs {score}", got.score);
            // Identical images (the three EXIF variants) tie; any order among equals is right.
            let tie = expected.iter().any(|(s, k)| k == got_key && (s - score).abs() <= 1e-5);
            assert!(got_key == key || tie, "{query} #{position}: {got_key} instead of {key}");
        }
    }
}
