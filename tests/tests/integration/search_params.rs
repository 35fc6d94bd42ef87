//! Every `/search` parameter (prefix, content_type, uploaded_after/before, min_score, cursor,
//! similar_to, dedup, unknown ones) through `shared::http::service`, against the local stack: real
//! S3 objects with controlled keys, content types and upload times, embedded with the tiny model
//! into a Milvus collection of each test's own. Needs `bash scripts/stack up --detach --no-demo`.
//!
//! The objects are uploaded once, to one bucket shared by the whole file (SeaweedFS has few
//! volumes); every test indexes the part it needs into a collection of its own, which its guard drops.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use lambda_http::Request;
use serde_json::{json, Value};
use shared::domain::ingest::ObjectChange;
use shared::domain::search::Searcher;
use shared::time::{parse_rfc3339_ms, rfc3339_ms};
use tests::{
    apigw_request, call_json, fixture_image, ingestor, put, searcher, unique, with_query, Stack, TestCollection,
};
use tokio::sync::OnceCell;

const DIM: usize = 64;
const Q: &str = "a photo";
/// Every result at once: the collections hold fewer than this.
const ALL: &str = "100";

/// One S3 object of the corpus.
struct Object {
    key: &'static str,
    file: &'static str,
    content_type: &'static str,
    /// Objects of batch 1 are uploaded over a second after batch 0, so LastModified differs.
    batch: u8,
}

const fn object(key: &'static str, file: &'static str, content_type: &'static str, batch: u8) -> Object {
    Object { key, file, content_type, batch }
}

/// The main corpus: every image file once (no two keys share an embedding, so the ranking has no
/// ties), under keys full of expression syntax, LIKE wildcards and quoting characters.
const MAIN: [Object; 18] = [
    object("photos/2024/baseline.jpg", "baseline.jpg", "image/jpeg", 0),
    object("photos/2024/palette.png", "palette.png", "image/png", 0),
    object("photos/2025/lossy.webp", "lossy.webp", "image/webp", 0),
    object("photos/animated.gif", "animated.gif", "image/gif", 0),
    object("a\"quote/progressive.jpg", "progressive.jpg", "image/jpeg", 0),
    object("a\\b/cmyk.jpg", "cmyk.jpg", "image/jpeg", 0),
    object("100%/landscape.jpg", "landscape-1024.jpg", "image/jpeg", 0),
    object("1000/photo.bmp", "photo.bmp", "image/bmp", 0),
    object("under_score/wide.jpg", "wide-2000x300.jpg", "image/jpeg", 0),
    object("underXscore/tall.jpg", "tall-300x2000.jpg", "image/jpeg", 1),
    object("or/rgba.png", "rgba.png", "image/png", 1),
    object("and \"x\"/logo.png", "logo-rgba.png", "image/png", 1),
    object("in [/lossless.webp", "lossless.webp", "image/webp", 1),
    object("x) or (y/photo.tiff", "photo.tiff", "image/tiff", 1),
    object("my or key+1/gray16.png", "gray16.png", "image/png", 1),
    object("café/exif-6.jpg", "exif-6.jpg", "image/jpeg", 1),
    object("upper/rgb16.png", "rgb16.png", "image/PNG", 1),
    object("octet/tiny.png", "tiny-10x10.png", "application/octet-stream", 1),
];

/// The dedup corpus: the same bytes under three keys, the same picture rotated by EXIF (an
/// identical embedding), and five images that are pairwise below the 0.98 cosine threshold.
const DUPS: [Object; 9] = [
    object("dup/a.jpg", "exif-8.jpg", "image/jpeg", 0),
    object("dup/b.jpg", "exif-8.jpg", "image/jpeg", 0),
    object("dup/c/a-copy.jpg", "exif-8.jpg", "image/jpeg", 0),
    object("dup/rotated.jpg", "exif-3.jpg", "image/jpeg", 0),
    object("dup/gray.png", "grayscale.png", "image/png", 0),
    object("dup/logo.png", "logo-rgba.png", "image/png", 0),
    object("dup/photo.tiff", "photo.tiff", "image/tiff", 0),
    object("dup/rgba.png", "rgba.png", "image/png", 0),
    object("dup/tall.jpg", "tall-300x2000.jpg", "image/jpeg", 0),
];
/// The keys of [`DUPS`] that hold the same picture.
const COPIES: [&str; 4] = ["dup/a.jpg", "dup/b.jpg", "dup/c/a-copy.jpg", "dup/rotated.jpg"];

/// The bucket holding both corpora, uploaded by whichever test comes first.
async fn corpus_bucket(stack: &Stack) -> String {
    static BUCKET: OnceCell<String> = OnceCell::const_new();
    BUCKET
        .get_or_init(|| async {
            let s3 = stack.s3().await;
            let bucket = stack.bucket(&s3, "params").await;
            for batch in [0, 1] {
                if batch == 1 {
                    tokio::time::sleep(Duration::from_millis(1100)).await;
                }
                for o in MAIN.iter().chain(&DUPS).filter(|o| o.batch == batch) {
                    put(&s3, &bucket, o.key, fixture_image(o.file), o.content_type).await;
                }
            }
            bucket
        })
        .await
        .clone()
}

struct Setup {
    searcher: Arc<Searcher>,
    /// Dropped (and the collection with it) when the test ends.
    _index: TestCollection,
    keys: Vec<&'static str>,
}

/// A searcher over a new collection holding `objects`, ingested from the shared bucket.
async fn setup(stack: &Stack, name: &str, objects: &[Object]) -> Setup {
    let bucket = corpus_bucket(stack).await;
    let s3 = stack.s3().await;
    let index = stack.milvus(&unique(name), DIM).await;
    let changes = objects
        .iter()
        .map(|o| ObjectChange::Created { bucket: bucket.clone(), key: o.key.to_string(), etag: None, sequencer: None })
        .collect();
    let report = ingestor(&s3, index.clone()).apply(changes).await.expect("ingest");
    assert!(report.skipped.is_empty(), "every object is indexed: {:?}", report.skipped);
    assert_eq!(report.indexed.len(), objects.len(), "{report:?}");
    Setup { searcher: searcher(&s3, index.clone()), _index: index, keys: objects.iter().map(|o| o.key).collect() }
}

