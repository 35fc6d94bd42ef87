//! The search HTTP API (`shared::http::service`, as the Lambda serves it) with real adapters, fed
//! committed API Gateway v1 (REST) and v2 (HTTP API) requests. Needs the local stack.

use std::sync::Arc;

use lambda_http::Request;
use serde_json::json;
use shared::domain::search::Searcher;
use tests::{
    apigw_request, call_json, fixture_image, ingest, ingestor, put, s3_event, searcher, with_query, Sandbox, Stack,
    TestCollection, REQUEST_ID,
};

const DIM: usize = 64;

/// A searcher over a fresh collection holding three indexed photos.
async fn indexed_searcher() -> (Arc<Searcher>, TestCollection) {
    let Sandbox { s3, bucket, index, .. } = Sandbox::new("search", DIM).await;
    for (key, file) in [
        ("uploads/progressive.jpg", "progressive.jpg"),
        ("uploads/lossy.webp", "lossy.webp"),
        ("uploads/palette.png", "palette.png"),
    ] {
        put(&s3, &bucket, key, fixture_image(file), "image/jpeg").await;
    }
    let report = ingest(&ingestor(&s3, index.clone()), &s3_event("put-multi.json", &bucket)).await.unwrap();
    assert_eq!(report.indexed.len(), 3);
    (searcher(&s3, index.clone()), index)
}

#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn get_and_post_on_both_api_gateway_versions_return_ranked_results_with_working_urls() {
    let (searcher, _collection) = indexed_searcher().await;
    let mut keys = None;
    for fixture in ["v2-get-search.json", "v2-post-search.json", "v1-get-search.json", "v1-post-search.json"] {
        let (status, body, headers) = call_json(&searcher, apigw_request(fixture, |_| {})).await;
        assert_eq!(status, 200, "{fixture}: {body}");
        assert_eq!(headers["cache-control"], "no-store", "{fixture}: presigned URLs are not cached");
        assert_eq!(body["query"], "a photo of a cat");
        let results = body["results"].as_array().unwrap();
        assert_eq!(results.len(), 3, "{fixture}: k=3");
        let scores: Vec<f64> = results.iter().map(|r| r["score"].as_f64().unwrap()).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "ordered by score: {scores:?}");
        for r in results {
            for field in
                ["key", "score", "url", "expires_at", "size", "content_type", "last_modified", "width", "height"]
            {
                assert!(!r[field].is_null(), "{fixture}: {field} missing in {r}");
            }
        }
        let these: Vec<String> = results.iter().map(|r| r["key"].as_str().unwrap().to_string()).collect();
        assert_eq!(keys.get_or_insert(these.clone()), &these, "every request shape gives the same answer");
    }
    // The URLs work and serve the uploaded bytes.
    let (_, body, _) = call_json(&searcher, apigw_request("v2-get-search.json", |_| {})).await;
    let client = reqwest::Client::new();
    for r in body["results"].as_array().unwrap() {
        let file = r["key"].as_str().unwrap().trim_start_matches("uploads/");
        let got = client.get(r["url"].as_str().unwrap()).send().await.unwrap();
        assert_eq!(got.status(), 200);
        assert_eq!(got.bytes().await.unwrap().to_vec(), fixture_image(file));
    }
}

#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn k_defaults_to_ten_and_caps_at_what_is_indexed() {
    let (searcher, _collection) = indexed_searcher().await;
    let (status, body, _) =
        call_json(&searcher, apigw_request("v2-get-search.json", |j| with_query(j, &[("q", "cat")]))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"].as_array().unwrap().len(), 3, "fewer than k=10 are indexed");
    let (status, _, _) =
        call_json(&searcher, apigw_request("v2-get-search.json", |j| with_query(j, &[("q", "cat"), ("k", "100")])))
            .await;
    assert_eq!(status, 200);
}

