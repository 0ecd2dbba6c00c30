//! Files written beside their destination and renamed into place when complete.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::Error;

/// A new file beside a destination, removed on drop unless persisted (renamed into place).
pub(crate) struct TempPath {
    path: PathBuf,
    file: Option<File>,
}

impl TempPath {
    /// `DIR/.NAME.tmp-XXXXXX` for destination `DIR/NAME`.
    pub(crate) fn beside(dest: &Path) -> Result<TempPath, Error> {
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let name = dest.file_name().ok_or_else(|| {
            Error::InvalidArgument(format!("{} does not name a file", dest.display()))
        })?;
        let mut prefix = OsString::from(".");
        prefix.push(name);
        TempPath::in_dir(dir, &prefix)
    }

    pub(super) fn in_dir(dir: &Path, prefix: &OsStr) -> Result<TempPath, Error> {
        let mut attempt = 0u32;
        loop {
            let mut name = prefix.to_os_string();
            name.push(format!(".tmp-{:08x}", random_u32() ^ attempt));
            let path = dir.join(name);
            match File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(file) => {
                    return Ok(TempPath {
                        path,
                        file: Some(file),
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 100 => {
                    attempt += 1;
                }
                Err(e) => {
                    return Err(Error::io(
                        format!("creating a temporary file in {}", dir.display()),
                        e,
                    ))
                }
            }
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// A handle to the file.
    pub(crate) fn file(&self) -> Result<File, Error> {
        match &self.file {
            Some(f) => f
                .try_clone()
                .map_err(Error::io_with(format!("opening {}", self.path.display()))),
            None => File::options()
                .write(true)
                .open(&self.path)
                .map_err(Error::io_with(format!("opening {}", self.path.display()))),
        }
    }

    /// Renames the file to `dest` (same directory, so atomic).
    pub(crate) fn persist(mut self, dest: &Path) -> Result<(), Error> {
        self.file.take();
        std::fs::rename(&self.path, dest).map_err(Error::io_with(format!(
            "renaming {} to {}",
            self.path.display(),
            dest.display()
        )))?;
        self.path = PathBuf::new();
        Ok(())
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A value that differs between calls and processes (for temp names, not for secrets).
pub(crate) fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    h.finish() as u32
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn temp_paths_are_removed_unless_persisted() {
        let dir = crate::spawn::TempDir::new(&std::env::temp_dir()).unwrap();
        let dest = dir.path().join("disk.raw");
        let t = TempPath::beside(&dest).unwrap();
        let p = t.path().to_owned();
        assert!(p
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with(".disk.raw.tmp-"));
        assert!(p.exists());
        drop(t);
        assert!(!p.exists());
        let t = TempPath::beside(&dest).unwrap();
        t.file().unwrap().write_all(b"x").unwrap();
        t.persist(&dest).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"x");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
