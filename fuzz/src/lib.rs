//! Support crate of roomcast's fuzz targets: the checks they run, shared
//! with the stable corpus replay test `tests/fuzz_corpus.rs`.

pub mod checks;
