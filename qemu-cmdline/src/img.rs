//! `qemu-img` command lines.
//!
//! File names are passed as separate arguments, which qemu-img does not split at commas. Two
//! things can still change their meaning, and both are neutralised by prefixing `./` to a
//! relative path: a leading `-` (read as an option) and a `:` before the first `/` (read as a
//! protocol prefix such as `nbd:` or `json:`). Values in `-o` are escaped like any QemuOpts
//! value.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use crate::render::{check_values, keyval_text, Grammar, Opt, Opts};
use crate::{Argv, Error, Format, PropValue, Props, Size};

/// A qemu-img invocation.
pub trait ImgCommand {
    /// The arguments after the program.
    fn args(&self) -> Result<Vec<OsString>, Error>;

    /// The argv for `qemu-img` found on `PATH`.
    fn build(&self) -> Result<Argv, Error> {
        self.build_with("qemu-img")
    }

    /// The argv for the qemu-img at `program`.
    fn build_with(&self, program: impl AsRef<OsStr>) -> Result<Argv, Error> {
        let program = program.as_ref().to_os_string();
        if program.as_bytes().contains(&0) {
            return Err(Error::NulByte {
                what: "qemu-img".into(),
                field: "program".into(),
            });
        }
        Ok(Argv {
            program,
            args: self.args()?,
        })
    }
}

/// A file name as qemu-img should see it; see the module documentation.
pub fn img_path(what: &str, field: &str, path: &OsStr) -> Result<OsString, Error> {
    let b = path.as_bytes();
    if b.is_empty() {
        return Err(Error::invalid(
            format!("{what} {field}"),
            "the path is empty",
        ));
    }
    if b.contains(&0) {
        return Err(Error::NulByte {
            what: what.to_string(),
            field: field.to_string(),
        });
    }
    let protocol_like = b
        .iter()
        .position(|&c| c == b':' || c == b'/')
        .is_some_and(|i| b[i] == b':');
    if b[0] != b'/' && (b[0] == b'-' || protocol_like) {
        let mut v = b"./".to_vec();
        v.extend_from_slice(b);
        Ok(OsString::from_vec(v))
    } else {
        Ok(path.to_os_string())
    }
}

fn format_name(what: &str, f: &Format) -> Result<OsString, Error> {
    if crate::escape::is_qapi_name(f.name()) {
        Ok(f.name().into())
    } else {
        Err(Error::invalid(
            format!("{what} format"),
            format!("{:?} is not a format name", f.name()),
        ))
    }
}

fn options_arg(what: &str, options: &Props) -> Result<Option<OsString>, Error> {
    if options.is_empty() {
        return Ok(None);
    }
    let opts = Opts::new(Grammar::QemuOpts, false).props(options.clone());
    let opt = Opt::opts("-o", format!("{what} -o"), opts.clone());
    let mut errors = Vec::new();
    check_values(&opt, false, &mut errors);
    for (k, v) in options.iter() {
        if matches!(v, PropValue::Map(_) | PropValue::List(_)) {
            errors.push(Error::invalid(
                format!("{what} -o {k}"),
                "qemu-img options take single values",
            ));
        }
    }
    Error::collect(errors)?;
    Ok(Some(keyval_text(&opts)))
}

/// `qemu-img info --output=json`: format, virtual size, backing chain, snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImgInfo {
    path: OsString,
    format: Option<Format>,
    backing_chain: bool,
    force_share: bool,
}

impl ImgInfo {
    /// Information about the image at `path`.
    pub fn new(path: impl AsRef<OsStr>) -> ImgInfo {
        ImgInfo {
            path: path.as_ref().into(),
            format: None,
            backing_chain: false,
            force_share: false,
        }
    }
    /// Opens the image as `format` instead of probing.
    pub fn format(mut self, format: Format) -> ImgInfo {
        self.format = Some(format);
        self
    }
    /// Reports every image of the backing chain (a JSON list).
    pub fn backing_chain(mut self, on: bool) -> ImgInfo {
        self.backing_chain = on;
        self
    }
    /// Reads an image a running QEMU holds open (`-U`).
    pub fn force_share(mut self, on: bool) -> ImgInfo {
        self.force_share = on;
        self
    }
}

