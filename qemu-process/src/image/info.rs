//! What qemu-img reports and changes about one image: info, create, resize, check and internal
//! snapshots.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use qemu_cmdline::{
    Format, ImgCheck, ImgCreate, ImgInfo, ImgResize, ImgSnapshot, Repair, Size, SnapshotAction,
};
use serde::{Deserialize, Serialize};

use crate::error::Error;

use super::child::RunningChild;
use super::{exists, QemuImg};

/// What `qemu-img info --output=json` says about an image. Fields qemu-img adds in later
/// versions are ignored; fields older versions leave out are `None`/empty.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ImageInfo {
    /// The file name as qemu-img opened it.
    pub filename: String,
    /// The format.
    pub format: Format,
    /// The size the guest sees, in bytes.
    pub virtual_size: u64,
    /// The bytes the file takes on disk (absent for some protocols).
    #[serde(default)]
    pub actual_size: Option<u64>,
    /// The cluster size (qcow2, qed, vdi, vhdx, vmdk).
    #[serde(default)]
    pub cluster_size: Option<u64>,
    /// Whether the image was not closed cleanly (qcow2 lazy refcounts, qed).
    #[serde(default, rename = "dirty-flag")]
    pub dirty: bool,
    /// Whether the image is encrypted.
    #[serde(default)]
    pub encrypted: bool,
    /// The backing file as recorded in the image.
    #[serde(default)]
    pub backing_filename: Option<String>,
    /// The backing file's path, resolved relative to the image.
    #[serde(default)]
    pub full_backing_filename: Option<String>,
    /// The backing file's format as recorded in the image.
    #[serde(default)]
    pub backing_filename_format: Option<String>,
    /// Internal snapshots (qcow2).
    #[serde(default)]
    pub snapshots: Vec<SnapshotInfo>,
    /// Format-specific details (`{"type": "qcow2", "data": {"compat": "1.1", ...}}`).
    #[serde(default)]
    pub format_specific: Option<serde_json::Value>,
    /// The images below this one, nearest first (filled by [`QemuImg::info`]; serialized, never
    /// read from qemu-img's output).
    #[serde(skip_deserializing, skip_serializing_if = "Vec::is_empty")]
    pub backing_chain: Vec<ImageInfo>,
}

/// An internal snapshot of a qcow2 image.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct SnapshotInfo {
    /// The numeric id, as text.
    pub id: String,
    /// The name.
    pub name: String,
    /// The size of the saved VM state (0 for a disk-only snapshot).
    #[serde(default)]
    pub vm_state_size: u64,
    /// When it was taken: seconds since the epoch.
    #[serde(default)]
    pub date_sec: u64,
    /// When it was taken: nanoseconds.
    #[serde(default)]
    pub date_nsec: u64,
    /// The guest clock when it was taken: seconds.
    #[serde(default)]
    pub vm_clock_sec: u64,
    /// The guest clock when it was taken: nanoseconds.
    #[serde(default)]
    pub vm_clock_nsec: u64,
}

/// What `qemu-img check --output=json` found.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct CheckReport {
    /// The file name.
    #[serde(default)]
    pub filename: String,
    /// The format.
    #[serde(default)]
    pub format: String,
    /// Errors that stopped parts of the check.
    #[serde(default)]
    pub check_errors: u64,
    /// Corruptions found (and not repaired).
    #[serde(default)]
    pub corruptions: u64,
    /// Leaked clusters found (and not repaired): wasted space, no data lost.
    #[serde(default)]
    pub leaks: u64,
    /// Corruptions repaired.
    #[serde(default)]
    pub corruptions_fixed: u64,
    /// Leaks repaired.
    #[serde(default)]
    pub leaks_fixed: u64,
    /// Clusters of the virtual disk.
    #[serde(default)]
    pub total_clusters: Option<u64>,
    /// Clusters allocated.
    #[serde(default)]
    pub allocated_clusters: Option<u64>,
    /// Where the image's data ends in the file.
    #[serde(default)]
    pub image_end_offset: Option<u64>,
}

impl CheckReport {
    /// No corruption, no leak, no check error.
    pub fn is_clean(&self) -> bool {
        self.check_errors == 0 && self.corruptions == 0 && self.leaks == 0
    }
}

impl QemuImg {
    /// `qemu-img info` of the image at `path`, probing its format, with its backing chain.
    pub fn info(&self, path: &Path) -> Result<ImageInfo, Error> {
        self.info_with(path, None, self.force_share)
    }

