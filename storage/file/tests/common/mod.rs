//! Helpers shared by the file log's integration tests.

use std::fs;
use std::path::{Path, PathBuf};

/// The segment files (`*.wal`) in `dir`, in log order.
pub(crate) fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .expect("listing")
        .map(|e| e.expect("listing").path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    files.sort();
    files
}