/// API Gateway v2 (HTTP API) `GET /search?...`.
fn get(params: &[(&str, &str)]) -> Request {
    apigw_request("v2-get-search.json", |j| with_query(j, params))
}

/// API Gateway v1 (REST) `GET /search?...`.
fn get_v1(params: &[(&str, &str)]) -> Request {
    apigw_request("v1-get-search.json", |j| with_query(j, params))
}

/// API Gateway v2 `POST /search` with a JSON body.
fn post(body: Value) -> Request {
    apigw_request("v2-post-search.json", |j| j["body"] = json!(body.to_string()))
}

/// A 200 response's body.
async fn ok(searcher: &Arc<Searcher>, request: Request, what: &str) -> Value {
    let (status, body, _) = call_json(searcher, request).await;
    assert_eq!(status, 200, "{what}: {body}");
    body
}

/// Asserts a 400 with `code`.
async fn bad(searcher: &Arc<Searcher>, request: Request, code: &str, what: &str) {
    let (status, body, _) = call_json(searcher, request).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some(code)), "{what}: {body}");
    assert!(!body["error"]["message"].as_str().unwrap_or_default().is_empty(), "{what}: a message: {body}");
}

fn results(body: &Value) -> &Vec<Value> {
    body["results"].as_array().unwrap_or_else(|| panic!("results: {body}"))
}

fn keys(body: &Value) -> Vec<String> {
    results(body).iter().map(|r| r["key"].as_str().unwrap().to_string()).collect()
}

fn key_set(body: &Value) -> BTreeSet<String> {
    let keys = keys(body);
    let set: BTreeSet<String> = keys.iter().cloned().collect();
    assert_eq!(set.len(), keys.len(), "no key repeats: {keys:?}");
    set
}

fn scores(body: &Value) -> Vec<f64> {
    results(body).iter().map(|r| r["score"].as_f64().unwrap()).collect()
}

fn strings<'a>(keys: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    keys.into_iter().map(str::to_string).collect()
}

/// Follows `next_cursor` from the first page of `params` to the last, sending each page with `send`.
async fn all_pages(searcher: &Arc<Searcher>, params: &[(&str, &str)], k: usize) -> (Vec<String>, usize) {
    let k_text = k.to_string();
    let mut first: Vec<(&str, &str)> = params.to_vec();
    first.push(("k", &k_text));
    let mut body = ok(searcher, get(&first), "first page").await;
    let mut keys_seen = Vec::new();
    let mut pages = 0;
    loop {
        pages += 1;
        let page = keys(&body);
        assert!(page.len() <= k, "at most k={k} per page: {page:?}");
        keys_seen.extend(page.clone());
        let Some(cursor) = body["next_cursor"].as_str().map(str::to_string) else {
            assert!(body["next_cursor"].is_null(), "next_cursor is a string or null: {body}");
            break;
        };
        assert_eq!(page.len(), k, "only the last page may be short");
        assert!(pages < 200, "paging ends");
        let mut next = first.clone();
        next.push(("cursor", &cursor));
        body = ok(searcher, get(&next), &format!("page {}", pages + 1)).await;
    }
    (keys_seen, pages)
}