    /// `qemu-img info` with the format given (no probing) and, with `force_share`, on an image
    /// a running QEMU holds open (`-U`; the answer may be stale).
    pub fn info_with(
        &self,
        path: &Path,
        format: Option<&Format>,
        force_share: bool,
    ) -> Result<ImageInfo, Error> {
        exists(path, "image")?;
        let mut cmd = ImgInfo::new(path)
            .backing_chain(true)
            .force_share(force_share || self.force_share);
        if let Some(f) = format {
            cmd = cmd.format(f.clone());
        }
        let out = self.run(&cmd)?;
        parse_info(&out).map_err(|e| {
            Error::InvalidArgument(format!(
                "qemu-img info on {} printed JSON this library cannot read: {e}",
                path.display()
            ))
        })
    }

    /// Creates a new image of `format` and `size` at `path`. An existing file is an error (use
    /// [`QemuImg::resize`] or [`QemuImg::flash`] on it).
    pub fn create(&self, path: &Path, format: &Format, size: Size) -> Result<(), Error> {
        self.create_with(path, &ImgCreate::new(path, format.clone()).size(size))
    }

    /// Runs a prepared `qemu-img create` for `path` (backing files, options); an existing file
    /// at `path` is an error.
    pub fn create_with(&self, path: &Path, cmd: &ImgCreate) -> Result<(), Error> {
        if path.symlink_metadata().is_ok() {
            return Err(Error::InvalidArgument(format!(
                "{} already exists; an image is only created where there is no file",
                path.display()
            )));
        }
        let result = self.run(cmd).map(drop);
        if result.is_err() {
            // qemu-img may leave a partial file behind (an unknown option after the open).
            let _ = std::fs::remove_file(path);
        }
        result
    }

    /// Sets the virtual size of the image at `path`. Growing is refused when it may need more
    /// than the free space of the file system ([`Error::NoSpace`]); shrinking is refused unless
    /// `allow_shrink` ([`Error::ShrinkRefused`]). The format is probed once and passed
    /// explicitly. Returns the image's info after the resize.
    pub fn resize(&self, path: &Path, size: Size, allow_shrink: bool) -> Result<ImageInfo, Error> {
        let info = self.info(path)?;
        let current = info.virtual_size;
        let requested = size.bytes();
        if requested == current {
            return Ok(info);
        }
        if requested < current && !allow_shrink {
            return Err(Error::ShrinkRefused {
                path: path.to_owned(),
                current,
                requested,
            });
        }
        if requested > current {
            let needed = requested - current;
            let available = free_space(path)?;
            if needed > available {
                return Err(Error::NoSpace {
                    path: path.to_owned(),
                    needed,
                    available,
                });
            }
        }
        let cmd = ImgResize::new(path, size)
            .format(info.format.clone())
            .shrink(requested < current);
        self.run(&cmd)?;
        self.info_with(path, Some(&info.format), false)
    }

    /// Checks an image's consistency (qcow2, qed, vdi, vhdx, vmdk), repairing when asked. Formats
    /// without metadata (raw) are [`Error::Unsupported`].
    pub fn check(&self, path: &Path, repair: Option<Repair>) -> Result<CheckReport, Error> {
        if self.force_share && repair.is_some() {
            return Err(Error::InvalidArgument(format!(
                "repairing {} while sharing it with a running QEMU (force share): stop the VM \
                 first",
                path.display()
            )));
        }
        let info = self.info(path)?;
        let mut cmd = ImgCheck::new(path)
            .format(info.format.clone())
            .force_share(self.force_share);
        if let Some(r) = repair {
            cmd = cmd.repair(r);
        }
        let argv = self.argv(&cmd)?;
        let mut child = RunningChild::spawn(&argv, None, || self.missing_qemu_img())?;
        let mut out = Vec::new();
        child.read_stdout(|c| out.extend_from_slice(c))?;
        let (status, stderr) = child.wait()?;
        // 0: clean, 2: corruptions, 3: leaks (the report says which); 63: not supported.
        match status.code() {
            Some(0 | 2 | 3) => serde_json::from_slice(&out).map_err(|e| {
                Error::InvalidArgument(format!(
                    "qemu-img check printed JSON this library cannot read: {e}"
                ))
            }),
            Some(63) => Err(Error::Unsupported(format!(
                "checking {} ({} images have no metadata to check)",
                path.display(),
                info.format
            ))),
            _ => Err(Error::Image {
                argv: argv.to_vec(),
                status,
                stderr,
            }),
        }
    }

    /// Creates internal snapshot `name` of a qcow2 image (not while a VM uses it).
    pub fn snapshot_create(&self, path: &Path, name: &str) -> Result<(), Error> {
        self.snapshot(path, SnapshotAction::Create(name.into()))
    }

