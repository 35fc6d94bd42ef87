//! The ONNX Runtime adapters for the two CLIP towers. Input names, element types and
//! layouts are read from the session, so immich's exports (`image` float NCHW, `text`
//! int32), HF-style exports (`input_ids` int64 + `attention_mask`) and immich's newer
//! raw-pixel exports (uint8 NHWC) all load unchanged.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use image::RgbImage;
use ort::session::{Session, SessionInputValue};
use ort::value::{Tensor, TensorElementType, ValueType};

use super::bundle::{require, ModelBundle, ModelError};
use super::decode::{decode_rgb_reduced, peak_bytes_of, DecodeLimits, ImageError, SupportedFormat};
use super::onnx::{build_session, RuntimeOptions};
use super::preprocess::Preprocessor;
use super::tokenize::{ClipTokenizer, Tokens};
use super::{l2_normalize, Embedding, ImageEmbedder, ImageEmbedding, InferenceError, TextEmbedError, TextEmbedder};

/// How the image tower wants its pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageInputLayout {
    /// float32 [N, 3, H, W], normalised with the config's mean/std (open_clip / immich exports).
    NchwNormalized,
    /// uint8 [N, H, W, 3], raw pixels; normalisation is inside the graph.
    NhwcRaw,
}

/// An image decoded and fitted to the model's size, ready to batch.
#[derive(Debug, Clone)]
pub struct PreparedImage {
    pub fitted: RgbImage,
    pub width: u32,
    pub height: u32,
    pub format: SupportedFormat,
}

/// The visual tower.
pub struct ClipImageEncoder {
    session: Mutex<Session>,
    model_path: PathBuf,
    input_name: String,
    layout: ImageInputLayout,
    preprocessor: Preprocessor,
    limits: DecodeLimits,
    budget: DecodeBudget,
    reduced_jpeg: Option<f32>,
    dim: usize,
}

/// JPEGs are decoded at reduced scale while their short side stays at least this many times the model's.
pub const DEFAULT_JPEG_REDUCTION_MARGIN: f32 = 2.0;

impl ClipImageEncoder {
    /// Loads `visual/` of the bundle. Only the visual files and `config.json` are read.
    pub fn load(bundle: &ModelBundle, runtime: &RuntimeOptions, max_pixels: u64) -> Result<Self, ModelError> {
        let config = bundle.model_config()?;
        let preprocess = bundle.preprocess_config()?;
        let model_path = bundle.visual_model_path();
        require(&model_path, "the image tower (visual/model.onnx)")?;
        let session = build_session(&model_path, runtime)?;
        let unsupported = |input: &str, detail: String| ModelError::UnsupportedInput {
            path: model_path.clone(),
            input: input.to_string(),
            detail,
        };
        let [input] = session.inputs() else {
            let names: Vec<_> = session.inputs().iter().map(|i| i.name().to_string()).collect();
            return Err(unsupported(&names.join(", "), "an image tower must take exactly one input".into()));
        };
        let (ty, shape) =
            tensor_info(input.dtype()).ok_or_else(|| unsupported(input.name(), "it is not a tensor".into()))?;
        let (layout, h, w) = match (ty, shape) {
            (TensorElementType::Float32, [_, c, h, w]) if matches!(*c, 3 | -1) => {
                (ImageInputLayout::NchwNormalized, *h, *w)
            }
            (TensorElementType::Uint8, [_, h, w, c]) if matches!(*c, 3 | -1) => (ImageInputLayout::NhwcRaw, *h, *w),
            _ => {
                return Err(unsupported(
                    input.name(),
                    format!("expected float32 [N,3,H,W] or uint8 [N,H,W,3], found {ty:?} {shape:?}"),
                ))
            }
        };
        let fixed = |d: i64, want: u32| d < 0 || d == want as i64;
        if !fixed(h, preprocess.height) || !fixed(w, preprocess.width) {
            return Err(unsupported(
                input.name(),
                format!(
                    "the model takes {h}x{w} images but {} says {}x{}",
                    bundle.preprocess_path().display(),
                    preprocess.height,
                    preprocess.width
                ),
            ));
        }
        let dim = output_dim(&session, &model_path, "image", config.embed_dim, bundle)?;
        if cfg!(target_arch = "x86_64") && !super::decode::jpeg_simd_enabled() {
            tracing::warn!("the JPEG decoder was built without SIMD (nasm was missing at build time): decoding is about twice as slow");
        }
        Ok(ClipImageEncoder {
            input_name: input.name().to_string(),
            session: Mutex::new(session),
            model_path,
            layout,
            preprocessor: Preprocessor::new(preprocess),
            limits: DecodeLimits { max_pixels, deadline: crate::config::DEFAULT_DECODE_DEADLINE },
            budget: DecodeBudget::new(crate::config::DEFAULT_DECODE_BUDGET_MB << 20),
            reduced_jpeg: Some(DEFAULT_JPEG_REDUCTION_MARGIN),
            dim,
        })
    }