#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn prefix_returns_exactly_the_keys_with_that_literal_prefix() {
    let stack = Stack::load();
    let Setup { searcher, keys: all, _index } = setup(&stack, "t_prefix", &MAIN).await;
    let expected = |prefix: &str| strings(all.iter().copied().filter(|k| k.starts_with(prefix)));

    // Each prefix with the number of keys it must match (checked against the corpus, then the API).
    let matching: [(&str, usize); 23] = [
        ("photos/", 4),
        ("photos/2024/", 2),
        ("photos/2024/baseline.jpg", 1),
        ("a\"quote/", 1),
        ("a\"", 1),
        ("a\\b/", 1),
        ("a\\", 1),
        ("100%/", 1),
        ("100%", 1),
        ("100", 2),
        ("under_score/", 1),
        ("under_", 1),
        ("under", 2),
        ("or/", 1),
        ("or", 1),
        ("and \"x\"/", 1),
        ("in [", 1),
        ("x) or (y/", 1),
        ("my or key+1/", 1),
        ("my or ", 1),
        ("café/", 1),
        ("caf", 1),
        ("p", 4),
    ];
    for (prefix, count) in matching {
        assert_eq!(expected(prefix).len(), count, "corpus check for {prefix:?}");
        let body = ok(&searcher, get(&[("q", Q), ("k", ALL), ("prefix", prefix)]), prefix).await;
        assert_eq!(key_set(&body), expected(prefix), "prefix {prefix:?}");
    }

    // Wildcards, quotes, escapes and expression syntax are literal: these match no key.
    let nothing = [
        "x\" or key != \"",
        "\" or \"\"==\"",
        "\") or (\"",
        ") or (",
        "photos/\" or key >= \"",
        "a\\\"quote/",
        "a\\\\b/",
        "100%25/",
        "\\",
        "\"",
        "%",
        "_",
        "*",
        "under%",
        "und_r",
        ".*",
        "Photos/",
        "cafe",
        "in [x",
        "nothing/",
        "photos/2026/",
        "key",
        "\n",
    ];
    for prefix in nothing {
        assert!(expected(prefix).is_empty(), "corpus check for {prefix:?}");
        let body = ok(&searcher, get(&[("q", Q), ("k", ALL), ("prefix", prefix)]), prefix).await;
        assert_eq!(keys(&body), Vec::<String>::new(), "prefix {prefix:?} matches nothing, never everything");
        assert!(body["next_cursor"].is_null(), "{body}");
    }

    // Byte limits: 1024 bytes is accepted (and matches nothing here), 1025 is not; bytes, not characters.
    for prefix in ["x".repeat(1024), "é".repeat(512), format!("photos/{}", "x".repeat(1017))] {
        let body = ok(&searcher, get(&[("q", Q), ("prefix", &prefix)]), "1024-byte prefix").await;
        assert!(keys(&body).is_empty(), "{body}");
    }
    for prefix in ["x".repeat(1025), "é".repeat(513), format!("photos/{}", "x".repeat(1018))] {
        bad(&searcher, get(&[("q", Q), ("prefix", &prefix)]), "invalid_prefix", "1025+ byte prefix").await;
    }

    // The same through a JSON body and an API Gateway v1 request.
    let body = ok(&searcher, post(json!({"q": Q, "k": 100, "prefix": "a\"quote/"})), "POST prefix").await;
    assert_eq!(key_set(&body), strings(["a\"quote/progressive.jpg"]));
    let body = ok(&searcher, post(json!({"q": Q, "k": 100, "prefix": "x\" or key != \""})), "POST injection").await;
    assert!(keys(&body).is_empty(), "{body}");
    let body = ok(&searcher, get_v1(&[("q", Q), ("k", ALL), ("prefix", "and \"x\"/")]), "v1 prefix").await;
    assert_eq!(key_set(&body), strings(["and \"x\"/logo.png"]));
    let body = ok(&searcher, get_v1(&[("q", Q), ("k", ALL), ("prefix", "a\\b/")]), "v1 backslash").await;
    assert_eq!(key_set(&body), strings(["a\\b/cmyk.jpg"]));
    bad(&searcher, post(json!({"q": Q, "prefix": "x".repeat(1025)})), "invalid_prefix", "POST 1025 bytes").await;
    bad(&searcher, post(json!({"q": Q, "prefix": 5})), "invalid_prefix", "POST number").await;
    bad(&searcher, post(json!({"q": Q, "prefix": ["photos/"]})), "invalid_prefix", "POST array").await;
    // An empty prefix is no filter (an HTML form sends its empty fields).
    let body = ok(&searcher, get(&[("q", Q), ("k", ALL), ("prefix", "")]), "empty prefix").await;
    assert_eq!(key_set(&body), expected(""));
}

