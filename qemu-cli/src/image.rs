//! `qemu-machine image ...`: disk image tools over `qemu_process::image`, with progress for
//! the long operations (a bar on a terminal, plain lines otherwise).

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use qemu_cmdline::{Format, ImgCreate, Repair, Size};
use qemu_process::image::{CheckReport, ImageInfo, QemuImg};
use serde_json::{json, Value};

use crate::exit::{self, CliResult, Failure};
use crate::progress::Progress;
use crate::term;

/// The image verbs.
#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Show an image's format, sizes, backing chain and snapshots.
    Info(InfoArgs),
    /// Create a new image (the file must not exist).
    Create(CreateArgs),
    /// Change an image's virtual size: SIZE, or +SIZE to grow by that much.
    Resize(ResizeArgs),
    /// Convert an image into a new one of another format.
    Convert(ConvertArgs),
    /// Write an image (any format; gzip, xz, bzip2 or zstd compressed or not) into a disk
    /// image, replacing its contents.
    Flash(FlashArgs),
    /// Read a disk image into a new file (e.g. to save a VM's disk or UEFI variables).
    Dump(DumpArgs),
    /// Check an image's consistency (qcow2, qed, vdi, vhdx, vmdk); exit code 1 if not clean.
    Check(CheckArgs),
    /// Internal snapshots of a qcow2 image.
    Snapshot(SnapshotArgs),
}

/// `image info`.
#[derive(Args, Debug)]
pub struct InfoArgs {
    /// The image.
    image: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// `image create`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The new image.
    image: PathBuf,
    /// Its virtual size (1G, 512M, ...); optional with --backing (the backing file's).
    size: Option<String>,
    /// The format (default: from the name's extension, .qcow2 .vmdk .vdi .vhdx .vhd .qed,
    /// else raw).
    #[arg(short = 'f', long, value_name = "FORMAT")]
    format: Option<String>,
    /// A backing file (the new image records only the changes).
    #[arg(short = 'b', long, value_name = "IMAGE")]
    backing: Option<PathBuf>,
    /// The backing file's format (required with --backing: formats are never guessed).
    #[arg(short = 'F', long, value_name = "FORMAT")]
    backing_format: Option<String>,
    /// A format option, KEY=VALUE (cluster_size=65536, preallocation=metadata, ...).
    #[arg(short = 'o', long = "option", value_name = "KEY=VALUE")]
    options: Vec<String>,
}

/// `image resize`.
#[derive(Args, Debug)]
pub struct ResizeArgs {
    /// The image.
    image: PathBuf,
    /// The new virtual size, or +SIZE to grow by.
    size: String,
    /// Allow a smaller size (the data at the end is lost).
    #[arg(long)]
    shrink: bool,
}

/// `image convert`.
#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// The source image (its format is probed once).
    source: PathBuf,
    /// The new image.
    dest: PathBuf,
    /// The new image's format (default: from its extension, else raw).
    #[arg(short = 'O', long = "format", value_name = "FORMAT")]
    format: Option<String>,
    /// The source's format (default: probed).
    #[arg(short = 'f', long, value_name = "FORMAT")]
    source_format: Option<String>,
}

/// `image flash`.
#[derive(Args, Debug)]
pub struct FlashArgs {
    /// The image to write (compression recognised by its content).
    source: PathBuf,
    /// The disk image written (created if missing).
    target: PathBuf,
    /// The target's format (default: an existing target's own, else from its extension, else
    /// raw).
    #[arg(short = 'f', long, value_name = "FORMAT")]
    format: Option<String>,
    /// Grow the target to at least this virtual size afterwards.
    #[arg(long, value_name = "SIZE")]
    size: Option<String>,
}

/// `image dump`.
#[derive(Args, Debug)]
pub struct DumpArgs {
    /// The disk image to read.
    source: PathBuf,
    /// The new file.
    dest: PathBuf,
    /// The new file's format (default: from its extension, else raw).
    #[arg(short = 'O', long = "format", value_name = "FORMAT")]
    format: Option<String>,
    /// The source's format (default: probed).
    #[arg(short = 'f', long, value_name = "FORMAT")]
    source_format: Option<String>,
}

