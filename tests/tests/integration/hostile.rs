//! Hostile uploads (issue 11): each costs only itself. Every file of `tests::hostile` is embedded
//! or skipped with its reason, alone and in a batch or event with good images; the worst images
//! the pixel cap allows decode within the documented memory bound; a slow decode stops at its
//! deadline.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use shared::embedder::decode::{decode_rgb, peak_bytes, DecodeLimits};
use shared::embedder::{ImageEmbedder, ImageError};
use tests::hostile::{self, Hostile};
use tests::{fixture_image, image_encoder, ingest, ingestor, put, Sandbox};

const DEFAULT_CAP: u64 = shared::config::DEFAULT_MAX_IMAGE_PIXELS;

fn limits(max_pixels: u64) -> DecodeLimits {
    DecodeLimits { max_pixels, deadline: shared::config::DEFAULT_DECODE_DEADLINE }
}

#[test]
fn each_hostile_image_is_embedded_or_skipped_with_its_reason() {
    for file in hostile::all(false) {
        file.check(hostile::prepare(&file.bytes, &limits(DEFAULT_CAP)));
    }
}

#[test]
#[ignore = "needs ONNX Runtime: bash scripts/test (or scripts/install-onnxruntime)"]
fn one_batch_of_hostile_and_good_images_loses_only_the_hostile_ones() {
    let files = hostile::all(false);
    let good = [fixture_image("baseline.jpg"), fixture_image("rgba.png")];
    let mut batch: Vec<&[u8]> = good.iter().map(Vec::as_slice).collect();
    batch.extend(files.iter().map(|f| f.bytes.as_slice()));
    let results = image_encoder().embed_images(&batch).expect("the batch runs");
    assert_eq!(results.len(), batch.len());
    assert!(results[..2].iter().all(Result::is_ok), "the good images are embedded: {:?}", &results[..2]);
    for (file, result) in files.iter().zip(&results[2..]) {
        file.check(result.as_ref().map(|e| (e.width, e.height)).map_err(ImageError::to_string));
    }
}

/// Runs `decode-within` on `bytes` under an address-space limit of the process's own baseline
/// plus the documented bound for `max_pixels`, and returns its JSON report.
fn decode_under_the_bound(name: &str, bytes: &[u8], max_pixels: u64, baseline: u64) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    let limit = baseline + peak_bytes(max_pixels, bytes.len());
    let output = Command::new("prlimit")
        .arg(format!("--as={limit}"))
        .arg(env!("CARGO_BIN_EXE_decode-within"))
        .arg(&path)
        .arg(max_pixels.to_string())
        .output()
        .expect("prlimit (util-linux) runs");
    assert!(
        output.status.success(),
        "{name}: decoding died under an address-space limit of {} MiB ({}): {}",
        limit >> 20,
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("decode-within prints JSON")
}

#[test]
fn the_worst_allowed_images_decode_within_the_documented_memory_bound() {
    // The process's own address space before any image: the binary, its libraries and stack.
    let tiny = hostile::png_grey(8, 8);
    let baseline = decode_under_the_bound("tiny.png", &tiny, 64, 256 << 20)["vm_peak_bytes"].as_u64().unwrap();

    let cases: Vec<(&str, Vec<u8>, u64)> = vec![
        // libjpeg's worst: every coefficient of four components kept, at the default cap.
        ("cmyk-progressive-100MP.jpg", hostile::cmyk_progressive_100mp().to_vec(), DEFAULT_CAP),
        // image's worst: RGBA 16-bit, 8 bytes a pixel, at a 16 MP cap (the bound is per pixel of the cap).
        ("rgba16-16MP.png", hostile::png_rgba16(4_000, 4_000), 16_000_000),
        // The longest strip the resize can take, at the default cap.
        ("strip-1x10M.png", hostile::png_grey(1, 10_000_000), DEFAULT_CAP),
    ];
    for (name, bytes, cap) in cases {
        let report = decode_under_the_bound(name, &bytes, cap, baseline);
        assert!(report["result"]["embedded"].is_array(), "{name}: {report}");
        let used = report["vm_peak_bytes"].as_u64().unwrap() - baseline;
        let bound = peak_bytes(cap, bytes.len());
        println!("{name}: {} MiB of address space over the baseline; the bound is {} MiB", used >> 20, bound >> 20);
    }
    // The hostile files, each at the default cap.
    for file in hostile::all(false) {
        let report = decode_under_the_bound(file.name, &file.bytes, DEFAULT_CAP, baseline);
        let result = &report["result"];
        file.check(match result["skipped"].as_str() {
            Some(reason) => Err(reason.to_string()),
            None => Ok((0, 0)),
        });
    }
}

#[test]
fn a_slow_decode_stops_at_its_deadline() {
    let no_time = DecodeLimits { max_pixels: DEFAULT_CAP, deadline: Duration::ZERO };
    let jpeg = hostile::jpeg_progressive(2048, 2048, mozjpeg_rgb(), &[10, 200, 30]);
    assert_eq!(decode_rgb(&jpeg, &no_time).unwrap_err(), ImageError::DeadlineExceeded { format: "JPEG", millis: 0 });
    let png = hostile::png_grey(2048, 2048);
    assert_eq!(decode_rgb(&png, &no_time).unwrap_err(), ImageError::DeadlineExceeded { format: "PNG", millis: 0 });
    // With time, both decode.
    assert!(decode_rgb(&jpeg, &limits(DEFAULT_CAP)).is_ok());
    assert!(decode_rgb(&png, &limits(DEFAULT_CAP)).is_ok());
}

fn mozjpeg_rgb() -> mozjpeg::ColorSpace {
    mozjpeg::ColorSpace::JCS_RGB
}

/// Hostile files and good images in one S3 event, through the ingest function's own code
/// against real S3 and Milvus: the good ones and the valid hostile ones are indexed, the rest
/// are reported as skipped with their reasons, and the invocation succeeds.
#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn one_event_of_hostile_and_good_uploads_indexes_every_good_one() {
    let Sandbox { s3, bucket, index, .. } = Sandbox::new("hostile", 64).await;
    let files: Vec<Hostile> = hostile::all(false);
    let good = [("good/baseline.jpg", fixture_image("baseline.jpg")), ("good/rgba.png", fixture_image("rgba.png"))];
    let mut keys = Vec::new();
    for (key, bytes) in &good {
        put(&s3, &bucket, key, bytes.clone(), "image/jpeg").await;
        keys.push(key.to_string());
    }
    for file in &files {
        let key = format!("hostile/{}", file.name);
        put(&s3, &bucket, &key, file.bytes.clone(), "application/octet-stream").await;
        keys.push(key);
    }
    let event = tests::s3_put_event(&bucket, &keys);
    let report = ingest(&ingestor(&s3, index.clone()), &event).await.expect("the event succeeds");
    for (key, _) in &good {
        assert!(report.indexed.contains(&key.to_string()), "{key} indexed: {report:?}");
    }
    for file in &files {
        let key = format!("hostile/{}", file.name);
        let outcome = match report.skipped.iter().find(|s| s.key == key) {
            Some(skip) => Err(skip.reason.clone()),
            None => {
                assert!(report.indexed.contains(&key), "{key} neither indexed nor skipped: {report:?}");
                Ok((0, 0))
            }
        };
        file.check(outcome);
    }
}
