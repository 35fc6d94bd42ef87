//! The model bundle on disk, in the layout immich publishes for its CLIP models:
//!
//! ```text
//! config.json                    open_clip model config: embed_dim, text_cfg.context_length, ...
//! visual/model.onnx              image tower
//! visual/preprocess_cfg.json     size, mean, std, interpolation, resize_mode, fill_color
//! textual/model.onnx             text tower
//! textual/tokenizer.json         HF tokenizers file
//! textual/tokenizer_config.json  names the pad token
//! ```
//!
//! Each function reads only the files of the tower it uses.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use super::onnx::SessionError;

/// Why a model bundle cannot be used. Every message names the file and the problem.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model file {} is missing: {what} (is MODEL_DIR pointing at a bundle in immich's layout?)", .path.display())]
    MissingFile { path: PathBuf, what: &'static str },
    #[error("cannot read {}: {message}", .path.display())]
    Unreadable { path: PathBuf, message: String },
    #[error("{} is not valid JSON for {what}: {message}", .path.display())]
    BadJson { path: PathBuf, what: &'static str, message: String },
    #[error("{}: {problem}", .path.display())]
    Invalid { path: PathBuf, problem: String },
    #[error("{}: unknown interpolation {value:?}; supported: bicubic, bilinear", .path.display())]
    UnknownInterpolation { path: PathBuf, value: String },
    #[error("{}: unknown resize_mode {value:?}; supported: shortest, squash, longest", .path.display())]
    UnknownResizeMode { path: PathBuf, value: String },
    #[error("{}: the {tower} tower gives {actual}-dimensional embeddings but {expected_from} says {expected}", .path.display())]
    DimMismatch { path: PathBuf, tower: &'static str, actual: usize, expected: usize, expected_from: String },
    #[error("{}: cannot feed model input {input:?}: {detail}", .path.display())]
    UnsupportedInput { path: PathBuf, input: String, detail: String },
    #[error("{}: cannot use model output: {detail}", .path.display())]
    UnsupportedOutput { path: PathBuf, detail: String },
    #[error("{}: tokenizer cannot be loaded: {message}", .path.display())]
    Tokenizer { path: PathBuf, message: String },
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// The bundle's top-level model config.
const CONFIG_FILE: &str = "config.json";

/// A tower of the bundle. Each function loads, and fetches from S3, only its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tower {
    Visual,
    Textual,
}

impl Tower {
    fn dir(self) -> &'static str {
        match self {
            Tower::Visual => "visual",
            Tower::Textual => "textual",
        }
    }

    /// Whether this tower needs a bundle file, given by its `/`-separated path relative to the root.
    pub fn needs(self, relative: &str) -> bool {
        relative == CONFIG_FILE || relative.strip_prefix(self.dir()).is_some_and(|rest| rest.starts_with('/'))
    }
}

/// Paths of a bundle; nothing is read until a tower asks for its files.
#[derive(Debug, Clone)]
pub struct ModelBundle {
    root: PathBuf,
}

impl ModelBundle {
    /// A bundle rooted at `root`; fails if `config.json` is not there.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, ModelError> {
        let bundle = ModelBundle { root: root.into() };
        require(&bundle.config_path(), "the model config (config.json with embed_dim)")?;
        Ok(bundle)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A readable model name: the bundle folder's name (immich names them `ViT-B-32__openai`).
    pub fn name(&self) -> String {
        self.root
            .canonicalize()
            .unwrap_or_else(|_| self.root.clone())
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".to_string())
    }

    fn tower_file(&self, tower: Tower, name: &str) -> PathBuf {
        self.root.join(tower.dir()).join(name)
    }
    pub fn config_path(&self) -> PathBuf {
        self.root.join(CONFIG_FILE)
    }
    pub fn visual_model_path(&self) -> PathBuf {
        self.tower_file(Tower::Visual, "model.onnx")
    }
    pub fn preprocess_path(&self) -> PathBuf {
        self.tower_file(Tower::Visual, "preprocess_cfg.json")
    }
    pub fn textual_model_path(&self) -> PathBuf {
        self.tower_file(Tower::Textual, "model.onnx")
    }
    pub fn tokenizer_path(&self) -> PathBuf {
        self.tower_file(Tower::Textual, "tokenizer.json")
    }
    pub fn tokenizer_config_path(&self) -> PathBuf {
        self.tower_file(Tower::Textual, "tokenizer_config.json")
    }

    pub fn model_config(&self) -> Result<ModelConfig, ModelError> {
        let path = self.config_path();
        let raw: RawModelConfig = read_json(&path, "the model config with embed_dim")?;
        let embed_dim = raw.embed_dim.filter(|d| *d > 0).ok_or_else(|| ModelError::Invalid {
            path: path.clone(),
            problem: "`embed_dim` is missing or zero".into(),
        })?;
        let text = raw.text_cfg.unwrap_or_default();
        let context_length = match text.context_length {
            Some(0) => return Err(ModelError::Invalid { path, problem: "`text_cfg.context_length` is zero".into() }),
            Some(n) => n,
            None => DEFAULT_CONTEXT_LENGTH,
        };
        let canonicalize = text.tokenizer_kwargs.and_then(|k| k.clean).as_deref() == Some("canonicalize");
        Ok(ModelConfig { embed_dim, context_length, canonicalize })
    }

    pub fn preprocess_config(&self) -> Result<PreprocessConfig, ModelError> {
        let path = self.preprocess_path();
        let raw: RawPreprocessConfig = read_json(&path, "the image preprocessing config")?;
        PreprocessConfig::from_raw(raw, &path)
    }

    /// The pad token immich pads with: `pad_token` of `tokenizer_config.json`.
    /// Without that file the tokenizer's own padding setting, else id 0, is used.
    pub fn pad_token(&self) -> Result<Option<String>, ModelError> {
        let path = self.tokenizer_config_path();
        if !path.is_file() {
            return Ok(None);
        }
        let raw: Value = read_json(&path, "the tokenizer config")?;
        Ok(match raw.get("pad_token") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Object(o)) => o.get("content").and_then(Value::as_str).map(str::to_string),
            _ => None,
        })
    }
}