#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn content_type_is_an_exact_case_insensitive_filter() {
    let stack = Stack::load();
    let Setup { searcher, _index, .. } = setup(&stack, "t_ctype", &MAIN).await;
    let plain = ok(&searcher, get(&[("q", Q), ("k", ALL)]), "plain").await;
    let stored: HashMap<String, String> = results(&plain)
        .iter()
        .map(|r| (r["key"].as_str().unwrap().to_string(), r["content_type"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(stored.len(), MAIN.len());
    assert_eq!(stored["photos/2024/baseline.jpg"], "image/jpeg");
    assert_eq!(stored["octet/tiny.png"], "image/png", "a non-image S3 content type is replaced by the sniffed one");
    assert_eq!(stored["upper/rgb16.png"], "image/png", "stored lower case, as filters compare");
    // The filter compares MIME types case-insensitively (the contract), whatever case S3 stored.
    let expected = |filter: &str| {
        strings(stored.iter().filter(|(_, ct)| ct.eq_ignore_ascii_case(filter)).map(|(k, _)| k.as_str()))
    };
    for (filter, count) in [
        ("image/jpeg", 7),
        ("IMAGE/JPEG", 7),
        ("image/webp", 2),
        ("image/gif", 1),
        ("image/bmp", 1),
        ("image/tiff", 1),
        ("image/avif", 0),
        ("image/svg+xml", 0),
        ("application/octet-stream", 0),
    ] {
        assert_eq!(expected(filter).len(), count, "corpus check for {filter:?}");
        let body = ok(&searcher, get(&[("q", Q), ("k", ALL), ("content_type", filter)]), filter).await;
        assert_eq!(key_set(&body), expected(filter), "content_type {filter:?}");
        assert!(results(&body).iter().all(|r| r["content_type"].as_str().unwrap().eq_ignore_ascii_case(filter)));
    }
    // The PNGs match `image/png` in any case, including the one uploaded as `image/PNG` (see the next test).
    for filter in ["image/png", "Image/Png"] {
        let body = ok(&searcher, get(&[("q", Q), ("k", ALL), ("content_type", filter)]), filter).await;
        let got = key_set(&body);
        assert_eq!(got.len(), 6, "content_type {filter:?}: {got:?}");
        assert!(got.is_superset(&strings(MAIN.iter().filter(|o| o.content_type == "image/png").map(|o| o.key))));
        assert!(got.contains("octet/tiny.png"), "the sniffed type is filtered on too: {got:?}");
    }
    // Combined with a prefix; through POST and v1.
    let body =
        ok(&searcher, get(&[("q", Q), ("k", ALL), ("prefix", "photos/"), ("content_type", "image/png")]), "+prefix")
            .await;
    assert_eq!(key_set(&body), strings(["photos/2024/palette.png"]));
    let body = ok(&searcher, post(json!({"q": Q, "k": 100, "content_type": "Image/WebP"})), "POST").await;
    assert_eq!(key_set(&body), expected("image/webp"));
    let body = ok(&searcher, get_v1(&[("q", Q), ("k", ALL), ("content_type", "image/tiff")]), "v1").await;
    assert_eq!(key_set(&body), strings(["x) or (y/photo.tiff"]));

    for invalid in [
        "jpeg",
        "image/",
        "/jpeg",
        "image",
        "image/jpeg/x",
        "image/*",
        "image/jpeg; charset=binary",
        "image /jpeg",
        "-image/jpeg",
        "image/jpeg\" or content_type != \"",
        "image/jpeg\" || \"1\"==\"1",
        "image/png\") or (\"1",
        "image/jpeg\\",
        "imag\u{e9}/jpeg",
    ] {
        bad(&searcher, get(&[("q", Q), ("content_type", invalid)]), "invalid_content_type", invalid).await;
    }
    bad(&searcher, post(json!({"q": Q, "content_type": 7})), "invalid_content_type", "POST number").await;
    bad(&searcher, get_v1(&[("q", Q), ("content_type", "png")]), "invalid_content_type", "v1").await;
    let long = format!("image/{}", "x".repeat(128));
    bad(&searcher, get(&[("q", Q), ("content_type", &long)]), "invalid_content_type", "128-char subtype").await;
}

/// An object uploaded as `Content-Type: image/PNG` is stored as `image/png` (ingest normalizes the
/// type), so every spelling of the filter finds it.
#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn content_type_filter_matches_objects_uploaded_with_an_upper_case_mime_type() {
    let stack = Stack::load();
    let Setup { searcher, _index, .. } = setup(&stack, "t_ctype_case", &MAIN).await;
    let mut missing = Vec::new();
    for filter in ["image/png", "Image/Png", "IMAGE/PNG"] {
        let body = ok(&searcher, get(&[("q", Q), ("k", ALL), ("content_type", filter)]), filter).await;
        let got = key_set(&body);
        assert!(got.contains("or/rgba.png"), "content_type {filter:?}: {got:?}");
        if !got.contains("upper/rgb16.png") {
            missing.push(filter);
        }
    }
    assert!(missing.is_empty(), "upper/rgb16.png (Content-Type image/PNG) is missing for content_type={missing:?}");
}

/// `ms` as RFC 3339 with milliseconds at a UTC offset in minutes (`…Z` at 0).
fn rfc3339_at(ms: i64, offset_minutes: i32) -> String {
    rfc3339_ms(ms, offset_minutes).unwrap_or_else(|| panic!("{ms} ms at {offset_minutes} min is in range"))
}

/// Milliseconds since the epoch of an RFC 3339 time the API returned.
fn ms_of(text: &str) -> i64 {
    parse_rfc3339_ms(text).unwrap_or_else(|e| panic!("RFC 3339 {text:?}: {e}"))
}

#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn upload_time_bounds_are_inclusive_after_and_exclusive_before_to_the_millisecond() {
    let stack = Stack::load();
    let Setup { searcher, _index, .. } = setup(&stack, "t_time", &MAIN).await;
    assert_eq!(ms_of(&rfc3339_at(1_714_521_600_123, 0)), 1_714_521_600_123, "the formatter");
    assert_eq!(rfc3339_at(1_714_521_600_123, 120), "2024-05-01T02:00:00.123+02:00");
    assert_eq!(rfc3339_at(951_782_400_000, -90), "2000-02-28T22:30:00.000-01:30");

    let plain = ok(&searcher, get(&[("q", Q), ("k", ALL)]), "plain").await;
    let modified: HashMap<String, i64> = results(&plain)
        .iter()
        .map(|r| {
            let text = r["last_modified"].as_str().unwrap_or_else(|| panic!("last_modified: {r}"));
            (r["key"].as_str().unwrap().to_string(), ms_of(text))
        })
        .collect();
    assert_eq!(modified.len(), MAIN.len());
    // T: the earliest upload of the second batch; the first batch is over a second earlier.
    let t = MAIN.iter().filter(|o| o.batch == 1).map(|o| modified[o.key]).min().unwrap();
    let first_batch_latest = MAIN.iter().filter(|o| o.batch == 0).map(|o| modified[o.key]).max().unwrap();
    assert!(first_batch_latest < t - 1, "the batches are apart: {first_batch_latest} vs {t}");
    let matching =
        |keep: &dyn Fn(i64) -> bool| strings(modified.iter().filter(|(_, &ms)| keep(ms)).map(|(k, _)| k.as_str()));

    type Case<'a> = (&'a str, i64, &'a dyn Fn(i64) -> bool);
    let cases: [Case; 6] = [
        ("uploaded_after", t, &|ms| ms >= t),
        ("uploaded_after", t + 1, &|ms| ms > t),
        ("uploaded_after", t - 1, &|ms| ms >= t - 1),
        ("uploaded_before", t, &|ms| ms < t),
        ("uploaded_before", t + 1, &|ms| ms <= t),
        ("uploaded_before", t - 1, &|ms| ms < t - 1),
    ];
    for (name, at, keep) in cases {
        let expected = matching(keep);
        for offset in [0, 120] {
            let time = rfc3339_at(at, offset);
            let body = ok(&searcher, get(&[("q", Q), ("k", ALL), (name, &time)]), &time).await;
            assert_eq!(key_set(&body), expected, "{name}={time}");
        }
    }
    // The boundary instant matters: T itself is in [T, T+1ms) and not in [T+1ms, ...) or [..., T).
    assert_ne!(matching(&|ms| ms >= t), matching(&|ms| ms > t));
    assert!(!matching(&|ms| ms < t).is_empty() && !matching(&|ms| ms >= t).is_empty());
    let exactly_t = matching(&|ms| ms == t);
    let (after, before) = (rfc3339_at(t, 0), rfc3339_at(t + 1, 120));
    let body = ok(
        &searcher,
        get(&[("q", Q), ("k", ALL), ("uploaded_after", &after), ("uploaded_before", &before)]),
        "[T, T+1)",
    )
    .await;
    assert_eq!(key_set(&body), exactly_t);
    // Seconds-only times, and the filters combined with a prefix.
    let whole_second = rfc3339_at(t - t.rem_euclid(1000), 0).replace(".000", "");
    let body = ok(&searcher, get(&[("q", Q), ("k", ALL), ("uploaded_after", &whole_second)]), &whole_second).await;
    assert_eq!(key_set(&body), matching(&|ms| ms >= t - t.rem_euclid(1000)));
    let body = ok(
        &searcher,
        get(&[("q", Q), ("k", ALL), ("prefix", "photos/"), ("uploaded_after", &after)]),
        "photos after T",
    )
    .await;
    assert!(keys(&body).is_empty(), "the photos/ keys are all in the first batch: {body}");
    for (name, time, all) in [
        ("uploaded_after", "2000-01-01T00:00:00Z", true),
        ("uploaded_before", "2999-01-01T00:00:00+02:00", true),
        ("uploaded_after", "2999-01-01T00:00:00Z", false),
        ("uploaded_before", "2000-01-01T00:00:00-05:00", false),
    ] {
        let body = ok(&searcher, get(&[("q", Q), ("k", ALL), (name, time)]), time).await;
        assert_eq!(keys(&body).len(), if all { MAIN.len() } else { 0 }, "{name}={time}");
    }
    // POST and v1.
    let body = ok(&searcher, post(json!({"q": Q, "k": 100, "uploaded_after": rfc3339_at(t, 120)})), "POST").await;
    assert_eq!(key_set(&body), matching(&|ms| ms >= t));
    let body = ok(&searcher, get_v1(&[("q", Q), ("k", ALL), ("uploaded_before", &rfc3339_at(t, 120))]), "v1").await;
    assert_eq!(key_set(&body), matching(&|ms| ms < t));

    for invalid in [
        "yesterday",
        "2024-05-01",
        "2024-05-01T00:00:00",
        "2024-13-01T00:00:00Z",
        "2024-05-01T25:00:00Z",
        "1714521600000",
        "2024-05-01T00:00:00+25:00",
        "2024-05-01T00:00:00Z\" or last_modified > \"0",
    ] {
        for name in ["uploaded_after", "uploaded_before"] {
            bad(&searcher, get(&[("q", Q), (name, invalid)]), "invalid_time", &format!("{name}={invalid}")).await;
        }
    }
    bad(&searcher, post(json!({"q": Q, "uploaded_after": 1_714_521_600_000_i64})), "invalid_time", "POST number").await;
    // An empty or reversed range: the same instant in two notations, and after > before.
    for (after, before) in [
        (rfc3339_at(t, 0), rfc3339_at(t, 120)),
        (rfc3339_at(t, 0), rfc3339_at(t, 0)),
        (rfc3339_at(t + 1, 0), rfc3339_at(t, 0)),
        ("2024-05-01T00:00:00Z".to_string(), "2024-04-01T00:00:00Z".to_string()),
    ] {
        let params = [("q", Q), ("uploaded_after", after.as_str()), ("uploaded_before", before.as_str())];
        bad(&searcher, get(&params), "invalid_time_range", &format!("{after} >= {before}")).await;
    }
    bad(
        &searcher,
        post(json!({"q": Q, "uploaded_after": "2024-05-01T02:00:00+02:00", "uploaded_before": "2024-05-01T00:00:00Z"})),
        "invalid_time_range",
        "POST same instant",
    )
    .await;
}

