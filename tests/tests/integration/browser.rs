//! The web page (`GET /` of the search function) in a real browser: headless Chromium driven through
//! chromedriver (started here, on a free port) over the W3C WebDriver protocol, against the local stack's
//! `cargo lambda watch`.
//! Photos are uploaded to the stack's bucket and indexed through the real S3 → webhook → ingest path; every
//! result list the page renders is compared, key by key and in order, with the search API's answer for the
//! same parameters. Needs `bash scripts/stack up --detach --no-demo` and `apt-get install chromium
//! chromium-driver` (or CHROME_BIN / CHROMEDRIVER pointing at a Chrome and its matching driver).
//!
//! Screenshots go to `target/browser-artifacts/` (`failure.png` when a step fails); `docs/screenshot.png`
//! (the README's) is rewritten only with `UPDATE_SCREENSHOT=1`.

use std::net::TcpListener;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::FutureExt;
use serde_json::{json, Value};
use shared::store::S3Store;
use tests::{fixture_image, put, unique, Stack};

/// Until the search function answers /health (`cargo lambda watch` may be recompiling it after a change).
const HEALTH_WAIT: Duration = Duration::from_secs(15 * 60);
/// Until uploads are indexed.
const INDEX_WAIT: Duration = Duration::from_secs(180);
/// Until the page shows the outcome of a search.
const PAGE_WAIT: Duration = Duration::from_secs(60);
/// Until the thumbnails (presigned SeaweedFS URLs) have loaded.
const IMAGE_WAIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);
/// The Enter key, as WebDriver types it.
const ENTER: &str = "\u{E007}";

const QUERY: &str = "a photo";
const K: &str = "20";

/// The photos of the main scenario: (path under the test's prefix, fixture, content type). Different scenes,
/// so no two have (near-)identical embeddings and the ranking has no ties.
const UPLOADS: [(&str, &str, &str); 6] = [
    ("cat.png", "palette.png", "image/png"),
    ("deck chairs.jpg", "progressive.jpg", "image/jpeg"),
    ("strawberries.webp", "lossless.webp", "image/webp"),
    ("sub/dog.jpg", "baseline.jpg", "image/jpeg"),
    ("sub/espresso.png", "rgb16.png", "image/png"),
    ("sub/chestnuts.webp", "lossy.webp", "image/webp"),
];

/// The README screenshot's photos, under [`DEMO_PREFIX`] (only with `UPDATE_SCREENSHOT=1`).
const DEMO_PREFIX: &str = "photos/2024/";
const DEMO_QUERY: &str = "holiday photos";
const DEMO_UPLOADS: [(&str, &str, &str); 12] = [
    ("dog-in-the-park.jpg", "baseline.jpg", "image/jpeg"),
    ("cat.png", "palette.png", "image/png"),
    ("espresso.png", "rgb16.png", "image/png"),
    ("deck-chairs.jpg", "progressive.jpg", "image/jpeg"),
    ("strawberries.webp", "lossless.webp", "image/webp"),
    ("snare-drum.jpg", "landscape-1024.jpg", "image/jpeg"),
    ("astronaut.png", "rgba.png", "image/png"),
    ("rocket-launch.jpg", "exif-6.jpg", "image/jpeg"),
    ("chestnuts.webp", "lossy.webp", "image/webp"),
    ("cameraman.jpg", "grayscale.jpg", "image/jpeg"),
    ("lab-experiment.jpg", "cmyk.jpg", "image/jpeg"),
    ("deep-field-galaxies.jpg", "wide-2000x300.jpg", "image/jpeg"),
];

#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn the_page_searches_finds_similar_filters_by_folder_and_shows_empty_results_in_chromium() {
    let (chrome, chromedriver) = (browser_binary(), driver_binary());
    let stack = Stack::load();
    let api = Api::new(&stack);
    api.wait_healthy().await;
    let s3 = stack.s3().await;
    let bucket = stack.get("STACK_BUCKET").to_string();
    let update_screenshot = std::env::var("UPDATE_SCREENSHOT").is_ok_and(|v| v == "1");

    let started = Instant::now();
    let prefix = format!("{}/", unique("browser"));
    let mut keys = Vec::new(); // everything uploaded, deleted at the end whatever happens
    let outcome = AssertUnwindSafe(async {
        upload(&s3, &bucket, &prefix, &UPLOADS, &mut keys).await;
        if update_screenshot {
            upload(&s3, &bucket, DEMO_PREFIX, &DEMO_UPLOADS, &mut keys).await;
        }
        api.wait_indexed(&prefix, &UPLOADS).await;
        if update_screenshot {
            api.wait_indexed(DEMO_PREFIX, &DEMO_UPLOADS).await;
        }
        eprintln!("browser test: {} photos indexed in {:.1?}", keys.len(), started.elapsed());
        in_the_browser(&chrome, &chromedriver, &api, &prefix, update_screenshot).await;
    })
    .catch_unwind()
    .await;
    for key in &keys {
        let _ = s3.client().delete_object().bucket(&bucket).key(key).send().await;
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    eprintln!("browser test: passed in {:.1?}", started.elapsed());
}