    /// The internal snapshots of an image.
    pub fn snapshot_list(&self, path: &Path) -> Result<Vec<SnapshotInfo>, Error> {
        Ok(self.info(path)?.snapshots)
    }

    /// Reverts the image to internal snapshot `name`.
    pub fn snapshot_apply(&self, path: &Path, name: &str) -> Result<(), Error> {
        self.snapshot(path, SnapshotAction::Apply(name.into()))
    }

    /// Deletes internal snapshot `name`.
    pub fn snapshot_delete(&self, path: &Path, name: &str) -> Result<(), Error> {
        self.snapshot(path, SnapshotAction::Delete(name.into()))
    }

    fn snapshot(&self, path: &Path, action: SnapshotAction) -> Result<(), Error> {
        // qemu-img before 10.0 has no `snapshot -f`; probe here, and only hand it a qcow2.
        let info = self.info(path)?;
        if info.format != Format::Qcow2 {
            return Err(Error::Unsupported(format!(
                "internal snapshots of {} ({} image; they need qcow2)",
                path.display(),
                info.format
            )));
        }
        self.run(&ImgSnapshot::new(path, action)).map(drop)
    }
}

/// Parses `qemu-img info --output=json --backing-chain` (a list, image first) or plain
/// `--output=json` (one object).
fn parse_info(out: &[u8]) -> Result<ImageInfo, serde_json::Error> {
    let value: serde_json::Value = serde_json::from_slice(out)?;
    match value {
        serde_json::Value::Array(items) => {
            let mut chain = items
                .into_iter()
                .map(serde_json::from_value::<ImageInfo>)
                .collect::<Result<Vec<_>, _>>()?
                .into_iter();
            let Some(mut top) = chain.next() else {
                return Err(serde::de::Error::custom("an empty list"));
            };
            top.backing_chain = chain.collect();
            Ok(top)
        }
        other => serde_json::from_value(other),
    }
}

/// Bytes free for unprivileged users on the file system holding `path` (or its directory).
fn free_space(path: &Path) -> Result<u64, Error> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::InvalidArgument(format!("{} has a NUL byte", path.display())))?;
    // SAFETY: statvfs is a plain C struct for which all-zero bytes are a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a valid, writable statvfs.
    let ret = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if ret != 0 {
        return Err(Error::io(
            format!("reading the free space of {}", path.display()),
            io::Error::last_os_error(),
        ));
    }
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_json_with_unknown_fields_and_a_backing_chain() {
        let json = br#"[
            {"virtual-size": 1073741824, "filename": "top.qcow2", "cluster-size": 65536,
             "format": "qcow2", "actual-size": 200704, "dirty-flag": false,
             "backing-filename": "base.raw", "full-backing-filename": "/i/base.raw",
             "backing-filename-format": "raw", "some-future-field": {"x": 1},
             "snapshots": [{"id": "1", "name": "clean", "vm-state-size": 0, "date-sec": 5,
                            "date-nsec": 6, "vm-clock-sec": 0, "vm-clock-nsec": 0,
                            "icount": 0}],
             "format-specific": {"type": "qcow2", "data": {"compat": "1.1"}}},
            {"virtual-size": 1073741824, "filename": "/i/base.raw", "format": "raw",
             "actual-size": 4096, "dirty-flag": false}
        ]"#;
        let info = parse_info(json).unwrap();
        assert_eq!(info.format, Format::Qcow2);
        assert_eq!(info.virtual_size, 1 << 30);
        assert_eq!(info.actual_size, Some(200704));
        assert_eq!(info.cluster_size, Some(65536));
        assert!(!info.dirty);
        assert_eq!(info.backing_filename.as_deref(), Some("base.raw"));
        assert_eq!(info.snapshots.len(), 1);
        assert_eq!(info.snapshots[0].name, "clean");
        assert_eq!(info.backing_chain.len(), 1);
        assert_eq!(info.backing_chain[0].format, Format::Raw);
        // A single object (no --backing-chain) and a minimal one parse too.
        let one = parse_info(br#"{"virtual-size": 1, "filename": "f", "format": "vmdk"}"#).unwrap();
        assert_eq!(one.format, Format::Vmdk);
        assert!(one.backing_chain.is_empty() && one.snapshots.is_empty());
        assert!(parse_info(b"[]").is_err());
        assert!(parse_info(br#"{"filename": "f"}"#).is_err());
    }

    #[test]
    fn free_space_is_a_number_and_bad_paths_are_errors() {
        assert!(free_space(&std::env::temp_dir()).unwrap() > 0);
        assert!(free_space(Path::new("/nonexistent/qm/x")).is_err());
    }
}
