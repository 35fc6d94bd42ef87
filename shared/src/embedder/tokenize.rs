//! Query text to token ids, as immich does it with the bundle's own `tokenizer.json`:
//! collapse whitespace, (SigLIP) canonicalize as open_clip does, truncate to the context length keeping
//! the special tokens (a long query still ends with end-of-text), pad with the pad token.

use tokenizers::{PaddingDirection, PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use super::bundle::{ModelBundle, ModelConfig, ModelError};

/// Why a text cannot be embedded. Not worth retrying.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("the text is empty (or only whitespace); give a few words to search for")]
    Empty,
    #[error("the tokenizer failed on this text: {0}")]
    Tokenizer(String),
}

/// Token ids and attention mask of one text, both `context_length` long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    pub ids: Vec<u32>,
    pub attention_mask: Vec<u32>,
}

/// The bundle's tokenizer with the padding and truncation the model expects.
pub struct ClipTokenizer {
    tokenizer: Tokenizer,
    context_length: usize,
    canonicalize: bool,
}

impl ClipTokenizer {
    pub fn load(bundle: &ModelBundle, config: &ModelConfig) -> Result<Self, ModelError> {
        let path = bundle.tokenizer_path();
        super::bundle::require(&path, "the text tokenizer (textual/tokenizer.json)")?;
        let err = |message: String| ModelError::Tokenizer { path: path.clone(), message };
        let mut tokenizer = Tokenizer::from_file(&path).map_err(|e| err(e.to_string()))?;
        let (pad_token, pad_id) = match bundle.pad_token()? {
            Some(token) => {
                let id = tokenizer.token_to_id(&token).ok_or_else(|| {
                    err(format!(
                        "pad token {token:?} named in {} is not in the vocabulary",
                        bundle.tokenizer_config_path().display()
                    ))
                })?;
                (token, id)
            }
            // No tokenizer_config.json: the tokenizer's own padding, else open_clip's id 0.
            None => match tokenizer.get_padding() {
                Some(p) => (p.pad_token.clone(), p.pad_id),
                None => (tokenizer.id_to_token(0).unwrap_or_default(), 0),
            },
        };
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(config.context_length),
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id,
            pad_type_id: 0,
            pad_token,
        }));
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: config.context_length, ..Default::default() }))
            .map_err(|e| err(e.to_string()))?;
        Ok(ClipTokenizer { tokenizer, context_length: config.context_length, canonicalize: config.canonicalize })
    }

    pub fn context_length(&self) -> usize {
        self.context_length
    }

    pub fn encode(&self, text: &str) -> Result<Tokens, TextError> {
        let cleaned = clean_text(text, self.canonicalize);
        if cleaned.is_empty() {
            return Err(TextError::Empty);
        }
        let encoding = self.tokenizer.encode(cleaned, true).map_err(|e| TextError::Tokenizer(e.to_string()))?;
        Ok(Tokens { ids: encoding.get_ids().to_vec(), attention_mask: encoding.get_attention_mask().to_vec() })
    }
}

/// Whitespace runs become one space and the ends are trimmed (Python's `" ".join(text.split())`).
/// With `canonicalize` (SigLIP's `clean: canonicalize`) the text is cleaned as open_clip and
/// big_vision clean it for these models in training: `_` becomes a space, ASCII punctuation is
/// removed, the text lowercased, and whitespace collapsed last. immich collapses first and drops
/// `_`, which leaves double spaces ("C++ & Rust" → "c  rust") that a Gemma tokenizer (SigLIP2)
/// turns into extra tokens, and glues "snake_case" into one word.
pub fn clean_text(text: &str, canonicalize: bool) -> String {
    if canonicalize {
        let stripped: String =
            text.chars().map(|c| if c == '_' { ' ' } else { c }).filter(|c| !c.is_ascii_punctuation()).collect();
        collapse_whitespace(&stripped.to_lowercase())
    } else {
        collapse_whitespace(text)
    }
}

fn collapse_whitespace(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_collapses_like_python_split() {
        assert_eq!(clean_text("  a \t b\n\nc  ", false), "a b c");
        assert_eq!(clean_text(" \n\t ", false), "");
    }

    #[test]
    fn canonicalize_drops_punctuation_and_lowercases() {
        assert_eq!(clean_text("Hello, World! It's 5:00", true), "hello world its 500");
    }

    #[test]
    fn canonicalize_follows_open_clip_for_underscores_and_the_gaps_punctuation_leaves() {
        assert_eq!(clean_text("snake_case and kebab-case", true), "snake case and kebabcase");
        assert_eq!(clean_text("C++ & Rust <3", true), "c rust 3");
        assert_eq!(clean_text("  a - b  ", true), "a b");
        assert_eq!(clean_text("!!!???...", true), "");
    }
}
