//! Replays the committed fuzz corpus (fuzz/corpus/<target>/) and the saved
//! regression inputs (fuzz/regressions/<target>/) through the same checks the
//! `cargo fuzz` targets run, on stable, so every `cargo test` exercises them
//! in seconds. The checks themselves live in fuzz/src/checks.rs, shared with
//! the fuzz crate; fuzz/README.md says how to fuzz for longer.

#[path = "../fuzz/src/checks.rs"]
mod checks;

use std::path::{Path, PathBuf};

/// Every file of `fuzz/<dir>/<target>/`, sorted; none when the directory is absent.
fn inputs(dir: &str, target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(dir).join(target);
    let Ok(entries) = std::fs::read_dir(&root) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect();
    files.sort();
    files
}

/// Runs `check` on every corpus and regression input of `target`, naming the
/// file that fails.
fn replay(target: &str, check: fn(&[u8])) {
    let corpus = inputs("corpus", target);
    assert!(!corpus.is_empty(), "fuzz/corpus/{target}/ is empty or missing");
    for path in corpus.iter().chain(&inputs("regressions", target)) {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        if std::panic::catch_unwind(|| check(&bytes)).is_err() {
            panic!("fuzz check {target} fails on {}", path.display());
        }
    }
}

#[test]
fn frame_decode_corpus() {
    replay("frame_decode", checks::frame_decode);
}

#[test]
fn http_head_corpus() {
    replay("http_head", checks::http_head);
}

#[test]
fn client_frame_corpus() {
    replay("client_frame", checks::client_frame);
}