    /// Large JPEGs are decoded at 1/2, 1/4 or 1/8 scale while their short side stays at least
    /// `margin` × the model's size (`None`: always full size, exactly the reference pipeline).
    /// The embedding stays within cosine 0.999 of the full decode (tests/tests/reduced_decode.rs).
    pub fn with_reduced_jpeg(mut self, margin: Option<f32>) -> Self {
        self.reduced_jpeg = margin;
        self
    }

    /// Wall time allowed for decoding one image (`IMAGE_DECODE_TIMEOUT_MS`).
    pub fn with_decode_deadline(mut self, deadline: Duration) -> Self {
        self.limits.deadline = deadline;
        self
    }

    /// Bytes that decoding may hold at once over all threads of this encoder (`DECODE_MEMORY_BUDGET_MB`).
    pub fn with_decode_budget(mut self, bytes: u64) -> Self {
        self.budget = DecodeBudget::new(bytes);
        self
    }

    pub fn layout(&self) -> ImageInputLayout {
        self.layout
    }

    pub fn preprocessor(&self) -> &Preprocessor {
        &self.preprocessor
    }

    /// Decodes and fits one image (CPU work that can run outside the model lock). A panic in a
    /// decoder or in preprocessing becomes this image's error, so one hostile upload cannot fail
    /// the other images of its event or batch; the header checks keep allocation failures (which
    /// abort, and cannot be caught) out of reach.
    pub fn prepare(&self, bytes: &[u8]) -> Result<PreparedImage, ImageError> {
        // The header is read for the reservation inside the guard too: a decoder may panic on it.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _reserved = self.budget.reserve(peak_bytes_of(bytes, self.limits.max_pixels));
            self.prepare_unchecked(bytes)
        }))
        .unwrap_or_else(|payload| {
            let message = super::decode::panic_message(&*payload).unwrap_or("a panic without a message").to_string();
            Err(ImageError::Panicked { message })
        })
    }

    fn prepare_unchecked(&self, bytes: &[u8]) -> Result<PreparedImage, ImageError> {
        let cfg = self.preprocessor.config();
        let min_side = self.reduced_jpeg.map(|m| (cfg.height.min(cfg.width) as f32 * m).ceil() as u32);
        let decoded = decode_rgb_reduced(bytes, &self.limits, min_side)?;
        Ok(PreparedImage {
            fitted: self.preprocessor.fit(&decoded.rgb)?,
            width: decoded.width,
            height: decoded.height,
            format: decoded.format,
        })
    }

    /// Decodes and fits several images, spread over the cores. Scoped threads end with the work:
    /// a pool whose idle workers spin (rayon's) was measured to slow the ONNX Runtime run that follows.
    pub fn prepare_all(&self, images: &[&[u8]]) -> Vec<Result<PreparedImage, ImageError>> {
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(images.len());
        if threads <= 1 {
            return images.iter().map(|b| self.prepare(b)).collect();
        }
        let per_thread = images.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let handles: Vec<_> = images
                .chunks(per_thread)
                .map(|chunk| scope.spawn(move || chunk.iter().map(|b| self.prepare(b)).collect::<Vec<_>>()))
                .collect();
            handles.into_iter().flat_map(|h| h.join().expect("image preparation does not panic")).collect()
        })
    }

    /// The normalised CHW tensor the model sees for `bytes` (what the reference pipeline produces).
    pub fn preprocess(&self, bytes: &[u8]) -> Result<Vec<f32>, ImageError> {
        let prepared = self.prepare(bytes)?;
        let mut out = vec![0f32; self.preprocessor.tensor_len()];
        self.preprocessor.write_chw(&prepared.fitted, &mut out);
        Ok(out)
    }

    /// Embeds prepared images in one model run.
    pub fn embed_prepared(&self, images: &[PreparedImage]) -> Result<Vec<Embedding>, InferenceError> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let cfg = self.preprocessor.config();
        let (n, h, w) = (images.len(), cfg.height as usize, cfg.width as usize);
        let input: SessionInputValue = match self.layout {
            ImageInputLayout::NchwNormalized => {
                let per = self.preprocessor.tensor_len();
                let mut data = vec![0f32; n * per];
                for (image, out) in images.iter().zip(data.chunks_exact_mut(per)) {
                    self.preprocessor.write_chw(&image.fitted, out);
                }
                Tensor::from_array(([n, 3, h, w], data)).map_err(ort_failed)?.into()
            }
            ImageInputLayout::NhwcRaw => {
                let data: Vec<u8> = images.iter().flat_map(|i| i.fitted.as_raw().iter().copied()).collect();
                Tensor::from_array(([n, h, w, 3], data)).map_err(ort_failed)?.into()
            }
        };
        run(&self.session, vec![(Cow::from(self.input_name.as_str()), input)], n, self.dim, &self.model_path)
    }
}

