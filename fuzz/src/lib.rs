//! The fuzz targets' bodies live in `targets.rs`, which `tests/tests/integration/fuzz_regressions.rs`
//! also compiles, so every committed crash input replays through the same function on stable.
pub mod targets;