/// Which model made a collection's vectors: its name and a hash of its `config.json`. Both towers
/// have the config, so ingest and search compute the same identity. Two models with another
/// dimension already differ in the schema; this catches the ones with the same dimension
/// (ViT-B-32 openai vs laion2b), whose vectors would mix silently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelIdentity {
    pub name: String,
    /// SHA-256 of the config with its keys sorted and no whitespace (hex, 16 digits), so
    /// reformatting the file does not change it.
    pub config_hash: String,
}

impl std::fmt::Display for ModelIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (config sha256 {})", self.name, self.config_hash)
    }
}

impl ModelBundle {
    /// The identity recorded in the collection; `name` overrides the bundle folder's name.
    pub fn identity(&self, name: Option<&str>) -> Result<ModelIdentity, ModelError> {
        use sha2::{Digest, Sha256};
        let config: Value = read_json(&self.config_path(), "the model config with embed_dim")?;
        let digest = Sha256::digest(canonical_json(&config).as_bytes());
        Ok(ModelIdentity {
            name: name.map(str::to_string).unwrap_or_else(|| self.name()),
            config_hash: hex::encode(&digest[..8]),
        })
    }
}

/// JSON with object keys sorted at every level and no whitespace.
fn canonical_json(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            let inner: Vec<String> =
                entries.iter().map(|(k, v)| format!("{}:{}", Value::String((*k).clone()), canonical_json(v))).collect();
            format!("{{{}}}", inner.join(","))
        }
        Value::Array(items) => format!("[{}]", items.iter().map(canonical_json).collect::<Vec<_>>().join(",")),
        other => other.to_string(),
    }
}

/// open_clip's default text context, used when `text_cfg.context_length` is absent (as immich does).
pub const DEFAULT_CONTEXT_LENGTH: usize = 77;

/// What the towers need from `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub embed_dim: usize,
    pub context_length: usize,
    /// `text_cfg.tokenizer_kwargs.clean == "canonicalize"` (SigLIP): lowercase and drop punctuation.
    pub canonicalize: bool,
}

#[derive(Deserialize)]
struct RawModelConfig {
    embed_dim: Option<usize>,
    text_cfg: Option<RawTextCfg>,
}

#[derive(Deserialize, Default)]
struct RawTextCfg {
    context_length: Option<usize>,
    tokenizer_kwargs: Option<RawTokenizerKwargs>,
}

#[derive(Deserialize)]
struct RawTokenizerKwargs {
    clean: Option<String>,
}

/// Resampling filter of the resize step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interpolation {
    /// Pillow's antialiased bicubic (a = -0.5), the CLIP default.
    Bicubic,
    /// Pillow's antialiased bilinear.
    Bilinear,
}