#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn bad_requests_get_a_json_400_that_says_what_to_fix() {
    let (searcher, _collection) = indexed_searcher().await;
    let long = "a".repeat(1001);
    let cases: Vec<(&str, Request, &str, &str)> = vec![
        (
            "no q",
            apigw_request("v2-get-search.json", |j| with_query(j, &[("k", "3")])),
            "missing_query",
            "`q` is required",
        ),
        ("empty q", apigw_request("v2-get-search.json", |j| with_query(j, &[("q", "   ")])), "empty_query", "empty"),
        ("long q", apigw_request("v2-get-search.json", |j| with_query(j, &[("q", &long)])), "query_too_long", "1000"),
        (
            "k=0",
            apigw_request("v2-get-search.json", |j| with_query(j, &[("q", "cat"), ("k", "0")])),
            "invalid_k",
            "1 to 100",
        ),
        (
            "k=101",
            apigw_request("v1-get-search.json", |j| with_query(j, &[("q", "cat"), ("k", "101")])),
            "invalid_k",
            "1 to 100",
        ),
        (
            "k=abc",
            apigw_request("v2-get-search.json", |j| with_query(j, &[("q", "cat"), ("k", "abc")])),
            "invalid_k",
            "abc",
        ),
        (
            "bad JSON",
            apigw_request("v2-post-search.json", |j| j["body"] = json!("{\"q\": ")),
            "malformed_json",
            "not valid JSON",
        ),
        (
            "k as text in JSON",
            apigw_request("v1-post-search.json", |j| j["body"] = json!("{\"q\": \"cat\", \"k\": \"many\"}")),
            "invalid_k",
            "many",
        ),
        (
            "q not a string",
            apigw_request("v2-post-search.json", |j| j["body"] = json!("{\"q\": 42}")),
            "invalid_query",
            "string",
        ),
        ("empty body", apigw_request("v2-post-search.json", |j| j["body"] = json!("")), "malformed_json", "empty"),
    ];
    for (name, request, code, hint) in cases {
        let (status, body, _) = call_json(&searcher, request).await;
        assert_eq!(status, 400, "{name}: {body}");
        assert_eq!(body["error"]["code"], code, "{name}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(hint), "{name}: {message:?} should mention {hint:?}");
    }
}

#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn wrong_methods_are_405_and_unknown_paths_404() {
    let (searcher, _collection) = indexed_searcher().await;
    let put = apigw_request("v2-get-search.json", |j| j["requestContext"]["http"]["method"] = json!("PUT"));
    let (status, body, headers) = call_json(&searcher, put).await;
    assert_eq!((status, body["error"]["code"].as_str()), (405, Some("method_not_allowed")), "{body}");
    assert_eq!(headers["allow"], "GET, POST");
    let delete = apigw_request("v1-get-search.json", |j| j["httpMethod"] = json!("DELETE"));
    assert_eq!(call_json(&searcher, delete).await.0, 405);
    let post_health = apigw_request("v2-get-health.json", |j| j["requestContext"]["http"]["method"] = json!("POST"));
    assert_eq!(call_json(&searcher, post_health).await.0, 405);
    let unknown = apigw_request("v2-get-search.json", |j| {
        j["rawPath"] = json!("/admin");
        j["requestContext"]["http"]["path"] = json!("/admin");
    });
    let (status, body, _) = call_json(&searcher, unknown).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "{body}");
}

#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn health_reports_the_model_and_milvus_without_internals() {
    let (searcher, index) = indexed_searcher().await;
    let (status, body, _) = call_json(&searcher, apigw_request("v2-get-health.json", |_| {})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "tiny-clip");
    assert_eq!(body["milvus"]["ok"], true);
    assert_eq!(body["milvus"]["images"], 3);
    assert!(!body.to_string().contains(index.collection()), "the collection stays in the logs: {body}");
}

#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn milvus_down_is_a_503_with_a_request_id_and_no_internals() {
    let stack = Stack::load();
    let s3 = stack.s3().await;
    let nowhere = stack.unreachable_milvus(DIM).await;
    let searcher = searcher(&s3, nowhere);
    let (status, body, _) = call_json(&searcher, apigw_request("v2-get-search.json", |_| {})).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "index_unavailable");
    assert_eq!(body["error"]["request_id"], REQUEST_ID);
    let text = body.to_string();
    assert!(!text.contains("127.0.0.1") && !text.contains("tcp") && !text.contains("Milvus:"), "no internals: {text}");
    let (status, body, _) = call_json(&searcher, apigw_request("v2-get-health.json", |_| {})).await;
    assert_eq!(status, 503);
    assert_eq!(body["milvus"]["ok"], false);
    assert_eq!(body["milvus"]["state"], "unavailable");
    let text = body.to_string();
    assert!(!text.contains("127.0.0.1") && !text.contains("unreachable") && !text.contains("error"), "{text}");
}