#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn min_score_drops_lower_scores_and_only_those() {
    let stack = Stack::load();
    let Setup { searcher, _index, .. } = setup(&stack, "t_minscore", &MAIN).await;
    let plain = ok(&searcher, get(&[("q", Q), ("k", ALL)]), "plain").await;
    let (ranking, all_scores) = (keys(&plain), scores(&plain));
    assert_eq!(ranking.len(), MAIN.len());
    assert!(all_scores.windows(2).all(|w| w[0] >= w[1]), "best first: {all_scores:?}");
    // How many scores pass a threshold, compared as the API does (f32).
    let passing = |min: f64| all_scores.iter().filter(|&&s| s as f32 >= min as f32).count();

    // A threshold halfway between two neighbouring scores near the middle keeps exactly the higher ones.
    let gap = (3..MAIN.len() - 3)
        .find(|&i| all_scores[i] - all_scores[i + 1] > 1e-4)
        .unwrap_or_else(|| panic!("two distinct scores: {all_scores:?}"));
    let between = (all_scores[gap] + all_scores[gap + 1]) / 2.0;
    let thresholds = [
        ("-1", -1.0),
        ("-1.0", -1.0),
        ("0", 0.0),
        ("1", 1.0),
        ("1.0", 1.0),
        (&between.to_string()[..], between),
        (&all_scores[0].to_string()[..], all_scores[0]),
    ]
    .map(|(text, value)| (text.to_string(), value));
    for (text, value) in &thresholds {
        let body = ok(&searcher, get(&[("q", Q), ("k", ALL), ("min_score", text)]), text).await;
        assert!(
            scores(&body).iter().all(|&s| s as f32 >= *value as f32),
            "min_score={text}: every score >= it: {body}"
        );
        let expected = passing(*value);
        assert_eq!(keys(&body), ranking[..expected].to_vec(), "min_score={text}: the {expected} best, in order");
        assert!(body["next_cursor"].is_null(), "{body}");
    }
    assert_eq!(passing(-1.0), MAIN.len(), "-1 keeps everything");
    assert_eq!(passing(between), gap + 1, "the threshold between two scores splits the ranking there");
    assert!(passing(all_scores[0]) >= 1, "the best score itself passes");

    // With paging, pages end where the scores drop below the threshold.
    let text = between.to_string();
    let (paged, pages) = all_pages(&searcher, &[("q", Q), ("min_score", &text)], 2).await;
    assert_eq!(paged, ranking[..gap + 1].to_vec());
    assert_eq!(pages, (gap + 1).div_ceil(2).max(1));
    // POST with a number; v1.
    let body = ok(&searcher, post(json!({"q": Q, "k": 100, "min_score": between})), "POST").await;
    assert_eq!(keys(&body), ranking[..gap + 1].to_vec());
    let body = ok(&searcher, get_v1(&[("q", Q), ("k", ALL), ("min_score", &text)]), "v1").await;
    assert_eq!(keys(&body), ranking[..gap + 1].to_vec());
    let body = ok(&searcher, get(&[("q", Q), ("k", ALL), ("min_score", "")]), "empty").await;
    assert_eq!(keys(&body), ranking, "an empty min_score is no threshold");

    for invalid in ["1.5", "abc", "-1.01", "1.0001", "NaN", "inf", "-inf", "1e400", "0.5.1", "0,5", "true"] {
        bad(&searcher, get(&[("q", Q), ("min_score", invalid)]), "invalid_min_score", invalid).await;
    }
    for invalid in [json!(1.5), json!("high"), json!(true), json!([0.5]), json!(-2)] {
        bad(&searcher, post(json!({"q": Q, "min_score": invalid})), "invalid_min_score", &invalid.to_string()).await;
    }
}

