//! How closely a candidate model (an int8 export, say) embeds like its reference on the same
//! inputs. Quantization error depends on the real weights, so this is the check a user runs on
//! their own images and queries before deploying the candidate (`clip-search compare-models`).

use serde::Serialize;

use super::{cosine, Embedding, ImageEmbedder, InferenceError, TextEmbedError, TextEmbedder};

/// Cosine between the two models' embeddings of the same inputs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Agreement {
    pub count: usize,
    /// The worst input's cosine (1.0 when there are no inputs).
    pub min: f32,
    pub mean: f64,
    /// The input with the lowest cosine.
    pub worst: Option<String>,
}

impl Agreement {
    fn of(pairs: &[(String, f32)]) -> Self {
        let worst = pairs.iter().min_by(|a, b| a.1.total_cmp(&b.1));
        let mean = match pairs.len() {
            0 => 1.0,
            n => pairs.iter().map(|p| f64::from(p.1)).sum::<f64>() / n as f64,
        };
        Agreement { count: pairs.len(), min: worst.map_or(1.0, |w| w.1), mean, worst: worst.map(|w| w.0.clone()) }
    }
}

/// Whether each query finds the same images: the reference's own ranking against the candidate
/// text tower's over the reference's image vectors (the index stays as ingest wrote it when only
/// the search function's tower is swapped).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RankingAgreement {
    /// How many top images are compared per query (at most the number of images).
    pub k: usize,
    /// Share of queries whose first image is the same.
    pub top1: f64,
    /// Mean share of the top k images that both rankings hold.
    pub overlap_at_k: f64,
}

/// An image or query either model could not embed, with why; it is left out of the comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Skipped {
    pub name: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub images: Agreement,
    pub texts: Agreement,
    pub ranking: Option<RankingAgreement>,
    pub skipped: Vec<Skipped>,
}

