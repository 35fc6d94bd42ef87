//! The Rust text path against the reference (HF tokenizers + onnxruntime) on the same weights.

use shared::embedder::{cosine, TextEmbedError, TextEmbedder, TextError};
use tests::{golden_texts, text_encoder};

#[test]
#[ignore = "needs ONNX Runtime: bash scripts/test (or scripts/install-onnxruntime)"]
fn token_ids_and_embeddings_match_the_reference_for_every_query() {
    let encoder = text_encoder();
    let goldens = golden_texts();
    let mut worst_cos = 1f32;
    for golden in &goldens {
        let tokens = encoder.tokenize(&golden.text).unwrap_or_else(|e| panic!("{:?}: {e}", golden.text));
        assert_eq!(tokens.ids, golden.ids, "token ids differ for {:?}", golden.text);
        let embedding = encoder.embed_text(&golden.text).unwrap();
        let cos = cosine(&embedding, &golden.embedding);
        assert!(cos >= 0.9999, "{:?}: cosine {cos}", golden.text);
        worst_cos = worst_cos.min(cos);
    }
    println!("{} queries, worst cosine {worst_cos:.7} (1 - cos = {:.1e})", goldens.len(), 1.0 - worst_cos);
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
    let encoder = text_encoder();
    let texts = ["a photo of a cat", "🐶🐱 cute pets", "rocket launch at night"];
    let batch = encoder.embed_texts(&texts).unwrap();
    for (text, batched) in texts.iter().zip(&batch) {
        let single = encoder.embed_text(text).unwrap();
        let diff = single.iter().zip(batched).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(diff <= 1e-5, "{text:?}: batch differs by {diff}");
    }
}