/// Runs the scenario (and the README screenshot) in a new browser; saves `failure.png` when it fails.
async fn in_the_browser(chrome: &Path, chromedriver: &Path, api: &Api, prefix: &str, update_screenshot: bool) {
    let artifacts = artifacts_dir();
    let _ = std::fs::remove_file(artifacts.join("failure.png")); // from an earlier run
    let page_url = api.page_url();
    let driver = Chromedriver::start(chromedriver, &artifacts).await;
    let browser = driver.session(chrome).await;
    let outcome = AssertUnwindSafe(async {
        scenario(&browser, api, &page_url, prefix, &artifacts).await;
        if update_screenshot {
            readme_screenshot(&browser, api, &page_url).await;
        }
    })
    .catch_unwind()
    .await;
    if outcome.is_err() {
        if let Ok(png) = browser.try_screenshot().await {
            let path = artifacts.join("failure.png");
            if std::fs::write(&path, png).is_ok() {
                eprintln!("browser test: the page at the failure is in {}", path.display());
            }
        }
    }
    let closed = browser.close().await;
    drop(driver);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    closed.expect("the browser session closes");
    eprintln!("browser test: artifacts in {}", artifacts.display());
}

/// The main scenario; `prefix` holds [`UPLOADS`].
async fn scenario(b: &Browser, api: &Api, page_url: &str, prefix: &str, artifacts: &Path) {
    open(b, api, Some(page_url)).await;
    let title = b.title().await;
    assert_eq!(title, "clip-search", "the page title");
    let idle = page_state(b).await;
    assert_eq!(idle["state"], "idle", "a fresh page is idle: {idle}");

    // 1. Text search in a folder, submitted with Enter.
    open_filters(b).await;
    type_into(b, "#prefix", prefix).await;
    choose_k(b, K).await;
    type_into(b, "#q", QUERY).await;
    arm(b).await;
    find(b, "#q").await.send_keys(ENTER).await;
    let status = settle(b, api, "the text search", "done").await;
    let expected = api.search(&[("q", QUERY), ("prefix", prefix), ("k", K)]).await;
    let shown = assert_cards_match(b, &expected, "the text search").await;
    let mut want: Vec<String> = UPLOADS.iter().map(|(name, ..)| format!("{prefix}{name}")).collect();
    want.sort();
    let mut got = shown.clone();
    got.sort();
    assert_eq!(got, want, "the text search shows exactly the uploaded photos");
    assert!(status.contains(&format!("{} images", UPLOADS.len())), "status after the text search: {status:?}");
    assert_pager(b, "the text search").await;
    assert!(!displayed(b, "#similar-banner").await, "no similar banner in a text search");
    assert_images_loaded(b, "the text search").await;
    screenshot(b, &artifacts.join("search.png")).await;

    // 2. "More like this" on the first card.
    let first = shown[0].clone();
    let button = find(b, "#results > article.result").await.find("button.more-like-this").await;
    arm(b).await;
    button.click().await;
    let status = settle(b, api, "more like this", "done").await;
    assert!(displayed(b, "#similar-banner").await, "#similar-banner is shown in a similar search");
    let banner_key = find(b, "#similar-key").await.text().await;
    assert_eq!(banner_key, first, "#similar-key names the clicked photo");
    let expected = api.search(&[("similar_to", first.as_str()), ("prefix", prefix), ("k", K)]).await;
    let similar = assert_cards_match(b, &expected, "more like this").await;
    assert!(!similar.contains(&first), "the clicked photo {first:?} is not among its similar ones: {similar:?}");
    assert_eq!(similar.len(), UPLOADS.len() - 1, "every other photo in the folder is similar to some degree");
    assert!(status.contains(&first), "status after more like this: {status:?}");
    assert_pager(b, "more like this").await;
    assert_images_loaded(b, "more like this").await;
    screenshot(b, &artifacts.join("similar.png")).await;

    // 3. Back to the text search.
    arm(b).await;
    find(b, "#back-to-text").await.click().await;
    settle(b, api, "back to the text search", "done").await;
    assert!(!displayed(b, "#similar-banner").await, "#similar-banner is hidden after going back to text search");
    let back = assert_cards_match(b, &api.search(&[("q", QUERY), ("prefix", prefix), ("k", K)]).await, "back").await;
    assert_eq!(back, shown, "going back shows the first text search again");

    // 4. A sub-folder, submitted with the button.
    let sub = format!("{prefix}sub/");
    type_into(b, "#prefix", &sub).await;
    arm(b).await;
    find(b, "#search-button").await.click().await;
    settle(b, api, "the sub-folder search", "done").await;
    let expected = api.search(&[("q", QUERY), ("prefix", sub.as_str()), ("k", K)]).await;
    let in_sub = assert_cards_match(b, &expected, "the sub-folder search").await;
    let want_sub = UPLOADS.iter().filter(|(name, ..)| name.starts_with("sub/")).count();
    assert_eq!(in_sub.len(), want_sub, "the sub-folder search shows the sub-folder's photos: {in_sub:?}");
    assert!(in_sub.iter().all(|k| k.starts_with(&sub)), "only keys under {sub:?}: {in_sub:?}");
    assert_images_loaded(b, "the sub-folder search").await;
    screenshot(b, &artifacts.join("subfolder.png")).await;

    // 5. The search is in the page URL: a reload runs it again.
    let url = b.execute("return location.search;", vec![]).await;
    let params: Vec<(String, String)> = b
        .execute("return [...new URLSearchParams(location.search)];", vec![])
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|kv| (kv[0].as_str().unwrap().to_string(), kv[1].as_str().unwrap().to_string()))
        .collect();
    assert!(params.contains(&("prefix".into(), sub.clone())), "the page URL holds the search: {url}");
    open(b, api, None).await;
    settle_after_load(b, api, "the reloaded sub-folder search", "done").await;
    let reloaded = assert_cards_match(b, &expected, "the reloaded page").await;
    assert_eq!(reloaded, in_sub, "a reload shows the same results");

    // 6. A folder with nothing in it.
    open_filters(b).await;
    type_into(b, "#prefix", &format!("{prefix}nothing-here/")).await;
    arm(b).await;
    find(b, "#q").await.send_keys(ENTER).await;
    let status = settle(b, api, "the empty search", "empty").await;
    assert!(card_keys(b).await.is_empty(), "no cards for an empty result");
    assert!(status.contains("No images"), "#status says there are no images: {status:?}");
    screenshot(b, &artifacts.join("empty.png")).await;

    // 7. A phone-sized window, where the filters panel starts closed.
    b.set_window_size(390, 844).await;
    open(b, api, Some(page_url)).await;
    let closed = open_filters(b).await;
    eprintln!("browser test: at 390 px the filters panel was {}", if closed { "closed" } else { "open" });
    type_into(b, "#prefix", prefix).await;
    choose_k(b, K).await;
    type_into(b, "#q", QUERY).await;
    arm(b).await;
    find(b, "#search-button").await.click().await;
    settle(b, api, "the phone-sized text search", "done").await;
    let phone = assert_cards_match(b, &api.search(&[("q", QUERY), ("prefix", prefix), ("k", K)]).await, "phone").await;
    assert_eq!(phone, shown, "a phone-sized window shows the same results");
    screenshot(b, &artifacts.join("phone.png")).await;
    b.set_window_size(1280, 900).await;
}