impl Comparison {
    /// The inputs whose cosine falls below `min_cosine`, as lines for the user.
    pub fn failures(&self, min_cosine: f32) -> Vec<String> {
        [("image", &self.images), ("query", &self.texts)]
            .into_iter()
            .filter(|(_, a)| a.count > 0 && a.min < min_cosine)
            .map(|(what, a)| {
                format!("{what} {:?}: cosine {:.5} < {min_cosine}", a.worst.as_deref().unwrap_or_default(), a.min)
            })
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error(transparent)]
    Inference(#[from] InferenceError),
    #[error(transparent)]
    Text(#[from] TextEmbedError),
    #[error("the two models embed to different dimensions ({reference} and {candidate}): they cannot share an index")]
    Dimension { reference: usize, candidate: usize },
}

/// A pair of towers to compare: the reference and the candidate.
pub struct Towers<'a, T: ?Sized> {
    pub reference: &'a T,
    pub candidate: &'a T,
}

/// Embeds every image and query with both models and measures how closely they agree.
/// `images` are (name, bytes); an image or query either model refuses is skipped and listed.
pub fn compare(
    image: Towers<'_, dyn ImageEmbedder>,
    text: Towers<'_, dyn TextEmbedder>,
    images: &[(String, Vec<u8>)],
    queries: &[String],
    k: usize,
) -> Result<Comparison, CompareError> {
    for (reference, candidate) in
        [(image.reference.dim(), image.candidate.dim()), (text.reference.dim(), text.candidate.dim())]
    {
        if reference != candidate {
            return Err(CompareError::Dimension { reference, candidate });
        }
    }
    let mut skipped = Vec::new();
    let mut image_pairs = Vec::new();
    let mut reference_images: Vec<Embedding> = Vec::new();
    // One image per run: the point is the numbers, and a whole folder at once would hold every
    // decoded image in memory.
    for (name, bytes) in images {
        let reference = image.reference.embed_images(&[bytes])?.remove(0);
        let candidate = image.candidate.embed_images(&[bytes])?.remove(0);
        match (reference, candidate) {
            (Ok(r), Ok(c)) => {
                image_pairs.push((name.clone(), cosine(&r.vector, &c.vector)));
                reference_images.push(r.vector);
            }
            (Err(e), _) | (_, Err(e)) => skipped.push(Skipped { name: name.clone(), reason: e.to_string() }),
        }
    }
    let mut text_pairs = Vec::new();
    let mut rankings = Vec::new();
    for query in queries {
        // A query a tokenizer refuses (e.g. only punctuation, which SigLIP's cleaning removes) is
        // listed like an unreadable image; an inference failure still stops the comparison.
        let pair = text.reference.embed_text(query).and_then(|r| Ok((r, text.candidate.embed_text(query)?)));
        let (r, c) = match pair {
            Ok(pair) => pair,
            Err(TextEmbedError::Text(e)) => {
                skipped.push(Skipped { name: query.clone(), reason: e.to_string() });
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        text_pairs.push((query.clone(), cosine(&r, &c)));
        rankings.push((top(&r, &reference_images, k), top(&c, &reference_images, k)));
    }
    let ranking = (!reference_images.is_empty() && !rankings.is_empty()).then(|| {
        let k = k.min(reference_images.len());
        let n = rankings.len() as f64;
        RankingAgreement {
            k,
            top1: rankings.iter().filter(|(r, c)| r.first() == c.first()).count() as f64 / n,
            overlap_at_k: rankings
                .iter()
                .map(|(r, c)| r.iter().filter(|i| c.contains(i)).count() as f64 / k as f64)
                .sum::<f64>()
                / n,
        }
    });
    Ok(Comparison { images: Agreement::of(&image_pairs), texts: Agreement::of(&text_pairs), ranking, skipped })
}

/// Indices of the `k` images nearest the query, best first (ties by index, so rankings compare).
fn top(query: &[f32], images: &[Embedding], k: usize) -> Vec<usize> {
    let mut scored: Vec<(usize, f32)> = images.iter().enumerate().map(|(i, v)| (i, cosine(query, v))).collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored.into_iter().take(k).map(|(i, _)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedder::{ImageEmbedding, ImageError, SupportedFormat};

    /// Embeds bytes as a fixed vector per first byte, plus `noise` on the second component; byte 0 fails.
    struct Fake {
        noise: f32,
        dim: usize,
    }

    fn vector(seed: u8, noise: f32) -> Embedding {
        let mut v = vec![0.0; 3];
        v[seed as usize % 3] = 1.0;
        v[(seed as usize + 1) % 3] += noise;
        v
    }

    impl ImageEmbedder for Fake {
        fn dim(&self) -> usize {
            self.dim
        }
        fn embed_images(&self, images: &[&[u8]]) -> Result<Vec<Result<ImageEmbedding, ImageError>>, InferenceError> {
            Ok(images
                .iter()
                .map(|b| match b[0] {
                    0 => Err(ImageError::UnknownFormat),
                    s => Ok(ImageEmbedding {
                        vector: vector(s, self.noise),
                        width: 1,
                        height: 1,
                        format: SupportedFormat::Png,
                    }),
                })
                .collect())
        }
    }

    impl TextEmbedder for Fake {
        fn dim(&self) -> usize {
            self.dim
        }
        fn embed_texts(&self, texts: &[&str]) -> Result<Vec<Embedding>, TextEmbedError> {
            if texts.iter().any(|t| t.is_empty()) {
                return Err(TextEmbedError::Text(crate::embedder::TextError::Empty));
            }
            Ok(texts.iter().map(|t| vector(t.len() as u8, self.noise)).collect())
        }
    }

    fn run(reference: &Fake, candidate: &Fake) -> Result<Comparison, CompareError> {
        let images = vec![("a".to_string(), vec![1]), ("b".to_string(), vec![2]), ("bad".to_string(), vec![0])];
        let queries = vec!["x".to_string(), "yy".to_string(), String::new()];
        compare(
            Towers { reference: reference as &dyn ImageEmbedder, candidate: candidate as &dyn ImageEmbedder },
            Towers { reference: reference as &dyn TextEmbedder, candidate: candidate as &dyn TextEmbedder },
            &images,
            &queries,
            5,
        )
    }

    #[test]
    fn identical_models_agree_fully_and_bad_images_are_listed() {
        let model = Fake { noise: 0.0, dim: 3 };
        let c = run(&model, &model).unwrap();
        assert_eq!((c.images.count, c.texts.count), (2, 2));
        assert!(c.images.min > 0.9999 && c.texts.min > 0.9999);
        let empty = crate::embedder::TextError::Empty.to_string();
        assert_eq!(
            c.skipped,
            vec![
                Skipped { name: "bad".into(), reason: ImageError::UnknownFormat.to_string() },
                Skipped { name: String::new(), reason: empty }
            ]
        );
        assert_eq!(c.ranking, Some(RankingAgreement { k: 2, top1: 1.0, overlap_at_k: 1.0 }));
        assert!(c.failures(0.99).is_empty());
    }

    #[test]
    fn a_drifting_candidate_fails_the_threshold_and_names_the_worst_input() {
        let c = run(&Fake { noise: 0.0, dim: 3 }, &Fake { noise: 0.5, dim: 3 }).unwrap();
        // cos = 1 / sqrt(1 + 0.25)
        assert!((c.images.min - 0.894).abs() < 1e-3, "{c:?}");
        let failures = c.failures(0.99);
        assert_eq!(failures.len(), 2, "{failures:?}");
        assert!(failures[0].starts_with("image \"a\""), "{failures:?}");
    }

    #[test]
    fn different_dimensions_are_refused() {
        let err = run(&Fake { noise: 0.0, dim: 3 }, &Fake { noise: 0.0, dim: 4 }).unwrap_err();
        assert!(matches!(err, CompareError::Dimension { reference: 3, candidate: 4 }));
    }
}