/// `image check`.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The image.
    image: PathBuf,
    /// Repair: leaks (safe) or all.
    #[arg(long, value_name = "WHAT")]
    repair: Option<RepairArg>,
}

/// What `check --repair` repairs.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum RepairArg {
    /// Leaked clusters only (safe).
    Leaks,
    /// Everything (may lose data).
    All,
}

/// `image snapshot`.
#[derive(Args, Debug)]
pub struct SnapshotArgs {
    /// The qcow2 image.
    image: PathBuf,
    /// list, create, apply or delete.
    action: SnapshotVerb,
    /// The snapshot's name (create, apply, delete).
    name: Option<String>,
}

/// A snapshot action.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotVerb {
    /// List the snapshots.
    List,
    /// Take one.
    Create,
    /// Revert the image to one.
    Apply,
    /// Delete one.
    Delete,
}

/// Runs an image verb.
pub fn main(command: ImageCommand, quiet: bool) -> CliResult {
    let img = QemuImg::default();
    match command {
        ImageCommand::Info(a) => info(&img, &a),
        ImageCommand::Create(a) => create(&img, &a, quiet),
        ImageCommand::Resize(a) => resize(&img, &a, quiet),
        ImageCommand::Convert(a) => {
            let format = new_format(a.format.as_deref(), &a.dest)?;
            let label = format!("convert {}", a.source.display());
            let mut p = progress(&label, quiet);
            let result = match a.source_format.as_deref().map(parse_format).transpose()? {
                Some(src) => img.convert_known(&a.source, &src, &a.dest, &format, |f| p.update(f)),
                None => img.convert(&a.source, &a.dest, &format, |f| p.update(f)),
            };
            p.finish();
            result.map_err(op_failure("convert"))?;
            done(quiet, &format!("wrote {} ({format})", a.dest.display()))
        }
        ImageCommand::Flash(a) => flash(&img, &a, quiet),
        ImageCommand::Dump(a) => {
            let format = new_format(a.format.as_deref(), &a.dest)?;
            let src = a.source_format.as_deref().map(parse_format).transpose()?;
            let label = format!("dump {}", a.source.display());
            let mut p = progress(&label, quiet);
            let result = img.dump(&a.source, src.as_ref(), &a.dest, &format, |f| p.update(f));
            p.finish();
            result.map_err(op_failure("dump"))?;
            done(quiet, &format!("wrote {} ({format})", a.dest.display()))
        }
        ImageCommand::Check(a) => check(&img, &a),
        ImageCommand::Snapshot(a) => snapshot(&img, &a, quiet),
    }
}

fn progress(label: &str, quiet: bool) -> Progress<Box<dyn std::io::Write>> {
    if quiet {
        return Progress::new(Box::new(std::io::sink()), label, None);
    }
    let width = if term::is_tty(1) {
        Some(term::width(1).unwrap_or(80))
    } else {
        None
    };
    Progress::new(Box::new(std::io::stdout()), label, width)
}

fn done(quiet: bool, text: &str) -> CliResult {
    if !quiet {
        crate::print_stdout(&format!("{text}\n"))?;
    }
    Ok(exit::SUCCESS)
}

/// A failed image operation: exit code 1 with the library's message (qemu-img's own words
/// included), 2 for arguments the library refused.
fn op_failure(what: &'static str) -> impl Fn(qemu_process::Error) -> Failure {
    move |e| match e {
        e @ (qemu_process::Error::Spec(_) | qemu_process::Error::InvalidArgument(_)) => {
            Failure::usage(format!("{what}: {e}"))
        }
        e @ qemu_process::Error::ShrinkRefused { .. } => {
            Failure::failed(format!("{what}: {e} (--shrink)"))
        }
        e => Failure::failed(format!("{what}: {e}")),
    }
}

fn parse_format(text: &str) -> Result<Format, Failure> {
    text.parse::<Format>()
        .map_err(|e| Failure::usage(format!("format {text:?}: {e}")))
}