impl ImgCommand for ImgInfo {
    fn args(&self) -> Result<Vec<OsString>, Error> {
        let what = "qemu-img info";
        let mut a: Vec<OsString> = vec!["info".into(), "--output=json".into()];
        if let Some(f) = &self.format {
            a.push("-f".into());
            a.push(format_name(what, f)?);
        }
        if self.backing_chain {
            a.push("--backing-chain".into());
        }
        if self.force_share {
            a.push("-U".into());
        }
        a.push(img_path(what, "path", &self.path)?);
        Ok(a)
    }
}

/// `qemu-img create`: a new image, optionally on a backing file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImgCreate {
    path: OsString,
    format: Format,
    size: Option<Size>,
    backing: Option<(OsString, Format)>,
    options: Props,
}

impl ImgCreate {
    /// A new image of `format` at `path`. Needs a size, a backing file, or both.
    pub fn new(path: impl AsRef<OsStr>, format: Format) -> ImgCreate {
        ImgCreate {
            path: path.as_ref().into(),
            format,
            size: None,
            backing: None,
            options: Props::new(),
        }
    }
    /// The virtual size (default: the backing file's).
    pub fn size(mut self, size: Size) -> ImgCreate {
        self.size = Some(size);
        self
    }
    /// A backing file and its format (`-b PATH -F FORMAT`). A relative backing path is
    /// relative to the new image's directory.
    pub fn backing(mut self, path: impl AsRef<OsStr>, format: Format) -> ImgCreate {
        self.backing = Some((path.as_ref().into(), format));
        self
    }
    /// A format option (`-o cluster_size=65536,preallocation=metadata`).
    pub fn option(mut self, key: impl Into<String>, value: impl Into<PropValue>) -> ImgCreate {
        self.options.set(key, value);
        self
    }
}

impl ImgCommand for ImgCreate {
    fn args(&self) -> Result<Vec<OsString>, Error> {
        let what = "qemu-img create";
        if self.size.is_none() && self.backing.is_none() {
            return Err(Error::invalid(
                format!("{what} size"),
                "a size is needed when there is no backing file",
            ));
        }
        let mut a: Vec<OsString> = vec![
            "create".into(),
            "-f".into(),
            format_name(what, &self.format)?,
        ];
        if let Some((path, format)) = &self.backing {
            a.push("-b".into());
            a.push(img_path(what, "backing", path)?);
            a.push("-F".into());
            a.push(format_name(what, format)?);
        }
        if let Some(o) = options_arg(what, &self.options)? {
            a.push("-o".into());
            a.push(o);
        }
        a.push(img_path(what, "path", &self.path)?);
        if let Some(s) = self.size {
            a.push(s.bytes().to_string().into());
        }
        Ok(a)
    }
}

/// `qemu-img resize`. Shrinking loses data, so it needs [`ImgResize::shrink`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImgResize {
    path: OsString,
    format: Option<Format>,
    size: Size,
    grow_by: bool,
    shrink: bool,
}

impl ImgResize {
    /// Sets the image's virtual size to `size`.
    pub fn new(path: impl AsRef<OsStr>, size: Size) -> ImgResize {
        ImgResize {
            path: path.as_ref().into(),
            format: None,
            size,
            grow_by: false,
            shrink: false,
        }
    }
    /// Grows the image by `size` (`+SIZE`).
    pub fn grow_by(path: impl AsRef<OsStr>, size: Size) -> ImgResize {
        ImgResize {
            grow_by: true,
            ..ImgResize::new(path, size)
        }
    }
    /// Opens the image as `format` instead of probing.
    pub fn format(mut self, format: Format) -> ImgResize {
        self.format = Some(format);
        self
    }
    /// Allows the new size to be smaller (`--shrink`); without it qemu-img refuses to shrink.
    pub fn shrink(mut self, allow: bool) -> ImgResize {
        self.shrink = allow;
        self
    }
}

