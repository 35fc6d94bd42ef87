//! The Rust text path against each family's Python reference (CLIP: immich's call of the
//! bundle's tokenizer.json; SigLIP, SigLIP2, XLM-R: open_clip's HFTokenizer with the family's
//! cleaning) and onnxruntime, on the same weights.

use shared::embedder::{cosine, TextEmbedError, TextEmbedder, TextError};
use tests::{text_encoder, Family, FAMILIES};

/// The number of queries and the worst cosine of one family, and what differs from the reference:
/// token ids must be identical, and a query the reference's cleaning empties must be refused.
fn text_parity(family: &Family) -> (usize, f32, Vec<String>) {
    let encoder = family.text_encoder();
    let goldens = family.golden_texts();
    let (mut worst_cos, mut failures) = (1f32, Vec::new());
    for golden in &goldens {
        if golden.empty {
            match encoder.embed_text(&golden.text) {
                Err(TextEmbedError::Text(TextError::Empty)) => {}
                other => failures.push(format!("{:?}: cleaning leaves nothing, yet got {other:?}", golden.text)),
            }
            continue;
        }
        let tokens =
            encoder.tokenize(&golden.text).unwrap_or_else(|e| panic!("{} {:?}: {e}", family.name, golden.text));
        if tokens.ids != golden.ids {
            failures.push(format!(
                "{:?}: ids {:?}…, reference {:?}…",
                golden.text,
                &tokens.ids[..12],
                &golden.ids[..12]
            ));
            continue;
        }
        let cos = cosine(&encoder.embed_text(&golden.text).unwrap(), &golden.embedding);
        if cos < 0.9999 {
            failures.push(format!("{:?}: cosine {cos}", golden.text));
        }
        worst_cos = worst_cos.min(cos);
    }
    (goldens.len(), worst_cos, failures)
}

#[test]
#[ignore = "needs ONNX Runtime: bash scripts/test (or scripts/install-onnxruntime)"]
fn token_ids_and_embeddings_match_the_reference_for_every_query_and_family() {
    let mut failures = Vec::new();
    for family in &FAMILIES {
        let (queries, worst_cos, differ) = text_parity(family);
        println!("{}: {queries} queries, worst cosine {worst_cos:.7} (1 - cos = {:.1e})", family.name, 1.0 - worst_cos);
        failures.extend(differ.into_iter().map(|d| format!("{}: {d}", family.name)));
    }
    assert!(failures.is_empty(), "differences from the reference:\n{}", failures.join("\n"));
}

#[test]
#[ignore = "needs ONNX Runtime: bash scripts/test (or scripts/install-onnxruntime)"]
fn a_query_over_the_context_length_is_truncated_and_still_ends_with_end_of_text() {
    let encoder = text_encoder();
    let long = "a very long description of a picture ".repeat(20);
    let tokens = encoder.tokenize(&long).unwrap();
    assert_eq!(tokens.ids.len(), 77);
    assert_eq!(tokens.ids[0], 49406, "starts with <|startoftext|>");
    assert_eq!(tokens.ids[76], 49407, "ends with <|endoftext|>");
    assert!(tokens.attention_mask.iter().all(|&m| m == 1), "no padding in a truncated query");
}

#[test]
#[ignore = "needs ONNX Runtime: bash scripts/test (or scripts/install-onnxruntime)"]
fn short_queries_are_padded_with_the_bundles_pad_token() {
    let tokens = text_encoder().tokenize("a cat").unwrap();
    assert_eq!(&tokens.ids[..4], &[49406, 320, 2368, 49407]);
    assert!(tokens.ids[4..].iter().all(|&id| id == 49407), "tokenizer_config.json pads with <|endoftext|>");
    assert_eq!(tokens.attention_mask.iter().sum::<u32>(), 4);
}

#[test]
#[ignore = "needs ONNX Runtime: bash scripts/test (or scripts/install-onnxruntime)"]
fn empty_and_whitespace_only_text_is_an_error_not_a_zero_vector() {
    let encoder = text_encoder();
    for text in ["", "   ", "\t\n "] {
        match encoder.embed_text(text) {
            Err(TextEmbedError::Text(TextError::Empty)) => {}
            other => panic!("{text:?}: expected TextError::Empty, got {other:?}"),
        }
    }
}

#[test]
#[ignore = "needs ONNX Runtime: bash scripts/test (or scripts/install-onnxruntime)"]
fn a_batch_gives_the_same_vectors_as_one_at_a_time() {
    for family in &FAMILIES {
        let encoder = family.text_encoder();
        // Of different lengths, so that padding (and XLM-R's attention mask) differs within the batch.
        let texts = ["a photo of a cat", "🐶🐱 cute pets", "rocket launch at night over the sea, 日本の桜"];
        let batch = encoder.embed_texts(&texts).unwrap();
        for (text, batched) in texts.iter().zip(&batch) {
            let single = encoder.embed_text(text).unwrap();
            let diff = single.iter().zip(batched).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(diff <= 1e-5, "{} {text:?}: batch differs by {diff}", family.name);
        }
    }
}