/// Bounds decoding in bytes, not only in threads: each image reserves the most its decode can
/// take (from the pixels its header declares, and its compressed bytes) before it starts, and waits while
/// the reservations of the images in flight would exceed the budget. The Lambda's and the
/// CLI's batches all share their encoder's budget, so batches × concurrency × threads cannot
/// add up past it. One image is always let through, so a budget below one image only serializes.
struct DecodeBudget {
    capacity: u64,
    in_use: Mutex<u64>,
    released: Condvar,
}

struct Reservation<'a> {
    budget: &'a DecodeBudget,
    bytes: u64,
}

impl DecodeBudget {
    fn new(capacity: u64) -> Self {
        DecodeBudget { capacity, in_use: Mutex::new(0), released: Condvar::new() }
    }

    fn reserve(&self, bytes: u64) -> Reservation<'_> {
        let bytes = bytes.min(self.capacity);
        let mut in_use = self.in_use.lock().unwrap_or_else(|e| e.into_inner());
        while *in_use > 0 && in_use.saturating_add(bytes) > self.capacity {
            in_use = self.released.wait(in_use).unwrap_or_else(|e| e.into_inner());
        }
        *in_use += bytes;
        Reservation { budget: self, bytes }
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut in_use = self.budget.in_use.lock().unwrap_or_else(|e| e.into_inner());
        *in_use -= self.bytes;
        self.budget.released.notify_all();
    }
}

impl ImageEmbedder for ClipImageEncoder {
    fn dim(&self) -> usize {
        self.dim
    }