/// The README's screenshot: a desktop window searching [`DEMO_PREFIX`].
async fn readme_screenshot(b: &Browser, api: &Api, page_url: &str) {
    // Tall enough for the two rows of results and the pager, without a scroll bar.
    b.set_window_size(1280, 1080).await;
    open(b, api, Some(page_url)).await;
    open_filters(b).await;
    type_into(b, "#prefix", DEMO_PREFIX).await;
    choose_k(b, K).await;
    type_into(b, "#q", DEMO_QUERY).await;
    arm(b).await;
    find(b, "#q").await.send_keys(ENTER).await;
    settle(b, api, "the README search", "done").await;
    let expected = api.search(&[("q", DEMO_QUERY), ("prefix", DEMO_PREFIX), ("k", K)]).await;
    let shown = assert_cards_match(b, &expected, "the README search").await;
    assert_eq!(shown.len(), DEMO_UPLOADS.len(), "the README search shows every demo photo: {shown:?}");
    assert_images_loaded(b, "the README search").await;
    // Focus off the input (no focus ring, no caret) and back to the top for the picture.
    b.execute("document.activeElement.blur(); window.scrollTo(0, 0);", vec![]).await;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshot.png");
    screenshot(b, &path).await;
}

// ---------------------------------------------------------------------------------------------------------
// The page.