/// How the image is brought to the model's size (open_clip's `resize_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeMode {
    /// Short side to the model size, keep the aspect ratio, center-crop (CLIP, most immich models).
    Shortest,
    /// Straight to the model size, aspect ratio not kept (SigLIP).
    Squash,
    /// Long side to the model size, keep the aspect ratio, pad with `fill_color`.
    Longest,
}

/// The image preprocessing a model expects, from `visual/preprocess_cfg.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct PreprocessConfig {
    pub height: u32,
    pub width: u32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub interpolation: Interpolation,
    pub resize_mode: ResizeMode,
    pub fill_color: u8,
}

#[derive(Deserialize)]
struct RawPreprocessConfig {
    size: Value,
    mode: Option<String>,
    mean: Vec<f32>,
    std: Vec<f32>,
    interpolation: Option<String>,
    resize_mode: Option<String>,
    fill_color: Option<Value>,
}

impl PreprocessConfig {
    fn from_raw(raw: RawPreprocessConfig, path: &Path) -> Result<Self, ModelError> {
        let invalid = |problem: String| ModelError::Invalid { path: path.to_path_buf(), problem };
        let (height, width) = match &raw.size {
            Value::Number(n) => {
                let s = n
                    .as_u64()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| invalid(format!("`size` {n} is not a positive integer")))?;
                (s, s)
            }
            Value::Array(a) if a.len() == 2 => {
                let dim = |v: &Value| v.as_u64().filter(|s| *s > 0);
                match (dim(&a[0]), dim(&a[1])) {
                    (Some(h), Some(w)) => (h, w),
                    _ => {
                        return Err(invalid(format!(
                            "`size` {} must be two positive integers [height, width]",
                            raw.size
                        )))
                    }
                }
            }
            other => return Err(invalid(format!("`size` {other} must be an integer or [height, width]"))),
        };
        if height > 4096 || width > 4096 {
            return Err(invalid(format!("`size` {height}x{width} is larger than any CLIP model (max 4096)")));
        }
        if let Some(mode) = raw.mode.as_deref().filter(|m| *m != "RGB") {
            return Err(invalid(format!("`mode` {mode:?} is not supported; only \"RGB\" is")));
        }
        let triple = |name: &str, v: &[f32]| -> Result<[f32; 3], ModelError> {
            match v {
                [a, b, c] => Ok([*a, *b, *c]),
                [a] => Ok([*a, *a, *a]),
                _ => Err(invalid(format!("`{name}` must have 1 or 3 values, found {}", v.len()))),
            }
        };
        let mean = triple("mean", &raw.mean)?;
        let std = triple("std", &raw.std)?;
        if std.iter().any(|s| !s.is_finite() || *s <= 0.0) {
            return Err(invalid(format!("`std` {std:?} must be positive")));
        }
        let interpolation = match raw.interpolation.as_deref().unwrap_or("bicubic") {
            "bicubic" => Interpolation::Bicubic,
            "bilinear" => Interpolation::Bilinear,
            other => return Err(ModelError::UnknownInterpolation { path: path.to_path_buf(), value: other.into() }),
        };
        let resize_mode = match raw.resize_mode.as_deref().unwrap_or("shortest") {
            "shortest" => ResizeMode::Shortest,
            "squash" => ResizeMode::Squash,
            "longest" => ResizeMode::Longest,
            other => return Err(ModelError::UnknownResizeMode { path: path.to_path_buf(), value: other.into() }),
        };
        let fill_color = match raw.fill_color {
            None => Some(0),
            Some(Value::Number(n)) => n.as_u64().filter(|v| *v <= 255).map(|v| v as u8),
            Some(Value::Array(a)) if !a.is_empty() && a.iter().all(|v| v == &a[0]) => {
                a[0].as_u64().filter(|v| *v <= 255).map(|v| v as u8)
            }
            Some(_) => None,
        }
        .ok_or_else(|| invalid("`fill_color` must be one grey level 0..=255".into()))?;
        Ok(PreprocessConfig {
            height: height as u32,
            width: width as u32,
            mean,
            std,
            interpolation,
            resize_mode,
            fill_color,
        })
    }
}

pub(crate) fn require(path: &Path, what: &'static str) -> Result<(), ModelError> {
    if path.is_file() {
        Ok(())
    } else {
        Err(ModelError::MissingFile { path: path.to_path_buf(), what })
    }
}