#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn cursors_page_through_the_exact_ranking_and_are_bound_to_their_parameters() {
    let stack = Stack::load();
    let Setup { searcher, _index, .. } = setup(&stack, "t_paging", &MAIN).await;
    let plain = ok(&searcher, get(&[("q", Q), ("k", ALL)]), "plain").await;
    let ranking = keys(&plain);
    assert_eq!(ranking.len(), MAIN.len());
    assert!(plain["next_cursor"].is_null(), "k=100 holds everything: {plain}");

    // k=2 over 18: nine full pages, the last without a cursor; the same order, no repeats.
    let (paged, pages) = all_pages(&searcher, &[("q", Q)], 2).await;
    assert_eq!(paged, ranking);
    assert_eq!(pages, 9);
    let (paged, pages) = all_pages(&searcher, &[("q", Q)], 5).await;
    assert_eq!((paged, pages), (ranking.clone(), 4));
    // Exactly N in one page: no next page; N-1: one more page with one result.
    let body = ok(&searcher, get(&[("q", Q), ("k", "18")]), "k=N").await;
    assert_eq!((keys(&body), body["next_cursor"].is_null()), (ranking.clone(), true));
    let (paged, pages) = all_pages(&searcher, &[("q", Q)], 17).await;
    assert_eq!((paged, pages), (ranking.clone(), 2));
    // With a filter the pages follow the filtered ranking.
    let photos: Vec<String> = ranking.iter().filter(|k| k.starts_with("photos/")).cloned().collect();
    let (paged, pages) = all_pages(&searcher, &[("q", Q), ("prefix", "photos/")], 3).await;
    assert_eq!((paged, pages), (photos, 2));

    // A cursor works through POST and v1 with the same parameters.
    let first = ok(&searcher, get(&[("q", Q), ("k", "4")]), "first").await;
    let cursor = first["next_cursor"].as_str().expect("a next page").to_string();
    let body = ok(&searcher, post(json!({"q": Q, "k": 4, "cursor": cursor})), "POST page 2").await;
    assert_eq!(keys(&body), ranking[4..8].to_vec());
    let body = ok(&searcher, get_v1(&[("q", Q), ("k", "4"), ("cursor", &cursor)]), "v1 page 2").await;
    assert_eq!(keys(&body), ranking[4..8].to_vec());

    // Any other parameter: the cursor is refused.
    let changed: [&[(&str, &str)]; 8] = [
        &[("q", "a dog")],
        &[("q", Q), ("prefix", "photos/")],
        &[("q", Q), ("content_type", "image/png")],
        &[("q", Q), ("min_score", "0")],
        &[("q", Q), ("uploaded_after", "2000-01-01T00:00:00Z")],
        &[("q", Q), ("uploaded_before", "2999-01-01T00:00:00Z")],
        &[("q", Q), ("dedup", "true")],
        &[("similar_to", "photos/2024/baseline.jpg")],
    ];
    for params in changed {
        let mut params = params.to_vec();
        params.extend([("k", "4"), ("cursor", cursor.as_str())]);
        bad(&searcher, get(&params), "invalid_cursor", &format!("{params:?}")).await;
    }
    // Not a cursor this API issued.
    let mut tampered = cursor.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    for garbage in ["garbage", "!!!", "eyJvIjoxMH0", "e30", "null", tampered.as_str(), &cursor[..cursor.len() / 2]] {
        bad(&searcher, get(&[("q", Q), ("k", "4"), ("cursor", garbage)]), "invalid_cursor", garbage).await;
    }
    bad(&searcher, post(json!({"q": Q, "cursor": 10})), "invalid_cursor", "POST number").await;
    bad(&searcher, post(json!({"q": "a dog", "k": 4, "cursor": cursor})), "invalid_cursor", "POST other q").await;

    // Forged: a payload asking for the deepest window, unsigned, with a made-up signature, or with
    // the signature of a genuine cursor; and a genuine cursor signed by another deployment's key.
    use base64::Engine;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let (genuine_payload, genuine_tag) = cursor.split_once('.').expect("PAYLOAD.TAG");
    let payload: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(genuine_payload).unwrap())
            .unwrap();
    let deep = b64(json!({"o": 16_383, "f": payload["f"]}).to_string().as_bytes());
    let other_key = shared::http::CursorKey::from_secret("another deployment's cursor signing key");
    let foreign = shared::http::cursor_at(&shared::domain::search::SearchRequest::text(Q, 4), 4, &other_key);
    for forged in [deep.clone(), format!("{deep}.{}", b64(&[0; 16])), format!("{deep}.{genuine_tag}"), foreign] {
        bad(&searcher, get(&[("q", Q), ("k", "4"), ("cursor", &forged)]), "invalid_cursor", &forged).await;
    }
}

