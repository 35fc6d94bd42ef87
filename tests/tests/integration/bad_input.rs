//! Inputs that must be refused with the right error, without a panic or a large allocation.

use shared::embedder::{ImageEmbedder, ImageError};
use tests::{bad_input, fixture_image, image_encoder};

fn embed_one(bytes: &[u8]) -> Result<(), ImageError> {
    image_encoder().embed_images(&[bytes]).expect("inference itself works").remove(0).map(|_| ())
}

#[test]
#[ignore = "needs ONNX Runtime: bash scripts/test (or scripts/install-onnxruntime)"]
fn zero_bytes_is_empty() {
    assert_eq!(embed_one(&bad_input("empty.jpg")), Err(ImageError::Empty));
}

#[test]
#[ignore = "needs ONNX Runtime: bash scripts/test (or scripts/install-onnxruntime)"]
fn a_truncated_jpeg_is_corrupt() {
    match embed_one(&bad_input("truncated.jpg")) {
        Err(ImageError::Corrupt { format: "JPEG", message }) => assert!(message.contains("truncated"), "{message}"),
        other => panic!("expected a corrupt JPEG, got {other:?}"),
    }
}

#[test]
#[ignore = "needs ONNX Runtime: bash scripts/test (or scripts/install-onnxruntime)"]
fn a_text_file_is_not_an_image() {
    assert_eq!(embed_one(&bad_input("not-an-image.txt")), Err(ImageError::UnknownFormat));
}

#[test]
#[ignore = "needs ONNX Runtime: bash scripts/test (or scripts/install-onnxruntime)"]
fn a_decompression_bomb_fails_fast_on_its_header() {
    let start = std::time::Instant::now();
    match embed_one(&bad_input("bomb-40000x40000.png")) {
        Err(ImageError::TooLarge { width: 40000, height: 40000, max_pixels }) => assert_eq!(max_pixels, 100_000_000),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // Not a timing assertion on the machine's speed: a full decode would allocate 4.8 GB.
    println!("bomb refused in {:?}", start.elapsed());
}

#[test]
#[ignore = "needs ONNX Runtime: bash scripts/test (or scripts/install-onnxruntime)"]
fn a_lower_pixel_cap_refuses_normal_photos_too() {
    let encoder = shared::embedder::ClipImageEncoder::load(&tests::tiny_model(), &tests::runtime(), 1000).unwrap();
    let result = encoder.embed_images(&[&fixture_image("baseline.jpg")]).unwrap().remove(0);
    assert!(matches!(result, Err(ImageError::TooLarge { width: 512, height: 512, max_pixels: 1000 })), "{result:?}");
}

#[test]
#[ignore = "needs ONNX Runtime: bash scripts/test (or scripts/install-onnxruntime)"]
fn heic_is_named_as_unsupported() {
    match embed_one(&bad_input("photo.heic")) {
        Err(e @ ImageError::UnsupportedFormat { format: "HEIC/HEIF" }) => {
            assert!(e.to_string().contains("use JPEG, PNG, WebP, GIF, BMP or TIFF"), "{e}")
        }
        other => panic!("expected UnsupportedFormat, got {other:?}"),
    }
}

#[test]
#[ignore = "needs ONNX Runtime: bash scripts/test (or scripts/install-onnxruntime)"]
fn a_bad_image_in_a_batch_does_not_affect_the_others() {
    let good = fixture_image("baseline.jpg");
    let bad = bad_input("truncated.jpg");
    let results = image_encoder().embed_images(&[&good, &bad, &good]).unwrap();
    assert!(results[0].is_ok() && results[2].is_ok());
    assert!(matches!(results[1], Err(ImageError::Corrupt { .. })));
    assert_eq!(results[0].as_ref().unwrap().vector, results[2].as_ref().unwrap().vector);
}

#[test]
#[ignore = "needs ONNX Runtime: bash scripts/test (or scripts/install-onnxruntime)"]
fn every_truncation_of_every_fixture_fails_cleanly_or_decodes() {
    // Cut each fixture at several points: decoders must return an error that says something, never
    // panic; a cut they still decode (formats that tolerate a missing tail) keeps the file's size.
    let encoder = image_encoder();
    let mut checked = 0;
    for entry in std::fs::read_dir(tests::fixtures().join("images")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&path).unwrap();
        let whole = encoder.prepare(&bytes).unwrap_or_else(|e| panic!("{name}: the whole file decodes: {e}"));
        for cut in [1, 8, 33, bytes.len() / 2, bytes.len() - 1] {
            match encoder.prepare(&bytes[..cut]) {
                Err(e) => {
                    assert!(!e.to_string().trim().is_empty(), "{name} cut to {cut} bytes: an error without a message")
                }
                Ok(prepared) => {
                    assert!(cut > 8, "{name} cut to {cut} bytes cannot be a whole image, yet it decodes");
                    assert_eq!(
                        (prepared.width, prepared.height),
                        (whole.width, whole.height),
                        "{name} cut to {cut} bytes decodes to another size than the whole file"
                    );
                }
            }
        }
        checked += 1;
    }
    assert!(checked >= 14, "every fixture image is cut: only {checked} found");
}

/// A PNG of `width × height` grey pixels, a few KB however long (it compresses to almost nothing).
fn strip_png(width: u32, height: u32) -> Vec<u8> {
    let image = image::GrayImage::from_fn(width, height, |x, y| image::Luma([((x + y) % 251) as u8]));
    let mut bytes = Vec::new();
    image.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).expect("encode PNG");
    bytes
}

/// A GIF whose logical screen is 0 × 0, with no frame: the header alone.
fn zero_canvas_gif() -> Vec<u8> {
    let mut bytes = b"GIF89a".to_vec();
    bytes.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0]); // width 0, height 0, no colour table, background, aspect
    bytes.push(b';');
    bytes
}

#[test]
#[ignore = "needs ONNX Runtime: bash scripts/test (or scripts/install-onnxruntime)"]
fn hostile_geometry_costs_only_its_own_image() {
    let good = fixture_image("baseline.jpg");
    let zero = zero_canvas_gif();
    // 1 × 10,000,000 is 10 MP, under the cap: resized, its long side would be 2.24 billion pixels.
    let tall = strip_png(1, 10_000_000);
    // 224 × 19,173,962 passes u32::MAX: refused with a reason, not wrapped around.
    let too_tall = strip_png(1, 19_173_962);
    let wide = strip_png(10_000_000, 1);
    let batch: [&[u8]; 6] = [&good, &zero, &tall, &too_tall, &wide, &good];
    let results = image_encoder().embed_images(&batch).expect("inference itself works");
    assert!(
        matches!(results[1], Err(ImageError::ZeroSize { .. }) | Err(ImageError::Corrupt { format: "GIF", .. })),
        "{:?}",
        results[1]
    );
    assert!(results[1].as_ref().unwrap_err().to_string().len() > 10);
    let tall = results[2].as_ref().expect("a 1 × 10,000,000 strip is embedded");
    assert_eq!((tall.width, tall.height), (1, 10_000_000));
    assert!(
        matches!(results[3], Err(ImageError::ExtremeAspectRatio { width: 1, height: 19_173_962 })),
        "{:?}",
        results[3]
    );
    assert_eq!(results[4].as_ref().map(|e| (e.width, e.height)).ok(), Some((10_000_000, 1)));
    assert_eq!(results[0].as_ref().unwrap().vector, results[5].as_ref().unwrap().vector, "neighbours unaffected");
}