fn read_json<T: DeserializeOwned>(path: &Path, what: &'static str) -> Result<T, ModelError> {
    require(path, what)?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| ModelError::Unreadable { path: path.to_path_buf(), message: e.to_string() })?;
    serde_json::from_str(&text).map_err(|e| ModelError::BadJson {
        path: path.to_path_buf(),
        what,
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_tower_needs_only_its_files_and_the_config() {
        assert!(Tower::Visual.needs("config.json") && Tower::Visual.needs("visual/model.onnx"));
        assert!(!Tower::Visual.needs("textual/model.onnx") && !Tower::Visual.needs("visualx/model.onnx"));
        assert!(Tower::Textual.needs("textual/tokenizer.json") && !Tower::Textual.needs("visual/preprocess_cfg.json"));
    }

    fn preprocess(json: &str) -> Result<PreprocessConfig, ModelError> {
        PreprocessConfig::from_raw(serde_json::from_str(json).unwrap(), Path::new("visual/preprocess_cfg.json"))
    }

    #[test]
    fn the_identity_ignores_formatting_and_changes_with_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = ModelBundle { root: dir.path().to_path_buf() };
        let write = |text: &str| std::fs::write(dir.path().join(CONFIG_FILE), text).unwrap();
        write(r#"{"embed_dim": 512, "text_cfg": {"width": 512, "context_length": 77}}"#);
        let first = bundle.identity(Some("ViT-B-32__openai")).unwrap();
        write("{\n  \"text_cfg\": {\"context_length\": 77, \"width\": 512},\n  \"embed_dim\": 512\n}");
        assert_eq!(bundle.identity(Some("ViT-B-32__openai")).unwrap(), first);
        write(r#"{"embed_dim": 512, "text_cfg": {"width": 768, "context_length": 77}}"#);
        assert_ne!(bundle.identity(Some("ViT-B-32__openai")).unwrap().config_hash, first.config_hash);
        assert_eq!(first.to_string(), format!("ViT-B-32__openai (config sha256 {})", first.config_hash));
        assert_eq!(first.config_hash.len(), 16);
    }

    #[test]
    fn immich_openai_config_parses() {
        let cfg = preprocess(
            r#"{"size": [224, 224], "mode": "RGB", "mean": [0.48145466, 0.4578275, 0.40821073],
                "std": [0.26862954, 0.26130258, 0.27577711], "interpolation": "bicubic",
                "resize_mode": "shortest", "fill_color": 0}"#,
        )
        .unwrap();
        assert_eq!((cfg.height, cfg.width), (224, 224));
        assert_eq!(cfg.interpolation, Interpolation::Bicubic);
        assert_eq!(cfg.resize_mode, ResizeMode::Shortest);
        assert_eq!(cfg.mean[0], 0.48145466);
    }

    #[test]
    fn siglip_squash_and_integer_size_parse() {
        let cfg = preprocess(r#"{"size": 256, "mean": [0.5,0.5,0.5], "std": [0.5,0.5,0.5], "resize_mode": "squash"}"#)
            .unwrap();
        assert_eq!((cfg.height, cfg.width), (256, 256));
        assert_eq!(cfg.resize_mode, ResizeMode::Squash);
        assert_eq!(cfg.interpolation, Interpolation::Bicubic);
    }

    #[test]
    fn unknown_interpolation_names_file_and_value() {
        let err = preprocess(r#"{"size": 224, "mean": [0.5], "std": [0.5], "interpolation": "lanczos9"}"#).unwrap_err();
        assert!(matches!(err, ModelError::UnknownInterpolation { .. }));
        let msg = err.to_string();
        assert!(msg.contains("preprocess_cfg.json") && msg.contains("lanczos9"), "{msg}");
    }

    #[test]
    fn bad_values_are_invalid() {
        for json in [
            r#"{"size": [224], "mean": [0.5], "std": [0.5]}"#,
            r#"{"size": 224, "mean": [0.5, 0.5], "std": [0.5]}"#,
            r#"{"size": 224, "mean": [0.5], "std": [0.0]}"#,
            r#"{"size": 224, "mean": [0.5], "std": [0.5], "mode": "L"}"#,
            r#"{"size": 224, "mean": [0.5], "std": [0.5], "resize_mode": "fit"}"#,
        ] {
            assert!(preprocess(json).is_err(), "{json} should be rejected");
        }
    }
}
