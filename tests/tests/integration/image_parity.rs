//! The Rust image path against each family's Python reference (Pillow, then golden.py's crop for
//! CLIP and the XLM-R bundle's CLIP tower, open_clip's squash transform for SigLIP; onnxruntime),
//! on the same weights.

use shared::embedder::{cosine, ImageEmbedder};
use tests::{fixture_image, golden_tensor, image_encoder, Family, FAMILIES};

/// The worst tensor difference and embedding cosine of one family, with a line per image.
fn image_parity(family: &Family) -> (f32, f32, Vec<String>) {
    let encoder = family.image_encoder();
    let (mut worst_diff, mut worst_cos, mut report) = (0f32, 1f32, Vec::new());
    for golden in &family.golden_images() {
        let bytes = fixture_image(&golden.file);
        let tensor = encoder.preprocess(&bytes).unwrap_or_else(|e| panic!("{} {}: {e}", family.name, golden.file));
        let expected = golden_tensor(golden);
        assert_eq!(tensor.len(), expected.len(), "{} {}: tensor length", family.name, golden.file);
        let diff = tensor.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        let embedded = encoder.embed_images(&[&bytes]).unwrap().remove(0).unwrap();
        let cos = cosine(&embedded.vector, &golden.embedding);
        assert_eq!((embedded.width, embedded.height), (golden.width, golden.height), "{}: upright size", golden.file);
        report.push(format!("{:8} {:24} max|Δtensor| {diff:.5}  cosine {cos:.7}", family.name, golden.file));
        worst_diff = worst_diff.max(diff);
        worst_cos = worst_cos.min(cos);
    }
    (worst_diff, worst_cos, report)
}

#[test]
#[ignore = "needs ONNX Runtime: bash scripts/test (or scripts/install-onnxruntime)"]
fn tensors_and_embeddings_match_the_reference_for_every_fixture_and_family() {
    let mut failures = Vec::new();
    for family in &FAMILIES {
        let (worst_diff, worst_cos, report) = image_parity(family);
        println!(
            "{}\n{}: worst tensor difference {worst_diff:.5}, worst cosine {worst_cos:.7}",
            report.join("\n"),
            family.name
        );
        if worst_diff > 0.02 || worst_cos < 0.999 {
            failures
                .push(format!("{}: tensor |Δ| {worst_diff} (max 0.02), cosine {worst_cos} (min 0.999)", family.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
#[ignore = "needs ONNX Runtime: bash scripts/test (or scripts/install-onnxruntime)"]
fn one_batch_gives_the_same_vectors_as_one_at_a_time() {
    for family in &FAMILIES {
        let encoder = family.image_encoder();
        let images: Vec<Vec<u8>> = family.golden_images().iter().take(8).map(|g| fixture_image(&g.file)).collect();
        let refs: Vec<&[u8]> = images.iter().map(Vec::as_slice).collect();
        let batch = encoder.embed_images(&refs).unwrap();
        assert_eq!(batch.len(), refs.len());
        for (bytes, batched) in refs.iter().zip(batch) {
            let single = encoder.embed_images(&[bytes]).unwrap().remove(0).unwrap();
            let batched = batched.unwrap();
            let diff = single.vector.iter().zip(&batched.vector).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(diff <= 1e-5, "{}: batched vector differs by {diff}", family.name);
        }
    }
}

#[test]
#[ignore = "needs ONNX Runtime: bash scripts/test (or scripts/install-onnxruntime)"]
fn exif_orientation_turns_sideways_photos_upright() {
    let encoder = image_encoder();
    // All three files hold the same upright rocket (640x427), stored rotated with an EXIF tag.
    let upright: Vec<_> = ["exif-3.jpg", "exif-6.jpg", "exif-8.jpg"]
        .iter()
        .map(|f| encoder.embed_images(&[&fixture_image(f)]).unwrap().remove(0).unwrap())
        .collect();
    for e in &upright {
        assert_eq!((e.width, e.height), (640, 427));
    }
    assert!(cosine(&upright[0].vector, &upright[1].vector) > 0.99);
    assert!(cosine(&upright[0].vector, &upright[2].vector) > 0.99);
}
