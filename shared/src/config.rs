//! Configuration read once from the environment, with defaults that work out of the box.

use std::path::PathBuf;

use crate::embedder::onnx::RuntimeOptions;

/// Default cap on decoded pixels: 100 megapixels, far above any camera, far below a bomb.
pub const DEFAULT_MAX_IMAGE_PIXELS: u64 = 100_000_000;

/// Settings shared by both functions.
#[derive(Debug, Clone)]
pub struct Config {
    /// Model bundle in immich's layout (`config.json`, `visual/`, `textual/`).
    pub model_dir: PathBuf,
    /// ONNX Runtime library and session settings.
    pub runtime: RuntimeOptions,
    /// Images whose header declares more pixels than this are refused before decoding.
    pub max_image_pixels: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} is not set: {hint}")]
    Missing { name: &'static str, hint: &'static str },
    #[error("{name}={value:?} is not valid: {expected}")]
    Invalid { name: &'static str, value: String, expected: &'static str },
}

impl Config {
    /// Reads `MODEL_DIR` (required), `ORT_DYLIB_PATH`, `ORT_INTRA_THREADS` and `MAX_IMAGE_PIXELS`.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Same as [`Config::from_env`] with the variables taken from `lookup` (for tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let model_dir = lookup("MODEL_DIR").filter(|v| !v.is_empty()).ok_or(ConfigError::Missing {
            name: "MODEL_DIR",
            hint: "point it at a model bundle in immich's layout, e.g. tests/fixtures/tiny-clip",
        })?;
        let intra_threads = match lookup("ORT_INTRA_THREADS").filter(|v| !v.is_empty()) {
            None => None,
            Some(v) => Some(parse_positive("ORT_INTRA_THREADS", &v, "a whole number of threads, at least 1")?),
        };
        let max_image_pixels = match lookup("MAX_IMAGE_PIXELS").filter(|v| !v.is_empty()) {
            None => DEFAULT_MAX_IMAGE_PIXELS,
            Some(v) => parse_positive("MAX_IMAGE_PIXELS", &v, "a whole number of pixels, at least 1")? as u64,
        };
        Ok(Config {
            model_dir: PathBuf::from(model_dir),
            runtime: RuntimeOptions {
                dylib_path: lookup("ORT_DYLIB_PATH").filter(|v| !v.is_empty()).map(PathBuf::from),
                intra_threads,
            },
            max_image_pixels,
        })
    }
}

fn parse_positive(name: &'static str, value: &str, expected: &'static str) -> Result<usize, ConfigError> {
    match value.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(ConfigError::Invalid { name, value: value.to_string(), expected }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_apply_when_only_the_model_is_given() {
        let c = config(&[("MODEL_DIR", "/models/clip")]).unwrap();
        assert_eq!(c.model_dir, PathBuf::from("/models/clip"));
        assert_eq!(c.max_image_pixels, DEFAULT_MAX_IMAGE_PIXELS);
        assert_eq!(c.runtime.intra_threads, None);
        assert_eq!(c.runtime.dylib_path, None);
    }

    #[test]
    fn missing_model_dir_says_what_to_set() {
        let err = config(&[]).unwrap_err().to_string();
        assert!(err.contains("MODEL_DIR is not set"), "{err}");
    }

    #[test]
    fn bad_numbers_name_the_variable() {
        let err = config(&[("MODEL_DIR", "m"), ("ORT_INTRA_THREADS", "zero")]).unwrap_err().to_string();
        assert!(err.contains("ORT_INTRA_THREADS=\"zero\""), "{err}");
        let err = config(&[("MODEL_DIR", "m"), ("MAX_IMAGE_PIXELS", "0")]).unwrap_err().to_string();
        assert!(err.contains("MAX_IMAGE_PIXELS"), "{err}");
    }
}
