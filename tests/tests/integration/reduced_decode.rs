//! Decoding large JPEGs at reduced scale (libjpeg DCT scaling) keeps the embedding within
//! cosine 0.999 of the full decode that the reference pipeline does.

use image::codecs::jpeg::JpegEncoder;
use image::imageops::FilterType;
use shared::embedder::{cosine, ClipImageEncoder, ImageEmbedder};
use tests::{fixture_image, runtime, tiny_model};

/// A phone-sized (4032x3024, or 3024x4032) JPEG made from a fixture photo.
fn phone_jpeg(file: &str, portrait: bool) -> Vec<u8> {
    let photo = image::load_from_memory(&fixture_image(file)).unwrap().to_rgb8();
    let (w, h) = if portrait { (3024, 4032) } else { (4032, 3024) };
    let big = image::imageops::resize(&photo, w, h, FilterType::Triangle);
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, 90).encode_image(&big).unwrap();
    out
}

#[test]
#[ignore = "needs ONNX Runtime: bash scripts/test (or scripts/install-onnxruntime)"]
fn reduced_jpeg_decode_stays_within_cosine_0_999_of_the_full_decode() {
    let full = ClipImageEncoder::load(&tiny_model(), &runtime(), 100_000_000).unwrap().with_reduced_jpeg(None);
    let reduced = ClipImageEncoder::load(&tiny_model(), &runtime(), 100_000_000).unwrap();
    let mut worst = 1f32;
    for (file, portrait) in [
        ("baseline.jpg", false),
        ("progressive.jpg", true),
        ("landscape-1024.jpg", false),
        ("lossy.webp", false),
        ("rgba.png", true),
    ] {
        let jpeg = phone_jpeg(file, portrait);
        let a = full.embed_images(&[&jpeg]).unwrap().remove(0).unwrap();
        let b = reduced.embed_images(&[&jpeg]).unwrap().remove(0).unwrap();
        assert_eq!((a.width, a.height), (b.width, b.height), "metadata is the full size either way");
        assert_eq!(b.width.max(b.height), 4032);
        let fitted_full = full.prepare(&jpeg).unwrap().fitted;
        let fitted_reduced = reduced.prepare(&jpeg).unwrap().fitted;
        let max_px =
            fitted_full.as_raw().iter().zip(fitted_reduced.as_raw()).map(|(x, y)| x.abs_diff(*y)).max().unwrap();
        let cos = cosine(&a.vector, &b.vector);
        println!("{file:20} reduced vs full: cosine {cos:.6}, max pixel difference {max_px}");
        worst = worst.min(cos);
    }
    assert!(worst >= 0.999, "worst cosine {worst}");
}