    fn embed_images(&self, images: &[&[u8]]) -> Result<Vec<Result<ImageEmbedding, ImageError>>, InferenceError> {
        let prepared = self.prepare_all(images);
        let good: Vec<PreparedImage> = prepared.iter().filter_map(|p| p.as_ref().ok().cloned()).collect();
        let mut vectors = self.embed_prepared(&good)?.into_iter();
        Ok(prepared
            .into_iter()
            .map(|p| {
                p.map(|p| ImageEmbedding {
                    vector: vectors.next().expect("one vector per prepared image"),
                    width: p.width,
                    height: p.height,
                    format: p.format,
                })
            })
            .collect())
    }
}

/// Which text inputs the model has, by role.
#[derive(Debug, Clone)]
struct TextInputs {
    ids: (String, TensorElementType),
    attention_mask: Option<(String, TensorElementType)>,
    token_type_ids: Option<(String, TensorElementType)>,
}

/// The text tower.
pub struct ClipTextEncoder {
    session: Mutex<Session>,
    model_path: PathBuf,
    inputs: TextInputs,
    tokenizer: ClipTokenizer,
    dim: usize,
}

impl ClipTextEncoder {
    /// Loads `textual/` of the bundle. Only the textual files and `config.json` are read.
    pub fn load(bundle: &ModelBundle, runtime: &RuntimeOptions) -> Result<Self, ModelError> {
        let config = bundle.model_config()?;
        let model_path = bundle.textual_model_path();
        require(&model_path, "the text tower (textual/model.onnx)")?;
        let tokenizer = ClipTokenizer::load(bundle, &config)?;
        let session = build_session(&model_path, runtime)?;
        let inputs = text_inputs(&session, &model_path, config.context_length)?;
        let dim = output_dim(&session, &model_path, "text", config.embed_dim, bundle)?;
        Ok(ClipTextEncoder { session: Mutex::new(session), model_path, inputs, tokenizer, dim })
    }

    pub fn tokenizer(&self) -> &ClipTokenizer {
        &self.tokenizer
    }

    /// Token ids of `text`, exactly what the model is fed.
    pub fn tokenize(&self, text: &str) -> Result<Tokens, super::TextError> {
        self.tokenizer.encode(text)
    }

    /// Embeds already tokenized texts in one model run.
    pub fn embed_tokens(&self, tokens: &[Tokens]) -> Result<Vec<Embedding>, InferenceError> {
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        let n = tokens.len();
        let len = self.tokenizer.context_length();
        let column = |(name, ty): &(String, TensorElementType), values: Vec<u32>| {
            let value: SessionInputValue = match ty {
                TensorElementType::Int32 => {
                    let values: Vec<i32> = values.into_iter().map(|v| v as i32).collect();
                    Tensor::from_array(([n, len], values)).map_err(ort_failed)?.into()
                }
                _ => {
                    let values: Vec<i64> = values.into_iter().map(i64::from).collect();
                    Tensor::from_array(([n, len], values)).map_err(ort_failed)?.into()
                }
            };
            Ok::<_, InferenceError>((Cow::Owned(name.clone()), value))
        };
        let flat =
            |pick: fn(&Tokens) -> &[u32]| tokens.iter().flat_map(|t| pick(t).iter().copied()).collect::<Vec<u32>>();
        let mut feed = vec![column(&self.inputs.ids, flat(|t| &t.ids))?];
        if let Some(mask) = &self.inputs.attention_mask {
            feed.push(column(mask, flat(|t| &t.attention_mask))?);
        }
        if let Some(types) = &self.inputs.token_type_ids {
            feed.push(column(types, vec![0; n * len])?);
        }
        run(&self.session, feed, n, self.dim, &self.model_path)
    }
}

impl TextEmbedder for ClipTextEncoder {
    fn dim(&self) -> usize {
        self.dim
    }

    fn embed_texts(&self, texts: &[&str]) -> Result<Vec<Embedding>, TextEmbedError> {
        let tokens = texts.iter().map(|t| self.tokenize(t)).collect::<Result<Vec<_>, _>>()?;
        Ok(self.embed_tokens(&tokens)?)
    }
}