async fn find<'b>(b: &'b Browser, css: &str) -> Element<'b> {
    b.find(css).await
}

async fn displayed(b: &Browser, css: &str) -> bool {
    find(b, css).await.is_displayed().await
}

/// Replaces the text of an input as a user would: select all, type.
async fn type_into(b: &Browser, css: &str, text: &str) {
    let input = find(b, css).await;
    assert!(input.is_displayed().await, "{css} is visible");
    input.clear().await;
    input.send_keys(text).await;
    let value = input.prop("value").await;
    assert_eq!(value.as_deref(), Some(text), "{css} holds what was typed");
}

/// Opens the filters panel (a `<details>`, closed on narrow screens) by clicking its summary; returns whether
/// it was closed.
async fn open_filters(b: &Browser) -> bool {
    let details = find(b, "#filters").await;
    let closed = details.attr("open").await.is_none();
    if closed {
        details.find("summary").await.click().await;
    }
    assert!(details.attr("open").await.is_some(), "the filters panel opens");
    closed
}

/// Chooses `k` in select#k (clicking its option, as a user would).
async fn choose_k(b: &Browser, k: &str) {
    let select = find(b, "#k").await;
    let mut offered = Vec::new();
    for option in select.find_all("option").await {
        let value = option.prop("value").await.unwrap_or_default();
        if value == k {
            option.click().await;
        }
        offered.push(value);
    }
    assert!(offered.iter().any(|v| v == k), "select#k offers {k}: {offered:?}");
    assert_eq!(select.prop("value").await.as_deref(), Some(k), "select#k is {k}");
}

/// `{state, status, seen}`: #results' data-state, #status' text and the data-states seen since [`arm`].
async fn page_state(b: &Browser) -> Value {
    b.execute(
        "const r = document.getElementById('results'), s = document.getElementById('status');
         return { state: r ? r.dataset.state : null, status: s ? s.textContent : null, seen: window.__seen || null,
                  cards: document.querySelectorAll('#results > article.result').length };",
        vec![],
    )
    .await
}

/// Starts recording #results' data-state changes, so that [`settle`] waits for the next search rather than
/// reading the previous one's `done`.
async fn arm(b: &Browser) {
    b.execute(
        "window.__seen = [];
         if (!window.__observer) {
           const r = document.getElementById('results');
           window.__observer = new MutationObserver(() => window.__seen.push(r.dataset.state));
           window.__observer.observe(r, { attributes: true, attributeFilter: ['data-state'] });
         }",
        vec![],
    )
    .await;
}

/// Waits until the search started after [`arm`] has gone through `loading` and ended; asserts it ended in
/// `want`. Returns #status' text.
async fn settle(b: &Browser, api: &Api, what: &str, want: &str) -> String {
    let s = wait_ended(b, api, what, true).await;
    let seen = s["seen"].as_array().cloned().unwrap_or_default();
    assert!(seen.iter().any(|x| x == "loading"), "{what}: #results never showed data-state=loading: {s}");
    retry_transient(b, api, what, want, s).await
}

/// Waits until a freshly loaded page has run the search in its URL; asserts it ended in `want`.
async fn settle_after_load(b: &Browser, api: &Api, what: &str, want: &str) -> String {
    let s = wait_ended(b, api, what, false).await;
    retry_transient(b, api, what, want, s).await
}

/// Polls until #results' data-state is `done`, `empty` or `error` (after an [`arm`] when `armed`). Allows
/// [`PAGE_WAIT`], once more after waiting for the function when it is away (a request to a function being
/// rebuilt by `cargo lambda watch` waits for the build).
async fn wait_ended(b: &Browser, api: &Api, what: &str, armed: bool) -> Value {
    let mut start = Instant::now();
    let mut waited = false;
    loop {
        let s = page_state(b).await;
        let state = s["state"].as_str().unwrap_or("");
        let fresh = !armed || s["seen"].as_array().is_some_and(|seen| !seen.is_empty());
        if fresh && ["done", "empty", "error"].contains(&state) {
            return s;
        }
        if start.elapsed() > PAGE_WAIT && !waited {
            eprintln!("browser test: {what}: no outcome after {PAGE_WAIT:?} ({s}); checking the function's health");
            api.wait_healthy().await;
            (start, waited) = (Instant::now(), true);
        }
        assert!(start.elapsed() < PAGE_WAIT, "{what}: no search outcome after {PAGE_WAIT:?}; the page shows {s}");
        tokio::time::sleep(POLL).await;
    }
}