impl ImgCommand for ImgResize {
    fn args(&self) -> Result<Vec<OsString>, Error> {
        let what = "qemu-img resize";
        let mut a: Vec<OsString> = vec!["resize".into()];
        if let Some(f) = &self.format {
            a.push("-f".into());
            a.push(format_name(what, f)?);
        }
        if self.shrink {
            a.push("--shrink".into());
        }
        a.push(img_path(what, "path", &self.path)?);
        let size = self.size.bytes().to_string();
        a.push(
            if self.grow_by {
                format!("+{size}")
            } else {
                size
            }
            .into(),
        );
        Ok(a)
    }
}

/// `qemu-img convert`: copies an image into a new one, changing format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImgConvert {
    src: OsString,
    src_format: Option<Format>,
    dst: OsString,
    dst_format: Format,
    progress: bool,
    compress: bool,
    force_share: bool,
    options: Props,
}

impl ImgConvert {
    /// Converts `src` into a new image `dst` of `dst_format`.
    pub fn new(src: impl AsRef<OsStr>, dst: impl AsRef<OsStr>, dst_format: Format) -> ImgConvert {
        ImgConvert {
            src: src.as_ref().into(),
            src_format: None,
            dst: dst.as_ref().into(),
            dst_format,
            progress: false,
            compress: false,
            force_share: false,
            options: Props::new(),
        }
    }
    /// Opens the source as `format` instead of probing.
    pub fn src_format(mut self, format: Format) -> ImgConvert {
        self.src_format = Some(format);
        self
    }
    /// Prints progress (`-p`).
    pub fn progress(mut self, on: bool) -> ImgConvert {
        self.progress = on;
        self
    }
    /// Compresses the output (`-c`, qcow2).
    pub fn compress(mut self, on: bool) -> ImgConvert {
        self.compress = on;
        self
    }
    /// Opens the source even while a running QEMU holds it (`-U`; the copy may be
    /// inconsistent if the guest writes meanwhile).
    pub fn force_share(mut self, on: bool) -> ImgConvert {
        self.force_share = on;
        self
    }
    /// An output format option (`-o`).
    pub fn option(mut self, key: impl Into<String>, value: impl Into<PropValue>) -> ImgConvert {
        self.options.set(key, value);
        self
    }
}

impl ImgCommand for ImgConvert {
    fn args(&self) -> Result<Vec<OsString>, Error> {
        let what = "qemu-img convert";
        let mut a: Vec<OsString> = vec!["convert".into()];
        if self.progress {
            a.push("-p".into());
        }
        if self.force_share {
            a.push("-U".into());
        }
        if let Some(f) = &self.src_format {
            a.push("-f".into());
            a.push(format_name(what, f)?);
        }
        a.push("-O".into());
        a.push(format_name(what, &self.dst_format)?);
        if self.compress {
            a.push("-c".into());
        }
        if let Some(o) = options_arg(what, &self.options)? {
            a.push("-o".into());
            a.push(o);
        }
        a.push(img_path(what, "src", &self.src)?);
        a.push(img_path(what, "dst", &self.dst)?);
        Ok(a)
    }
}

/// What `qemu-img check` may repair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repair {
    /// Leaked clusters only (safe).
    Leaks,
    /// Everything, including errors that may lose data.
    All,
}

/// `qemu-img check --output=json`: consistency of a qcow2/qed/vdi/vhdx image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImgCheck {
    path: OsString,
    format: Option<Format>,
    repair: Option<Repair>,
    force_share: bool,
}

