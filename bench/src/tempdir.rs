//! A private scratch directory, removed with its contents on drop.

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// `$TMPDIR/qm-bench-<what>-<pid>`, mode 0700.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates the directory (replacing a stale one of the same name).
    pub fn new(what: &str) -> io::Result<TempDir> {
        let path = std::env::temp_dir().join(format!("qm-bench-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(TempDir(path))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