/// Asserts the search ended in `want`, first retrying (by reloading: the page URL holds the search) when it
/// failed because the function was away: `cargo lambda watch` restarts it whenever shared/ changes.
async fn retry_transient(b: &Browser, api: &Api, what: &str, want: &str, mut s: Value) -> String {
    for _ in 0..3 {
        let status = s["status"].as_str().unwrap_or("");
        let away = status.contains("HTTP 5") || status.contains("could not reach");
        if s["state"] != "error" || want == "error" || !away {
            break;
        }
        eprintln!("browser test: {what}: {status:?}; waiting for the function, then reloading");
        api.wait_healthy().await;
        open(b, api, None).await;
        s = wait_ended(b, api, what, false).await;
    }
    let state = s["state"].as_str().unwrap_or("");
    assert_eq!(state, want, "{what}: #results ended in data-state={state:?}, not {want:?}: {s}");
    s["status"].as_str().unwrap_or("").to_string()
}

/// Opens `url` (reloads the page when `None`), waiting for the function and retrying when what loads is not
/// the page (an error from the emulator while `cargo lambda watch` restarts the function).
async fn open(b: &Browser, api: &Api, url: Option<&str>) {
    for attempt in 1.. {
        let navigated = match url {
            Some(url) => b.try_command(reqwest::Method::POST, "/url", Some(json!({ "url": url }))).await,
            None => b.try_command(reqwest::Method::POST, "/refresh", Some(json!({}))).await,
        };
        let body = match navigated {
            Ok(_) => {
                let loaded = b.execute("return document.getElementById('results') !== null;", vec![]).await;
                if loaded == true {
                    return;
                }
                b.execute("return document.body ? document.body.innerText.slice(0, 500) : '';", vec![]).await
            }
            Err(e) => Value::String(e), // a page load timeout, say
        };
        assert!(attempt < 4, "the page does not load ({url:?}); the browser shows {body}");
        eprintln!("browser test: the page did not load ({body}); waiting for the function, then retrying");
        api.wait_healthy().await;
    }
}

/// (key, score) of each card, in order.
async fn cards(b: &Browser) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for card in b.find_all("#results > article.result").await {
        let key = card.attr("data-key").await.expect("a card without data-key");
        let score = card.attr("data-score").await.unwrap_or_else(|| panic!("card {key:?} without data-score"));
        out.push((key, score));
    }
    out
}

async fn card_keys(b: &Browser) -> Vec<String> {
    cards(b).await.into_iter().map(|(key, _)| key).collect()
}

/// Asserts the cards on the page are the API's results: same keys in the same order, same scores.
async fn assert_cards_match(b: &Browser, expected: &[Value], what: &str) -> Vec<String> {
    let shown = cards(b).await;
    let keys: Vec<String> = shown.iter().map(|(key, _)| key.clone()).collect();
    let want: Vec<&str> = expected.iter().map(|r| r["key"].as_str().unwrap()).collect();
    assert_eq!(keys, want, "{what}: the page's cards (left) are the API's results (right), in order");
    for ((key, score), result) in shown.iter().zip(expected) {
        let score: f64 = score.parse().unwrap_or_else(|_| panic!("{what}: card {key:?} has data-score {score:?}"));
        let api_score = result["score"].as_f64().unwrap();
        assert!((score - api_score).abs() < 1e-6, "{what}: card {key:?} score {score} but the API says {api_score}");
    }
    keys
}

/// One result page with no next page: "Page 1", neither Previous nor Next offered.
async fn assert_pager(b: &Browser, what: &str) {
    assert!(displayed(b, "#pager").await, "{what}: #pager is shown");
    assert_eq!(find(b, "#page-number").await.text().await, "Page 1", "{what}: #page-number");
    assert!(!displayed(b, "#prev-page").await, "{what}: no #prev-page on page 1");
    assert!(!displayed(b, "#next-page").await, "{what}: no #next-page when everything fits on one page");
}

