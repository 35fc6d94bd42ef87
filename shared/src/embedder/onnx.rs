//! ONNX Runtime: finding the shared library, one process-wide environment, and sessions.
//!
//! `ort` is built with `load-dynamic`: the library is not linked in but loaded at run time,
//! because ort's prebuilt binaries need a newer glibc than Lambda's provided.al2023 and
//! cannot be downloaded here. The project pins the library from the `onnxruntime` wheel.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;

/// The ONNX Runtime release the project is built and tested against, from `onnxruntime.version`
/// at the repository root (read by `build.rs`), where every script reads it too.
pub const ORT_VERSION: &str = env!("ORT_VERSION");
/// File name of the shared library inside the wheel and in every place we look.
pub const ORT_LIBRARY: &str = concat!("libonnxruntime.so.", env!("ORT_VERSION"));
/// Where `scripts/install-onnxruntime` puts the library, relative to the repository root.
pub const ORT_LOCAL_DIR: &str = ".local/onnxruntime";
/// The command that installs it.
pub const ORT_INSTALL_HINT: &str =
    "run `bash scripts/install-onnxruntime` in the repository (or set ORT_DYLIB_PATH to a libonnxruntime.so 1.22+)";

/// How to find ONNX Runtime and how many threads a session may use.
#[derive(Debug, Clone, Default)]
pub struct RuntimeOptions {
    /// Explicit library path (`ORT_DYLIB_PATH`); otherwise the default places are searched.
    pub dylib_path: Option<PathBuf>,
    /// Threads for one inference (`ORT_INTRA_THREADS`); default: the available cores.
    pub intra_threads: Option<usize>,
}

impl RuntimeOptions {
    pub fn intra_threads(&self) -> usize {
        self.intra_threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum RuntimeError {
    #[error("ONNX Runtime library not found; looked in: {}; to install it, {ORT_INSTALL_HINT}", display_paths(.searched))]
    NotFound { searched: Vec<PathBuf> },
    #[error("ORT_DYLIB_PATH points to {}, which does not exist; {ORT_INSTALL_HINT}", .path.display())]
    ExplicitMissing { path: PathBuf },
    #[error("could not load ONNX Runtime from {}: {message}", .path.display())]
    Load { path: PathBuf, message: String },
}

fn display_paths(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

/// The checkout this binary was built from; `scripts/install-onnxruntime` puts the library under it.
const BUILD_CHECKOUT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// Places the library is looked for, in order, when no explicit path is given: beside the
/// executable (a Lambda zip), `/opt/lib` (a Lambda layer), then `.local/onnxruntime/` of the
/// checkout the binary was built from. Only places the deployment or the builder put there: never
/// the current directory or its parents, where anyone who can write to `/tmp` could plant a library.
pub fn default_library_locations() -> Vec<PathBuf> {
    let mut places = Vec::new();
    if let Some(dir) = std::env::current_exe().ok().and_then(|exe| exe.parent().map(Path::to_path_buf)) {
        places.push(dir.join(ORT_LIBRARY));
        places.push(dir.join("lib").join(ORT_LIBRARY));
    }
    places.push(Path::new("/opt/lib").join(ORT_LIBRARY));
    places.push(Path::new(BUILD_CHECKOUT).join(ORT_LOCAL_DIR).join(ORT_LIBRARY));
    places
}

/// The library to load: the explicit path if given (it must exist), else the first default place that exists.
pub fn locate_library(explicit: Option<&Path>) -> Result<PathBuf, RuntimeError> {
    if let Some(path) = explicit {
        return if path.is_file() {
            Ok(path.to_path_buf())
        } else {
            Err(RuntimeError::ExplicitMissing { path: path.to_path_buf() })
        };
    }
    let searched = default_library_locations();
    searched.iter().find(|p| p.is_file()).cloned().ok_or(RuntimeError::NotFound { searched })
}

static ENVIRONMENT: OnceLock<Result<Environment, RuntimeError>> = OnceLock::new();

/// The process-wide ONNX Runtime environment, loading the library on first use.
pub fn environment(options: &RuntimeOptions) -> Result<&'static Environment, RuntimeError> {
    ENVIRONMENT
        .get_or_init(|| {
            return_large_frees_to_the_os();
            let path = locate_library(options.dylib_path.as_deref())?;
            let load = |message: String| RuntimeError::Load { path: path.clone(), message };
            ort::init_from(&path)
                .map_err(|e| load(e.to_string()))?
                .with_name("clip-search")
                .build()
                .map_err(|e| load(e.to_string()))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Makes glibc serve every allocation of 128 KiB or more with its own mapping, returned to the
/// OS when freed. By default glibc raises that threshold as large blocks are freed, so the
/// hundreds of megabytes a session load parses and then frees (the protobuf copy of the weights
/// before ONNX Runtime prepacks them) stay in the heap, fragmented: measured on ViT-B/32, peak RSS
/// fell from about 600 MB to 416 MB (the model is 335 MB). Inference speed is unchanged; a large
/// decode buffer now costs its page faults each time (about 10% of a 12 MP JPEG's decode).
fn return_large_frees_to_the_os() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before any model is loaded.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Builds a CPU session for `model`: full graph optimisation, intra-op threads from `options`.
pub fn build_session(model: &Path, options: &RuntimeOptions) -> Result<Session, SessionError> {
    let env = environment(options)?;
    let ort_err = |e: ort::Error| SessionError::Ort { path: model.to_path_buf(), message: e.to_string() };
    Session::builder(env)
        .map_err(ort_err)?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(|e| ort_err(e.into()))?
        .with_intra_threads(options.intra_threads())
        .map_err(|e| ort_err(e.into()))?
        .commit_from_file(model)
        .map_err(ort_err)
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("ONNX Runtime could not load {}: {message}", .path.display())]
    Ort { path: PathBuf, message: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_path_that_does_not_exist_is_named() {
        let err = locate_library(Some(Path::new("/nowhere/libonnxruntime.so"))).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/nowhere/libonnxruntime.so"), "{msg}");
        assert!(msg.contains("scripts/install-onnxruntime"), "{msg}");
    }

    #[test]
    fn default_places_are_the_deployment_and_the_build_checkout_never_the_current_directory() {
        let places = default_library_locations();
        assert!(places.contains(&Path::new("/opt/lib").join(ORT_LIBRARY)));
        let checkout = Path::new(BUILD_CHECKOUT).join(ORT_LOCAL_DIR).join(ORT_LIBRARY);
        assert!(places.contains(&checkout), "{places:?}");
        assert_eq!(places.iter().filter(|p| p.ends_with(Path::new(ORT_LOCAL_DIR).join(ORT_LIBRARY))).count(), 1);
        // Nothing else, whatever the current directory: beside the executable, /opt/lib, the checkout.
        let exe_dir = std::env::current_exe().unwrap().parent().unwrap().to_path_buf();
        assert_eq!(places.len(), 4, "{places:?}");
        assert!(
            places
                .iter()
                .all(|p| p.starts_with(&exe_dir) || p.starts_with("/opt/lib") || p.starts_with(BUILD_CHECKOUT)),
            "{places:?}"
        );
    }
}
