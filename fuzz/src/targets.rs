//! What each fuzz target does with its input. `cargo fuzz run NAME` calls these through
//! `fuzz_targets/NAME.rs`; the stable test `fuzz_regressions` replays every file under
//! `fuzz/regressions/NAME/` through the same function. Each asserts what must hold for any
//! input, so a wrong answer is a finding too, not only a panic.

use std::time::Duration;

use shared::domain::ingest::ObjectChange;
use shared::embedder::bundle::{Interpolation, PreprocessConfig, ResizeMode};
use shared::embedder::decode::{
    decode_rgb_reduced, exif_orientation, peak_bytes, peak_bytes_of, sniff_format, DecodeLimits,
};
use shared::embedder::preprocess::Preprocessor;
use shared::events::{changes_from_event, decode_s3_key, S3Event};
use shared::http::{parse_search_request, CursorKey, SearchInput};

/// A small pixel cap keeps each run fast and lets the fuzzer reach the cap's edges.
pub const FUZZ_MAX_PIXELS: u64 = 4_000_000;

/// Decode and preprocess: any bytes give an error or an image within the cap, fitted to the
/// model size in each resize mode; no panic, no allocation beyond the cap's bound.
pub fn decode_image(data: &[u8]) {
    let limits = DecodeLimits { max_pixels: FUZZ_MAX_PIXELS, deadline: Duration::from_secs(5) };
    // The first byte picks the reduced-decode minimum, so DCT scaling is fuzzed as well.
    let (min_side, bytes) = match data.split_first() {
        Some((&b, rest)) if b & 1 == 1 => (Some(u32::from(b)), rest),
        Some((_, rest)) => (None, rest),
        None => (None, data),
    };
    // The estimate the decode budget reserves reads the header too (another parser for JPEG).
    let reserved = peak_bytes_of(bytes, FUZZ_MAX_PIXELS);
    assert!(reserved <= peak_bytes(FUZZ_MAX_PIXELS, bytes.len()), "the reservation passes the cap's bound");
    let Ok(decoded) = decode_rgb_reduced(bytes, &limits, min_side) else { return };
    let (w, h) = decoded.rgb.dimensions();
    assert!(w > 0 && h > 0, "decoded an empty image");
    assert!(u64::from(w) * u64::from(h) <= FUZZ_MAX_PIXELS, "decoded {w}x{h}, over the cap");
    for resize_mode in [ResizeMode::Shortest, ResizeMode::Squash, ResizeMode::Longest] {
        let preprocessor = Preprocessor::new(PreprocessConfig {
            height: 32,
            width: 32,
            mean: [0.5; 3],
            std: [0.5; 3],
            interpolation: Interpolation::Bicubic,
            resize_mode,
            fill_color: 0,
        });
        if let Ok(fitted) = preprocessor.fit(&decoded.rgb) {
            assert_eq!(fitted.dimensions(), (32, 32), "{resize_mode:?} gave the wrong size");
        }
    }
}

/// Format sniffing and the EXIF reader: never panic on any bytes.
pub fn sniff_exif(data: &[u8]) {
    let _ = sniff_format(data);
    let _ = exif_orientation(data);
}

/// The search API's parameter parsing (query string or JSON body, cursor included): any input
/// is a request or a 400 with a code and a message; a valid request stays within its bounds.
pub fn search_request(data: &[u8]) {
    let input = match data.split_first() {
        Some((b, rest)) if b & 1 == 0 => SearchInput::Query(std::str::from_utf8(rest).ok()),
        Some((_, rest)) => SearchInput::JsonBody(rest),
        None => SearchInput::Query(None),
    };
    // A fixed key: a fuzzed cursor must be refused unless the fuzzer forges a signature, which it cannot.
    let cursors = CursorKey::from_secret("the fuzz target's cursor signing key");
    match parse_search_request(input, &cursors, None) {
        Ok(request) => {
            assert_eq!(request.offset, 0, "only a signed cursor moves the offset");
            assert!((1..=100).contains(&request.k), "k = {} out of bounds", request.k);
            assert!(request.offset < shared::index::MAX_RESULT_WINDOW, "offset {} past the window", request.offset);
        }
        Err(e) => {
            assert_eq!(e.status.as_u16(), 400, "a bad request must be a 400: {e:?}");
            assert!(!e.code.is_empty() && !e.message.is_empty(), "an error must say what is wrong");
        }
    }
}

/// S3 events and their keys: any JSON an event source could send gives changes whose keys
/// are decoded, never a panic.
pub fn s3_event(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = decode_s3_key(text);
    }
    let Ok(event) = serde_json::from_slice::<S3Event>(data) else { return };
    let changes = changes_from_event(&event);
    assert!(changes.len() <= event.records.len(), "more changes than records");
}

/// The local bridge: a webhook payload becomes an S3 event that ingest parses back to the same
/// change (the key survives S3's encoding and ingest's decoding).
pub fn webhook(data: &[u8]) {
    let Ok(payload) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let Some(change) = bridge::change_from_webhook(&payload) else { return };
    let event = bridge::s3_event(&change, "us-east-1");
    let event: S3Event = serde_json::from_value(event).expect("the bridge's event parses as an S3 event");
    let (bucket, key) = match &change {
        bridge::Change::Created { bucket, key, .. } | bridge::Change::Removed { bucket, key, .. } => (bucket, key),
    };
    match changes_from_event(&event).as_slice() {
        [ObjectChange::Created { bucket: b, key: k, .. }] | [ObjectChange::Removed { bucket: b, key: k, .. }] => {
            assert_eq!((b, k), (bucket, key), "the key changed on its way through the bridge");
        }
        other => panic!("one webhook must give one change, got {other:?}"),
    }
}