/// Scrolls each card into view (the thumbnails load lazily) and waits until its image has loaded.
async fn assert_images_loaded(b: &Browser, what: &str) {
    let n = b.find_all("#results > article.result").await.len();
    assert!(n > 0, "{what}: no cards");
    for i in 0..n {
        let start = Instant::now();
        loop {
            let img = b
                .execute(
                    "const a = document.querySelectorAll('#results > article.result')[arguments[0]];
                     const img = a.querySelector('img');
                     if (!img) return { missing: true, key: a.dataset.key };
                     img.scrollIntoView({ block: 'nearest' });
                     return { key: a.dataset.key, src: img.currentSrc || img.src, complete: img.complete,
                              width: img.naturalWidth };",
                    vec![json!(i)],
                )
                .await;
            assert!(img.get("missing").is_none(), "{what}: card {i} has no <img>: {img}");
            if img["complete"] == true && img["width"].as_u64().unwrap_or(0) > 0 {
                break;
            }
            assert!(
                !(img["complete"] == true && start.elapsed() > Duration::from_secs(5)),
                "{what}: the thumbnail of card {i} failed to load (naturalWidth 0): {img}"
            );
            assert!(
                start.elapsed() < IMAGE_WAIT,
                "{what}: the thumbnail of card {i} not loaded after {IMAGE_WAIT:?}: {img}"
            );
            tokio::time::sleep(POLL).await;
        }
    }
    b.execute("window.scrollTo(0, 0);", vec![]).await;
}

async fn screenshot(b: &Browser, path: &Path) {
    let png = b.screenshot().await;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    eprintln!("browser test: screenshot {}", path.display());
}

// ---------------------------------------------------------------------------------------------------------
// The stack.

struct Api {
    client: reqwest::Client,
    search_url: String,
    health_url: String,
}

impl Api {
    fn new(stack: &Stack) -> Api {
        Api {
            client: reqwest::Client::new(),
            search_url: stack.get("SEARCH_URL").to_string(),
            health_url: stack.get("HEALTH_URL").to_string(),
        }
    }

    /// The page is GET / of the API: SEARCH_URL without its trailing `search`.
    fn page_url(&self) -> String {
        let base = self.search_url.strip_suffix("search").unwrap_or_else(|| panic!("SEARCH_URL {}", self.search_url));
        assert!(base.ends_with('/'), "SEARCH_URL {} does not end in /search", self.search_url);
        base.to_string()
    }