impl ImgCheck {
    /// Checks the image at `path`.
    pub fn new(path: impl AsRef<OsStr>) -> ImgCheck {
        ImgCheck {
            path: path.as_ref().into(),
            format: None,
            repair: None,
            force_share: false,
        }
    }
    /// Opens the image as `format` instead of probing.
    pub fn format(mut self, format: Format) -> ImgCheck {
        self.format = Some(format);
        self
    }
    /// Repairs what is found (`-r leaks|all`).
    pub fn repair(mut self, repair: Repair) -> ImgCheck {
        self.repair = Some(repair);
        self
    }
    /// Opens the image even while a running QEMU holds it (`-U`; the result may be stale,
    /// and qemu-img refuses it together with a repair).
    pub fn force_share(mut self, on: bool) -> ImgCheck {
        self.force_share = on;
        self
    }
}

impl ImgCommand for ImgCheck {
    fn args(&self) -> Result<Vec<OsString>, Error> {
        let what = "qemu-img check";
        let mut a: Vec<OsString> = vec!["check".into(), "--output=json".into()];
        if self.force_share {
            a.push("-U".into());
        }
        if let Some(f) = &self.format {
            a.push("-f".into());
            a.push(format_name(what, f)?);
        }
        if let Some(r) = self.repair {
            a.push("-r".into());
            a.push(
                match r {
                    Repair::Leaks => "leaks",
                    Repair::All => "all",
                }
                .into(),
            );
        }
        a.push(img_path(what, "path", &self.path)?);
        Ok(a)
    }
}

/// What `qemu-img snapshot` does with internal snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotAction {
    /// Lists them (`-l`).
    List,
    /// Creates one (`-c NAME`).
    Create(String),
    /// Reverts the image to one (`-a NAME`).
    Apply(String),
    /// Deletes one (`-d NAME`).
    Delete(String),
}

/// `qemu-img snapshot`: internal snapshots of a qcow2 image (the VM must not be running).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImgSnapshot {
    path: OsString,
    format: Option<Format>,
    action: SnapshotAction,
}

impl ImgSnapshot {
    /// `action` on the image at `path`.
    pub fn new(path: impl AsRef<OsStr>, action: SnapshotAction) -> ImgSnapshot {
        ImgSnapshot {
            path: path.as_ref().into(),
            format: None,
            action,
        }
    }
    /// Opens the image as `format` instead of probing.
    pub fn format(mut self, format: Format) -> ImgSnapshot {
        self.format = Some(format);
        self
    }
}