#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn similar_to_searches_with_a_stored_vector_and_leaves_that_object_out() {
    let stack = Stack::load();
    let Setup { searcher, keys: all, _index } = setup(&stack, "t_similar", &MAIN).await;
    for key in ["a\"quote/progressive.jpg", "a\\b/cmyk.jpg", "photos/2024/baseline.jpg", "café/exif-6.jpg"] {
        let body = ok(&searcher, get(&[("similar_to", key), ("k", ALL)]), key).await;
        assert_eq!(body["similar_to"], key, "{body}");
        assert!(body.get("query").is_none(), "no `query` for similar_to: {body}");
        let got = key_set(&body);
        assert!(!got.contains(key), "{key} is left out: {got:?}");
        assert_eq!(got, strings(all.iter().copied().filter(|k| k != &key)), "every other object");
        let s = scores(&body);
        assert!(s.windows(2).all(|w| w[0] >= w[1]), "best first: {s:?}");
        assert!(s.iter().all(|&x| x < 0.9999), "the object itself (score 1) is not among them: {s:?}");
    }
    // Paging through it gives the same ranking.
    let full = keys(&ok(&searcher, get(&[("similar_to", "or/rgba.png"), ("k", ALL)]), "full").await);
    let (paged, pages) = all_pages(&searcher, &[("similar_to", "or/rgba.png")], 4).await;
    assert_eq!((paged, pages), (full.clone(), 5));
    // With filters.
    let body =
        ok(&searcher, get(&[("similar_to", "photos/2024/baseline.jpg"), ("prefix", "photos/")]), "+prefix").await;
    assert_eq!(
        key_set(&body),
        strings(["photos/2024/palette.png", "photos/2025/lossy.webp", "photos/animated.gif"]),
        "{body}"
    );
    let body =
        ok(&searcher, get(&[("similar_to", "a\"quote/progressive.jpg"), ("prefix", "a\"")]), "only itself").await;
    assert!(keys(&body).is_empty() && body["next_cursor"].is_null(), "{body}");
    let body = ok(
        &searcher,
        get(&[("similar_to", "or/rgba.png"), ("k", ALL), ("content_type", "image/jpeg"), ("min_score", "-1")]),
        "+content_type",
    )
    .await;
    let jpegs: Vec<String> = full
        .iter()
        .filter(|k| MAIN.iter().any(|o| o.key == k.as_str() && o.content_type == "image/jpeg"))
        .cloned()
        .collect();
    assert_eq!(keys(&body), jpegs);
    // POST and v1.
    let body = ok(&searcher, post(json!({"similar_to": "or/rgba.png", "k": 3})), "POST").await;
    assert_eq!((keys(&body), body["similar_to"].as_str()), (full[..3].to_vec(), Some("or/rgba.png")));
    assert!(body.get("query").is_none() && body["next_cursor"].is_string(), "{body}");
    let body = ok(&searcher, get_v1(&[("similar_to", "or/rgba.png"), ("k", "3")]), "v1").await;
    assert_eq!(keys(&body), full[..3].to_vec());

    // Not indexed here: never uploaded, uploaded but in another collection, quoting tricks, a prefix.
    for key in [
        "photos/2024/missing.jpg",
        "dup/a.jpg",
        "photos/2024/baseline.jpg\" or key != \"",
        "photos/",
        "PHOTOS/2024/BASELINE.JPG",
        "a\\\"quote/progressive.jpg",
    ] {
        let (status, body, _) = call_json(&searcher, get(&[("similar_to", key)])).await;
        assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_indexed")), "{key}: {body}");
    }
    let (status, body, _) = call_json(&searcher, post(json!({"similar_to": "nope.jpg"}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_indexed")), "POST: {body}");
    // Both, neither, malformed.
    bad(&searcher, get(&[("q", Q), ("similar_to", "or/rgba.png")]), "conflicting_parameters", "both").await;
    bad(&searcher, post(json!({"q": Q, "similar_to": "or/rgba.png"})), "conflicting_parameters", "POST both").await;
    bad(&searcher, get_v1(&[("q", Q), ("similar_to", "nope")]), "conflicting_parameters", "v1 both").await;
    bad(&searcher, get(&[("similar_to", ""), ("k", "3")]), "missing_query", "empty similar_to").await;
    bad(&searcher, get(&[("similar_to", &"x".repeat(1025))]), "invalid_similar_to", "1025 bytes").await;
    bad(&searcher, post(json!({"similar_to": 3})), "invalid_similar_to", "POST number").await;
}

#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn dedup_collapses_copies_into_the_best_result_and_lists_them() {
    let stack = Stack::load();
    let Setup { searcher, keys: all, _index } = setup(&stack, "t_dedup", &DUPS).await;
    let plain = ok(&searcher, get(&[("q", Q), ("k", ALL)]), "plain").await;
    assert_eq!(key_set(&plain), strings(all.iter().copied()));
    assert!(results(&plain).iter().all(|r| r.get("duplicates").is_none()), "no duplicates without dedup: {plain}");
    let score_of: HashMap<String, f64> = results(&plain)
        .iter()
        .map(|r| (r["key"].as_str().unwrap().to_string(), r["score"].as_f64().unwrap()))
        .collect();
    for off in ["false", "0", "FALSE", ""] {
        let body = ok(&searcher, get(&[("q", Q), ("k", ALL), ("dedup", off)]), off).await;
        assert_eq!(keys(&body), keys(&plain), "dedup={off:?} changes nothing");
        assert!(results(&body).iter().all(|r| r.get("duplicates").is_none()), "{body}");
    }

    let groups = all.len() - COPIES.len() + 1;
    let mut deduplicated = None;
    for on in ["true", "1", "TRUE", "True"] {
        let body = ok(&searcher, get(&[("q", Q), ("k", ALL), ("dedup", on)]), on).await;
        let got = keys(&body);
        assert_eq!(got.len(), groups, "dedup={on}: the four copies become one result: {body}");
        // The copies' representative lists the other three; nobody else lists anything.
        let representative = results(&body)
            .iter()
            .find(|r| COPIES.contains(&r["key"].as_str().unwrap()))
            .unwrap_or_else(|| panic!("one of the copies is kept: {body}"));
        let rep_key = representative["key"].as_str().unwrap();
        let listed: BTreeSet<String> = representative["duplicates"]
            .as_array()
            .unwrap_or_else(|| panic!("duplicates on {rep_key}: {body}"))
            .iter()
            .map(|k| k.as_str().unwrap().to_string())
            .collect();
        assert_eq!(listed, strings(COPIES.iter().copied().filter(|k| k != &rep_key)), "{body}");
        let best_copy = COPIES.iter().map(|k| score_of[*k]).fold(f64::MIN, f64::max);
        assert!(representative["score"].as_f64().unwrap() >= best_copy - 1e-6, "the best-scoring copy is kept");
        for r in results(&body).iter().filter(|r| r["key"] != rep_key) {
            assert!(r.get("duplicates").is_none(), "only the representative lists duplicates: {r}");
        }
        // Every object appears once, as a result or as a duplicate.
        let mut everything: BTreeSet<String> = got.iter().cloned().collect();
        everything.extend(listed);
        assert_eq!(everything, strings(all.iter().copied()));
        let s = scores(&body);
        assert!(s.windows(2).all(|w| w[0] >= w[1]), "best first: {s:?}");
        assert_eq!(deduplicated.get_or_insert_with(|| got.clone()), &got, "every spelling of true agrees");
    }
    let deduplicated = deduplicated.unwrap();

    // Pages count collapsed results.
    let (paged, pages) = all_pages(&searcher, &[("q", Q), ("dedup", "true")], 2).await;
    assert_eq!((paged, pages), (deduplicated.clone(), groups.div_ceil(2)));
    // With similar_to, the query image is left out and its copies still collapse.
    let body = ok(&searcher, get(&[("similar_to", "dup/a.jpg"), ("k", ALL), ("dedup", "true")]), "similar_to").await;
    assert_eq!(keys(&body).len(), groups, "{body}");
    let listed = body["results"].to_string();
    assert!(!listed.contains("\"dup/a.jpg\""), "dup/a.jpg is neither a result nor a duplicate: {listed}");
    let first = &results(&body)[0];
    assert!(COPIES.contains(&first["key"].as_str().unwrap()), "a copy is the most similar: {body}");
    assert_eq!(first["duplicates"].as_array().map(Vec::len), Some(2), "{body}");
    // With a prefix that holds one copy only: nothing to collapse.
    let body = ok(&searcher, get(&[("q", Q), ("prefix", "dup/c/"), ("dedup", "true")]), "prefix").await;
    assert_eq!(keys(&body), ["dup/c/a-copy.jpg"]);
    assert!(results(&body)[0].get("duplicates").is_none(), "{body}");
    // POST with a boolean, and v1.
    let body = ok(&searcher, post(json!({"q": Q, "k": 100, "dedup": true})), "POST true").await;
    assert_eq!(keys(&body), deduplicated);
    let body = ok(&searcher, post(json!({"q": Q, "k": 100, "dedup": false})), "POST false").await;
    assert_eq!(keys(&body), keys(&plain));
    let body = ok(&searcher, get_v1(&[("q", Q), ("k", ALL), ("dedup", "1")]), "v1").await;
    assert_eq!(keys(&body), deduplicated);

    for invalid in ["yes", "no", "2", "on", "t", "truee", "-1"] {
        bad(&searcher, get(&[("q", Q), ("dedup", invalid)]), "invalid_dedup", invalid).await;
    }
    for invalid in [json!("yes"), json!(2), json!([true]), json!({"on": true})] {
        bad(&searcher, post(json!({"q": Q, "dedup": invalid})), "invalid_dedup", &invalid.to_string()).await;
    }
}

#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn unknown_parameters_are_refused_and_old_requests_get_the_old_response() {
    let stack = Stack::load();
    let Setup { searcher, _index, .. } = setup(&stack, "t_compat", &MAIN).await;
    for name in ["limit", "Q", "K", "offset", "filter", "prefix ", "similarTo", "callback"] {
        let (status, body, _) = call_json(&searcher, get(&[("q", Q), (name, "5")])).await;
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some("unknown_parameter")), "{name:?}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(&format!("{name:?}")), "the message names {name:?}: {message}");
    }
    bad(&searcher, post(json!({"q": Q, "limit": 5})), "unknown_parameter", "POST").await;
    bad(&searcher, post(json!({"q": Q, "expr": "id != \"\""})), "unknown_parameter", "POST expr").await;
    bad(&searcher, get_v1(&[("q", Q), ("page", "2")]), "unknown_parameter", "v1").await;

    // The committed fixtures send only q and k: the response has exactly the old shape.
    let old_fields: BTreeSet<String> =
        strings(["key", "score", "url", "expires_at", "size", "content_type", "last_modified", "width", "height"]);
    for fixture in ["v2-get-search.json", "v1-get-search.json", "v2-post-search.json", "v1-post-search.json"] {
        let body = ok(&searcher, apigw_request(fixture, |_| {}), fixture).await;
        let top: BTreeSet<String> = body.as_object().unwrap().keys().cloned().collect();
        assert_eq!(top, strings(["query", "results", "next_cursor"]), "{fixture}: {body}");
        assert_eq!(body["query"], "a photo of a cat");
        assert_eq!(results(&body).len(), 3, "{fixture}");
        assert!(body["next_cursor"].is_string(), "{fixture}: 18 indexed, k=3: {body}");
        for r in results(&body) {
            let fields: BTreeSet<String> = r.as_object().unwrap().keys().cloned().collect();
            assert_eq!(fields, old_fields, "{fixture}: {r}");
            assert!(r["last_modified"].is_string() && r["url"].as_str().unwrap().starts_with("http"), "{r}");
        }
    }
}