fn text_inputs(session: &Session, path: &Path, context_length: usize) -> Result<TextInputs, ModelError> {
    let unsupported = |input: &str, detail: String| ModelError::UnsupportedInput {
        path: path.to_path_buf(),
        input: input.to_string(),
        detail,
    };
    let mut ids = None;
    let mut attention_mask = None;
    let mut token_type_ids = None;
    let only_one = session.inputs().len() == 1;
    for input in session.inputs() {
        let name = input.name();
        let (ty, shape) = tensor_info(input.dtype()).ok_or_else(|| unsupported(name, "it is not a tensor".into()))?;
        if !matches!(ty, TensorElementType::Int32 | TensorElementType::Int64) {
            return Err(unsupported(name, format!("expected int32 or int64 token ids, found {ty:?}")));
        }
        match shape {
            [_, len] if *len < 0 || *len as usize == context_length => {}
            _ => {
                return Err(unsupported(
                    name,
                    format!("expected shape [N, {context_length}] (text_cfg.context_length), found {shape:?}"),
                ))
            }
        }
        let slot = match name {
            "text" | "input_ids" | "input" => &mut ids,
            "attention_mask" => &mut attention_mask,
            "token_type_ids" => &mut token_type_ids,
            _ if only_one => &mut ids,
            _ => {
                return Err(unsupported(
                    name,
                    "unknown text input; supported: text | input_ids, attention_mask, token_type_ids".into(),
                ))
            }
        };
        *slot = Some((name.to_string(), ty));
    }
    let ids = ids.ok_or_else(|| unsupported("", "the model has no token-id input (`text` or `input_ids`)".into()))?;
    Ok(TextInputs { ids, attention_mask, token_type_ids })
}

fn tensor_info(ty: &ValueType) -> Option<(TensorElementType, &[i64])> {
    match ty {
        ValueType::Tensor { ty, shape, .. } => Some((*ty, &shape[..])),
        _ => None,
    }
}

/// The embedding size of output 0 (immich's exports name it differently over time).
fn output_dim(
    session: &Session,
    path: &Path,
    tower: &'static str,
    expected: usize,
    bundle: &ModelBundle,
) -> Result<usize, ModelError> {
    let unsupported = |detail: String| ModelError::UnsupportedOutput { path: path.to_path_buf(), detail };
    let output = session.outputs().first().ok_or_else(|| unsupported("the model has no outputs".into()))?;
    match tensor_info(output.dtype()) {
        Some((TensorElementType::Float32, [_, d])) => {
            if *d >= 0 && *d as usize != expected {
                return Err(ModelError::DimMismatch {
                    path: path.to_path_buf(),
                    tower,
                    actual: *d as usize,
                    expected,
                    expected_from: format!("embed_dim in {}", bundle.config_path().display()),
                });
            }
            Ok(expected)
        }
        other => Err(unsupported(format!("output 0 must be float32 [N, D], found {other:?}"))),
    }
}

/// Runs the session and returns `n` L2-normalised rows of output 0.
fn run(
    session: &Mutex<Session>,
    feed: Vec<(Cow<'_, str>, SessionInputValue<'_>)>,
    n: usize,
    dim: usize,
    path: &Path,
) -> Result<Vec<Embedding>, InferenceError> {
    let mut session = session.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let outputs = session.run(feed).map_err(ort_failed)?;
    let (shape, data) = outputs[0].try_extract_tensor::<f32>().map_err(ort_failed)?;
    if shape.len() != 2 || shape[0] as usize != n || shape[1] as usize != dim {
        return Err(InferenceError(format!(
            "{} returned shape {:?}, expected [{n}, {dim}]",
            path.display(),
            &shape[..]
        )));
    }
    Ok(data
        .chunks_exact(dim)
        .map(|row| {
            let mut v = row.to_vec();
            l2_normalize(&mut v);
            v
        })
        .collect())
}

fn ort_failed(e: ort::Error) -> InferenceError {
    InferenceError(e.to_string())
}