impl ImgCommand for ImgSnapshot {
    fn args(&self) -> Result<Vec<OsString>, Error> {
        let what = "qemu-img snapshot";
        let mut a: Vec<OsString> = vec!["snapshot".into()];
        if let Some(f) = &self.format {
            a.push("-f".into());
            a.push(format_name(what, f)?);
        }
        let (flag, name) = match &self.action {
            SnapshotAction::List => ("-l", None),
            SnapshotAction::Create(n) => ("-c", Some(n)),
            SnapshotAction::Apply(n) => ("-a", Some(n)),
            SnapshotAction::Delete(n) => ("-d", Some(n)),
        };
        a.push(flag.into());
        if let Some(n) = name {
            if n.is_empty() || n.contains('\0') {
                return Err(Error::invalid(
                    format!("{what} name"),
                    "a snapshot name is non-empty and has no NUL byte",
                ));
            }
            a.push(n.into());
        }
        a.push(img_path(what, "path", &self.path)?);
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(argv: Argv) -> String {
        argv.to_string()
    }

    #[test]
    fn paths_are_protected() {
        let p = |x: &str| {
            img_path("w", "f", OsStr::new(x))
                .unwrap()
                .into_string()
                .unwrap()
        };
        assert_eq!(p("/a,b:c"), "/a,b:c");
        assert_eq!(p("a,b"), "a,b");
        assert_eq!(p("-x.img"), "./-x.img");
        assert_eq!(p("nbd:host"), "./nbd:host");
        assert_eq!(p("json:{}"), "./json:{}");
        assert_eq!(p("dir/a:b"), "dir/a:b");
        assert!(img_path("w", "f", OsStr::new("")).is_err());
        assert!(matches!(
            img_path("w", "f", OsStr::new("a\0b")),
            Err(Error::NulByte { .. })
        ));
    }

    #[test]
    fn golden_commands() {
        assert_eq!(
            s(ImgInfo::new("/i/a b.qcow2")
                .format(Format::Qcow2)
                .backing_chain(true)
                .force_share(true)
                .build()
                .unwrap()),
            "qemu-img info --output=json -f qcow2 --backing-chain -U '/i/a b.qcow2'"
        );
        assert_eq!(
            s(ImgCreate::new("/o.qcow2", Format::Qcow2)
                .backing("/base,1.raw", Format::Raw)
                .option("cluster_size", 65536u32)
                .option("compat", "1.1")
                .build()
                .unwrap()),
            "qemu-img create -f qcow2 -b /base,1.raw -F raw -o cluster_size=65536,compat=1.1 /o.qcow2"
        );
        assert_eq!(
            s(ImgCreate::new("d.raw", Format::Raw)
                .size(Size::gib(2))
                .build_with("/usr/bin/qemu-img")
                .unwrap()),
            "/usr/bin/qemu-img create -f raw d.raw 2147483648"
        );
        assert_eq!(
            s(ImgResize::new("d", Size::gib(1))
                .format(Format::Raw)
                .shrink(true)
                .build()
                .unwrap()),
            "qemu-img resize -f raw --shrink d 1073741824"
        );
        assert_eq!(
            s(ImgResize::grow_by("d", Size::mib(1)).build().unwrap()),
            "qemu-img resize d +1048576"
        );
        assert_eq!(
            s(ImgConvert::new("in.vmdk", "out.qcow2", Format::Qcow2)
                .src_format(Format::Vmdk)
                .progress(true)
                .compress(true)
                .option("preallocation", "off")
                .build()
                .unwrap()),
            "qemu-img convert -p -f vmdk -O qcow2 -c -o preallocation=off in.vmdk out.qcow2"
        );
        assert_eq!(
            s(ImgCheck::new("x")
                .format(Format::Qcow2)
                .repair(Repair::Leaks)
                .build()
                .unwrap()),
            "qemu-img check --output=json -f qcow2 -r leaks x"
        );
        assert_eq!(
            s(ImgCheck::new("x").force_share(true).build().unwrap()),
            "qemu-img check --output=json -U x"
        );
        assert_eq!(
            s(ImgConvert::new("a", "b", Format::Raw)
                .force_share(true)
                .build()
                .unwrap()),
            "qemu-img convert -U -O raw a b"
        );
        assert_eq!(
            s(
                ImgSnapshot::new("x", SnapshotAction::Create("-before upgrade".into()))
                    .build()
                    .unwrap()
            ),
            "qemu-img snapshot -c '-before upgrade' x"
        );
        assert_eq!(
            s(ImgSnapshot::new("x", SnapshotAction::List)
                .format(Format::Qcow2)
                .build()
                .unwrap()),
            "qemu-img snapshot -f qcow2 -l x"
        );
    }

    #[test]
    fn option_values_are_escaped_and_keys_checked() {
        let a = ImgCreate::new("o", Format::Qcow2)
            .size(Size::mib(1))
            .option("data_file", "/d,x")
            .args()
            .unwrap();
        assert_eq!(a[4], "data_file=/d,,x");
        let e = ImgCreate::new("o", Format::Qcow2)
            .size(Size::mib(1))
            .option("bad key", "v")
            .args()
            .unwrap_err();
        assert!(matches!(e, Error::InvalidKey { .. }), "{e}");
        let e = ImgCreate::new("o", Format::Raw).args().unwrap_err();
        assert!(e.to_string().contains("a size is needed"), "{e}");
        let e = ImgCreate::new("o", Format::Other("x,y".into()))
            .size(Size::mib(1))
            .args()
            .unwrap_err();
        assert!(e.to_string().contains("not a format name"), "{e}");
    }
}