fn parse_size(text: &str) -> Result<Size, Failure> {
    text.parse::<Size>()
        .map_err(|e| Failure::usage(format!("size {text:?}: {e}")))
}

/// The format of a new image: the flag, else the name's extension, else raw.
fn new_format(flag: Option<&str>, path: &Path) -> Result<Format, Failure> {
    if let Some(f) = flag {
        return parse_format(f);
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    Ok(match ext.as_deref() {
        Some("qcow2" | "qcow") => Format::Qcow2,
        Some("vmdk") => Format::Vmdk,
        Some("vdi") => Format::Vdi,
        Some("vhdx") => Format::Vhdx,
        Some("vhd" | "vpc") => Format::Vpc,
        Some("qed") => Format::Qed,
        _ => Format::Raw,
    })
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else if value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn info_json(info: &ImageInfo) -> Value {
    let mut v = json!({
        "filename": info.filename,
        "format": info.format.name(),
        "virtual-size": info.virtual_size,
        "dirty-flag": info.dirty,
        "encrypted": info.encrypted,
    });
    let map = v.as_object_mut().expect("an object");
    let mut opt = |key: &str, value: Option<Value>| {
        if let Some(value) = value {
            map.insert(key.to_owned(), value);
        }
    };
    opt("actual-size", info.actual_size.map(Value::from));
    opt("cluster-size", info.cluster_size.map(Value::from));
    opt(
        "backing-filename",
        info.backing_filename.clone().map(Value::from),
    );
    opt(
        "full-backing-filename",
        info.full_backing_filename.clone().map(Value::from),
    );
    opt(
        "backing-filename-format",
        info.backing_filename_format.clone().map(Value::from),
    );
    opt("format-specific", info.format_specific.clone());
    if !info.snapshots.is_empty() {
        let snaps: Vec<Value> = info
            .snapshots
            .iter()
            .map(|s| {
                json!({"id": s.id, "name": s.name, "vm-state-size": s.vm_state_size,
                       "date-sec": s.date_sec, "date-nsec": s.date_nsec,
                       "vm-clock-sec": s.vm_clock_sec, "vm-clock-nsec": s.vm_clock_nsec})
            })
            .collect();
        map.insert("snapshots".into(), Value::Array(snaps));
    }
    if !info.backing_chain.is_empty() {
        map.insert(
            "backing-chain".into(),
            Value::Array(info.backing_chain.iter().map(info_json).collect()),
        );
    }
    v
}

fn info_text(info: &ImageInfo, indent: &str, out: &mut String) {
    use std::fmt::Write;
    let _ = writeln!(out, "{indent}image: {}", info.filename);
    let _ = writeln!(out, "{indent}format: {}", info.format);
    let _ = writeln!(
        out,
        "{indent}virtual size: {} ({} bytes)",
        human(info.virtual_size),
        info.virtual_size
    );
    if let Some(a) = info.actual_size {
        let _ = writeln!(out, "{indent}disk size: {}", human(a));
    }
    if let Some(c) = info.cluster_size {
        let _ = writeln!(out, "{indent}cluster size: {c}");
    }
    if let Some(b) = &info.backing_filename {
        let fmt = info
            .backing_filename_format
            .as_deref()
            .map_or_else(String::new, |f| format!(" (format {f})"));
        let _ = writeln!(out, "{indent}backing file: {b}{fmt}");
    }
    if info.dirty {
        let _ = writeln!(out, "{indent}dirty: yes (not closed cleanly)");
    }
    if info.encrypted {
        let _ = writeln!(out, "{indent}encrypted: yes");
    }
    if !info.snapshots.is_empty() {
        let _ = writeln!(out, "{indent}snapshots:");
        for s in &info.snapshots {
            let _ = writeln!(
                out,
                "{indent}  {:>3}  {}  (vm state {})",
                s.id,
                s.name,
                human(s.vm_state_size)
            );
        }
    }
    for b in &info.backing_chain {
        let _ = writeln!(out, "{indent}backing image:");
        info_text(b, &format!("{indent}  "), out);
    }
}

fn info(img: &QemuImg, a: &InfoArgs) -> CliResult {
    let info = img.info(&a.image).map_err(op_failure("info"))?;
    let text = if a.json {
        let v = info_json(&info);
        format!(
            "{}\n",
            serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string())
        )
    } else {
        let mut s = String::new();
        info_text(&info, "", &mut s);
        s
    };
    crate::print_stdout(&text)?;
    Ok(exit::SUCCESS)
}

fn create(img: &QemuImg, a: &CreateArgs, quiet: bool) -> CliResult {
    let format = new_format(a.format.as_deref(), &a.image)?;
    let mut cmd = ImgCreate::new(&a.image, format.clone());
    match (&a.size, &a.backing) {
        (None, None) => {
            return Err(Failure::usage(
                "image create: give a SIZE (or a --backing file whose size is used)",
            ))
        }
        (Some(s), _) => cmd = cmd.size(parse_size(s)?),
        (None, Some(_)) => {}
    }
    match (&a.backing, &a.backing_format) {
        (Some(b), Some(f)) => cmd = cmd.backing(b, parse_format(f)?),
        (Some(_), None) => {
            return Err(Failure::usage(
                "image create: --backing needs --backing-format (formats are never guessed)",
            ))
        }
        (None, Some(_)) => {
            return Err(Failure::usage(
                "image create: --backing-format without --backing",
            ))
        }
        (None, None) => {}
    }
    for o in &a.options {
        let Some((k, v)) = o.split_once('=') else {
            return Err(Failure::usage(format!(
                "image create: -o {o}: expected KEY=VALUE"
            )));
        };
        cmd = cmd.option(k, v);
    }
    img.create_with(&a.image, &cmd)
        .map_err(op_failure("create"))?;
    done(quiet, &format!("created {} ({format})", a.image.display()))
}

fn resize(img: &QemuImg, a: &ResizeArgs, quiet: bool) -> CliResult {
    let size = match a.size.strip_prefix('+') {
        Some(delta) => {
            let delta = parse_size(delta)?;
            let current = img.info(&a.image).map_err(op_failure("resize"))?;
            let total = current
                .virtual_size
                .checked_add(delta.bytes())
                .ok_or_else(|| Failure::usage(format!("image resize: +{delta} is too large")))?;
            Size::from(total)
        }
        None => parse_size(&a.size)?,
    };
    let info = img
        .resize(&a.image, size, a.shrink)
        .map_err(op_failure("resize"))?;
    done(
        quiet,
        &format!(
            "{}: virtual size {} ({} bytes)",
            a.image.display(),
            human(info.virtual_size),
            info.virtual_size
        ),
    )
}

fn flash(img: &QemuImg, a: &FlashArgs, quiet: bool) -> CliResult {
    let format = match (&a.format, a.target.exists()) {
        (Some(f), _) => parse_format(f)?,
        (None, true) => img.info(&a.target).map_err(op_failure("flash"))?.format,
        (None, false) => new_format(None, &a.target)?,
    };
    let grow = a.size.as_deref().map(parse_size).transpose()?;
    let label = format!("flash {}", a.source.display());
    let mut p = progress(&label, quiet);
    let result = img.flash(&a.source, &a.target, &format, |f| p.update(f));
    p.finish();
    let report = result.map_err(op_failure("flash"))?;
    let mut size = report.virtual_size;
    if let Some(grow) = grow {
        if grow.bytes() > size {
            size = img
                .resize(&a.target, grow, false)
                .map_err(op_failure("flash"))?
                .virtual_size;
        }
    }
    let compression = report
        .compression
        .map_or_else(String::new, |c| format!(", {} compressed", c.program()));
    done(
        quiet,
        &format!(
            "flashed {} ({}{compression}) into {} ({format}, {})",
            a.source.display(),
            report.source_format,
            a.target.display(),
            human(size)
        ),
    )
}

fn check_text(r: &CheckReport) -> String {
    let mut parts = vec![format!(
        "{}: {}",
        r.filename,
        if r.is_clean() {
            "clean"
        } else {
            "problems found"
        }
    )];
    for (n, what) in [
        (r.corruptions, "corruptions"),
        (r.leaks, "leaked clusters"),
        (r.check_errors, "check errors"),
        (r.corruptions_fixed, "corruptions repaired"),
        (r.leaks_fixed, "leaks repaired"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    if let (Some(a), Some(t)) = (r.allocated_clusters, r.total_clusters) {
        parts.push(format!("{a}/{t} clusters allocated"));
    }
    parts.join("; ")
}

fn check(img: &QemuImg, a: &CheckArgs) -> CliResult {
    let repair = a.repair.map(|r| match r {
        RepairArg::Leaks => Repair::Leaks,
        RepairArg::All => Repair::All,
    });
    let report = img.check(&a.image, repair).map_err(op_failure("check"))?;
    crate::print_stdout(&format!("{}\n", check_text(&report)))?;
    Ok(if report.is_clean() {
        exit::SUCCESS
    } else {
        exit::FAILURE
    })
}

fn snapshot(img: &QemuImg, a: &SnapshotArgs, quiet: bool) -> CliResult {
    let name = || {
        a.name.as_deref().ok_or_else(|| {
            let verb = match a.action {
                SnapshotVerb::List => "list",
                SnapshotVerb::Create => "create",
                SnapshotVerb::Apply => "apply",
                SnapshotVerb::Delete => "delete",
            };
            Failure::usage(format!("image snapshot {verb}: give the snapshot's NAME"))
        })
    };
    let image = &a.image;
    match a.action {
        SnapshotVerb::List => {
            if a.name.is_some() {
                return Err(Failure::usage("image snapshot list takes no NAME"));
            }
            let list = img.snapshot_list(image).map_err(op_failure("snapshot"))?;
            let mut text = String::new();
            for s in &list {
                text.push_str(&format!("{}\t{}\n", s.id, s.name));
            }
            crate::print_stdout(&text)?;
            Ok(exit::SUCCESS)
        }
        SnapshotVerb::Create => {
            let n = name()?;
            img.snapshot_create(image, n)
                .map_err(op_failure("snapshot"))?;
            done(
                quiet,
                &format!("{}: snapshot {n:?} created", image.display()),
            )
        }
        SnapshotVerb::Apply => {
            let n = name()?;
            img.snapshot_apply(image, n)
                .map_err(op_failure("snapshot"))?;
            done(quiet, &format!("{}: reverted to {n:?}", image.display()))
        }
        SnapshotVerb::Delete => {
            let n = name()?;
            img.snapshot_delete(image, n)
                .map_err(op_failure("snapshot"))?;
            done(
                quiet,
                &format!("{}: snapshot {n:?} deleted", image.display()),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_of_new_images() {
        let f = |flag: Option<&str>, p: &str| new_format(flag, Path::new(p)).unwrap();
        assert_eq!(f(None, "a.qcow2"), Format::Qcow2);
        assert_eq!(f(None, "a.QCOW2"), Format::Qcow2);
        assert_eq!(f(None, "a.vhd"), Format::Vpc);
        assert_eq!(f(None, "a.img"), Format::Raw);
        assert_eq!(f(None, "disk"), Format::Raw);
        assert_eq!(f(Some("vmdk"), "a.qcow2"), Format::Vmdk);
        assert!(new_format(Some("no such"), Path::new("a")).is_err());
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(1 << 30), "1 GiB");
        assert_eq!(human(3 << 29), "1.5 GiB");
        assert_eq!(human(196_608), "192 KiB");
    }

    #[test]
    fn check_summary() {
        let clean = CheckReport {
            filename: "a.qcow2".into(),
            total_clusters: Some(16384),
            allocated_clusters: Some(3),
            ..CheckReport::default()
        };
        assert_eq!(
            check_text(&clean),
            "a.qcow2: clean; 3/16384 clusters allocated"
        );
        let bad = CheckReport {
            filename: "b.qcow2".into(),
            leaks: 2,
            ..CheckReport::default()
        };
        assert_eq!(
            check_text(&bad),
            "b.qcow2: problems found; 2 leaked clusters"
        );
    }
}