    async fn wait_healthy(&self) {
        let start = Instant::now();
        loop {
            let seen = match self.client.get(&self.health_url).timeout(Duration::from_secs(120)).send().await {
                Ok(r) if r.status() == 200 => return,
                Ok(r) => format!("HTTP {}: {}", r.status(), r.text().await.unwrap_or_default()),
                Err(e) => e.to_string(),
            };
            assert!(
                start.elapsed() < HEALTH_WAIT,
                "the search function is not healthy after {HEALTH_WAIT:?} ({}: {seen}); see .local/logs/",
                self.health_url
            );
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    /// The results of GET /search with `params`.
    /// The results of GET /search with `params`, waiting for the function and retrying when it is away (a
    /// 5xx or no answer while `cargo lambda watch` restarts it).
    async fn search(&self, params: &[(&str, &str)]) -> Vec<Value> {
        for attempt in 1.. {
            let seen = match self.client.get(&self.search_url).query(params).send().await {
                Ok(response) if !response.status().is_server_error() => {
                    let status = response.status();
                    let body: Value = response.json().await.expect("a JSON answer");
                    assert_eq!(status, 200, "GET /search {params:?}: {body}");
                    return body["results"].as_array().unwrap_or_else(|| panic!("no results in {body}")).clone();
                }
                Ok(response) => format!("HTTP {}: {}", response.status(), response.text().await.unwrap_or_default()),
                Err(e) => e.to_string(),
            };
            assert!(attempt < 4, "GET /search {params:?}: {seen}");
            eprintln!("browser test: GET /search {params:?}: {seen}; waiting for the function, then retrying");
            self.wait_healthy().await;
        }
        unreachable!()
    }

    /// Polls until a k=100 search in `prefix` returns exactly `uploads`, failing loudly after [`INDEX_WAIT`].
    async fn wait_indexed(&self, prefix: &str, uploads: &[(&str, &str, &str)]) {
        let mut want: Vec<String> = uploads.iter().map(|(name, ..)| format!("{prefix}{name}")).collect();
        want.sort();
        let start = Instant::now();
        loop {
            let results = self.search(&[("q", QUERY), ("prefix", prefix), ("k", "100")]).await;
            let mut got: Vec<String> = results.iter().map(|r| r["key"].as_str().unwrap().to_string()).collect();
            got.sort();
            if got == want {
                return;
            }
            assert!(
                start.elapsed() < INDEX_WAIT,
                "uploads under {prefix:?} not all indexed after {INDEX_WAIT:?}: want {want:?}, the API returns {got:?}; \
                 see .local/logs/"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Puts each upload at `prefix` + its name, adding its key to `keys`.
async fn upload(s3: &S3Store, bucket: &str, prefix: &str, uploads: &[(&str, &str, &str)], keys: &mut Vec<String>) {
    for (name, file, content_type) in uploads {
        let key = format!("{prefix}{name}");
        put(s3, bucket, &key, fixture_image(file), content_type).await;
        keys.push(key);
    }
}

// ---------------------------------------------------------------------------------------------------------
// The browser.

const INSTALL: &str = "install Chromium and its driver (Debian: `sudo apt-get install chromium chromium-driver`; \
                       Ubuntu: `sudo apt-get install chromium-browser chromium-chromedriver`), or point CHROME_BIN \
                       and CHROMEDRIVER at a Chrome and the chromedriver of the same version";

fn browser_binary() -> PathBuf {
    binary("CHROME_BIN", "/usr/bin/chromium", "Chromium")
}

fn driver_binary() -> PathBuf {
    binary("CHROMEDRIVER", "/usr/bin/chromedriver", "chromedriver")
}

/// `$var`, else `default`; fails (never skips) when it is not there.
fn binary(var: &str, default: &str, what: &str) -> PathBuf {
    let path = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(default));
    assert!(path.is_file(), "{what} not found at {} (from {var} or the default {default}): {INSTALL}", path.display());
    path
}

/// `target/browser-artifacts/` (under CARGO_TARGET_DIR when it is set).
fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("browser-artifacts");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// A chromedriver child process on a free port, killed on drop.
struct Chromedriver {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Chromedriver {
    async fn start(binary: &Path, artifacts: &Path) -> Chromedriver {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let log = artifacts.join("chromedriver.log");
        let child = Command::new(binary)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}; {INSTALL}", binary.display()));
        let mut driver = Chromedriver { child, url: format!("http://127.0.0.1:{port}"), log };
        let http = reqwest::Client::new();
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = driver.child.try_wait() {
                panic!("{} exited at start ({status}); see {}", binary.display(), driver.log.display());
            }
            let ready = http.get(format!("{}/status", driver.url)).timeout(Duration::from_secs(2)).send().await;
            if let Ok(response) = ready {
                let body: Value = response.json().await.unwrap_or_default();
                if body["value"]["ready"] == true {
                    return driver;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{} not ready on {} after 30 s; see {}",
                binary.display(),
                driver.url,
                driver.log.display()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// A new headless Chromium session.
    async fn session(&self, chrome: &Path) -> Browser {
        let capabilities = json!({
            "browserName": "chrome",
            "timeouts": { "pageLoad": 120_000, "script": 30_000 },
            "goog:chromeOptions": {
                "binary": chrome,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,900"],
            },
        });
        // Longer than the page load timeout below, so that chromedriver's timeout error is what we see.
        let http = reqwest::Client::builder().timeout(Duration::from_secs(300)).build().unwrap();
        let response = http
            .post(format!("{}/session", self.url))
            .json(&json!({ "capabilities": { "alwaysMatch": capabilities } }))
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!("chromedriver at {} does not answer: {e}; see {}", self.url, self.log.display())
            });
        let body: Value = response.json().await.unwrap_or_default();
        let id = body["value"]["sessionId"].as_str().unwrap_or_else(|| {
            panic!("no browser session with {}: {body}; see {}; {INSTALL}", chrome.display(), self.log.display())
        });
        Browser { http, session: format!("{}/session/{id}", self.url) }
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The W3C WebDriver commands this test needs, over plain HTTP to the local chromedriver.
///
/// (Not fantoccini: its only TLS flavour here, `rustls-tls`, panics in this workspace when building its
/// connector because both of rustls' crypto providers, ring and aws-lc-rs, are enabled by other dependencies.)
struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:PORT/session/ID`
    session: String,
}

/// A web element of a [`Browser`] page.
struct Element<'b> {
    browser: &'b Browser,
    id: String,
}

/// The key of an element reference in WebDriver JSON.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    /// Runs a command; `Err` carries the WebDriver error.
    async fn try_command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.session);
        let mut request = self.http.request(method.clone(), &url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| format!("{method} {path}: {e}"))?;
        let status = response.status();
        let body: Value = response.json().await.map_err(|e| format!("{method} {path}: HTTP {status}, {e}"))?;
        if status.is_success() {
            Ok(body["value"].clone())
        } else {
            let value = &body["value"];
            Err(format!("{method} {path}: HTTP {status} {}: {}", value["error"], value["message"]))
        }
    }

    /// Runs a command; panics with the WebDriver error.
    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.try_command(method, path, body).await.unwrap_or_else(|e| panic!("WebDriver: {e}"))
    }

    async fn get(&self, path: &str) -> Value {
        self.command(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.command(reqwest::Method::POST, path, Some(body)).await
    }

    async fn title(&self) -> String {
        self.get("/title").await.as_str().unwrap_or_default().to_string()
    }

    /// Resizes the window, then waits for a frame at the new size: headless Chromium 156 otherwise hangs on the
    /// next navigation after a screenshot and a resize ("Timed out receiving message from renderer").
    async fn set_window_size(&self, width: u32, height: u32) {
        self.post("/window/rect", json!({ "width": width, "height": height })).await;
        let frame = "const done = arguments[0]; requestAnimationFrame(() => requestAnimationFrame(() => done(true)));";
        self.post("/execute/async", json!({ "script": frame, "args": [] })).await;
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) in the page and returns its result.
    async fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.post("/execute/sync", json!({ "script": script, "args": args })).await
    }

    async fn try_screenshot(&self) -> Result<Vec<u8>, String> {
        let value = self.try_command(reqwest::Method::GET, "/screenshot", None).await?;
        base64_decode(value.as_str().ok_or("a screenshot that is not a string")?)
    }

    /// A PNG of the viewport.
    async fn screenshot(&self) -> Vec<u8> {
        self.try_screenshot().await.unwrap_or_else(|e| panic!("WebDriver: {e}"))
    }

    async fn find(&self, css: &str) -> Element<'_> {
        let value = self.post("/element", json!({ "using": "css selector", "value": css })).await;
        self.element(&value)
    }

    async fn find_all(&self, css: &str) -> Vec<Element<'_>> {
        let value = self.post("/elements", json!({ "using": "css selector", "value": css })).await;
        value.as_array().unwrap().iter().map(|v| self.element(v)).collect()
    }

    fn element(&self, value: &Value) -> Element<'_> {
        let id = value[ELEMENT].as_str().unwrap_or_else(|| panic!("not an element reference: {value}"));
        Element { browser: self, id: id.to_string() }
    }

    /// Ends the session (and so the browser).
    async fn close(&self) -> Result<(), String> {
        self.try_command(reqwest::Method::DELETE, "", None).await.map(|_| ())
    }
}

impl<'b> Element<'b> {
    fn path(&self, tail: &str) -> String {
        format!("/element/{}{tail}", self.id)
    }

    async fn find(&self, css: &str) -> Element<'b> {
        let value = self.browser.post(&self.path("/element"), json!({ "using": "css selector", "value": css })).await;
        self.browser.element(&value)
    }

    async fn find_all(&self, css: &str) -> Vec<Element<'b>> {
        let value = self.browser.post(&self.path("/elements"), json!({ "using": "css selector", "value": css })).await;
        value.as_array().unwrap().iter().map(|v| self.browser.element(v)).collect()
    }

    async fn click(&self) {
        self.browser.post(&self.path("/click"), json!({})).await;
    }

    async fn clear(&self) {
        self.browser.post(&self.path("/clear"), json!({})).await;
    }

    async fn send_keys(&self, text: &str) {
        self.browser.post(&self.path("/value"), json!({ "text": text })).await;
    }

    async fn attr(&self, name: &str) -> Option<String> {
        self.browser.get(&self.path(&format!("/attribute/{name}"))).await.as_str().map(str::to_string)
    }

    async fn prop(&self, name: &str) -> Option<String> {
        let value = self.browser.get(&self.path(&format!("/property/{name}"))).await;
        match value {
            Value::Null => None,
            Value::String(s) => Some(s),
            other => Some(other.to_string()),
        }
    }

    async fn text(&self) -> String {
        self.browser.get(&self.path("/text")).await.as_str().unwrap_or_default().to_string()
    }

    async fn is_displayed(&self) -> bool {
        self.browser.get(&self.path("/displayed")).await.as_bool().unwrap_or(false)
    }
}

/// Standard base64 (WebDriver's screenshots).
fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return Err(format!("not base64: {:?}", c as char)),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}
