//! `qemu-machine image ...`: disk image tools over `qemu_process::image`, with progress for
//! the long operations (a bar on a terminal, plain lines otherwise).

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use qemu_cmdline::{Format, ImgCreate, Repair, Size};
use qemu_process::image::{QemuImg, StreamProgress};

use crate::exit::{self, CliResult, Failure};
use crate::progress::Progress;
use crate::term;

mod text;
use text::{check_text, human, info_json, info_text, snapshot_table};

/// The image verbs.
#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Show an image's format, sizes, backing chain and snapshots.
    Info(InfoArgs),
    /// Create a new image (the file must not exist).
    Create(CreateArgs),
    /// Change an image's virtual size: SIZE, +SIZE to grow or -SIZE to shrink by that much.
    Resize(ResizeArgs),
    /// Convert an image into a new one of another format (an existing file is replaced only
    /// with --force).
    Convert(ConvertArgs),
    /// Write an image (any format; gzip, xz, bzip2 or zstd compressed or not) into a disk
    /// image, replacing its contents.
    Flash(FlashArgs),
    /// Read a disk image into a new file (e.g. to save a VM's disk or UEFI variables; an
    /// existing file is replaced only with --force).
    Dump(DumpArgs),
    /// Check an image's consistency (qcow2, qed, vdi, vhdx, vmdk). Exits like qemu-img check:
    /// 0 clean, 2 corruptions found, 3 only leaked clusters found, 1 the check itself failed,
    /// 63 the format has nothing to check.
    #[command(after_help = CHECK_HELP)]
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
    /// Read the image even while a running VM has it open (qemu-img -U; what is shown may be
    /// stale).
    #[arg(short = 'U', long)]
    force_share: bool,
}

/// `image create`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The new image.
    image: PathBuf,
    /// Its virtual size in qemu-img's syntax (1G, 512M, 1.5G, 65536; suffixes K M G T P E);
    /// optional with --backing (the backing file's).
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
    /// The new virtual size, +SIZE to grow by that much, or -SIZE to shrink by that much
    /// (with --shrink), in qemu-img's syntax (16M, 1.5G; suffixes K M G T P E).
    #[arg(allow_hyphen_values = true)]
    size: String,
    /// Allow a smaller size (the data at the end is lost), as qemu-img resize --shrink.
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
    /// Read the source even while a running VM has it open (qemu-img -U; the copy is
    /// inconsistent if the guest writes meanwhile).
    #[arg(short = 'U', long)]
    force_share: bool,
    /// Replace the new image's file if it exists.
    #[arg(long)]
    force: bool,
}

/// `image flash`.
#[derive(Args, Debug)]
pub struct FlashArgs {
    /// The image to write (compression recognised by its content); `-` reads it from standard
    /// input, once, decompressing on the fly.
    source: PathBuf,
    /// The disk image written (created if missing).
    target: PathBuf,
    /// The target's format (default: an existing target's own, else from its extension, else
    /// raw).
    #[arg(short = 'f', long, value_name = "FORMAT")]
    format: Option<String>,
    /// Grow the target to at least this virtual size afterwards (qemu-img's syntax: 8G).
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
    /// Read the source even while a running VM has it open (qemu-img -U; the copy is
    /// inconsistent if the guest writes meanwhile).
    #[arg(short = 'U', long)]
    force_share: bool,
    /// Replace the new file if it exists.
    #[arg(long)]
    force: bool,
}

/// `image check`.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The image.
    image: PathBuf,
    /// Repair: leaks (safe) or all.
    #[arg(long, value_name = "WHAT", conflicts_with = "force_share")]
    repair: Option<RepairArg>,
    /// Check the image even while a running VM has it open (qemu-img -U; a running guest's
    /// writes can look like errors).
    #[arg(short = 'U', long)]
    force_share: bool,
}

const CHECK_HELP: &str = "\
Exit codes (those of qemu-img check):
  0    the image is clean
  1    the check could not be done (an unreadable image, an I/O error)
  2    the image is corrupted (--repair all may fix it; back it up first)
  3    the image only has leaked clusters: space is wasted, no data is lost
       (--repair leaks reclaims it)
  63   the format has no metadata to check (raw)
  (and 2 for bad arguments, as for every command)";

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
    let mut img = QemuImg::default();
    match command {
        ImageCommand::Info(a) => info(img.force_share(a.force_share), &a),
        ImageCommand::Create(a) => create(&img, &a, quiet),
        ImageCommand::Resize(a) => resize(&img, &a, quiet),
        ImageCommand::Convert(a) => {
            img.force_share(a.force_share);
            let format = new_format(a.format.as_deref(), &a.dest)?;
            let src = a.source_format.as_deref().map(parse_format).transpose()?;
            check_destination("convert", &a.source, &a.dest, a.force)?;
            let label = format!("convert {}", a.source.display());
            let mut p = progress(&label, quiet);
            let result = match &src {
                Some(src) => img.convert_known(&a.source, src, &a.dest, &format, |f| p.update(f)),
                None => img.convert(&a.source, &a.dest, &format, |f| p.update(f)),
            };
            p.finish();
            result.map_err(op_failure("convert"))?;
            done(quiet, &format!("wrote {} ({format})", a.dest.display()))
        }
        ImageCommand::Flash(a) => flash(&img, &a, quiet),
        ImageCommand::Dump(a) => {
            img.force_share(a.force_share);
            let format = new_format(a.format.as_deref(), &a.dest)?;
            let src = a.source_format.as_deref().map(parse_format).transpose()?;
            check_destination("dump", &a.source, &a.dest, a.force)?;
            let label = format!("dump {}", a.source.display());
            let mut p = progress(&label, quiet);
            let result = img.dump(&a.source, src.as_ref(), &a.dest, &format, |f| p.update(f));
            p.finish();
            result.map_err(op_failure("dump"))?;
            done(quiet, &format!("wrote {} ({format})", a.dest.display()))
        }
        ImageCommand::Check(a) => check(img.force_share(a.force_share), &a),
        ImageCommand::Snapshot(a) => snapshot(&img, &a, quiet),
    }
}

/// Refuses a destination that is the source itself (always), or an existing file (unless
/// `force`): qemu-img would overwrite it without asking.
fn check_destination(verb: &str, source: &Path, dest: &Path, force: bool) -> Result<(), Failure> {
    use std::os::unix::fs::MetadataExt;
    let Ok(existing) = std::fs::metadata(dest) else {
        return Ok(());
    };
    if let Ok(src) = std::fs::metadata(source) {
        if (src.dev(), src.ino()) == (existing.dev(), existing.ino()) {
            return Err(Failure::usage(format!(
                "image {verb}: {} and {} are the same file; write the result to a new file",
                source.display(),
                dest.display()
            )));
        }
    }
    if !force {
        return Err(Failure::usage(format!(
            "image {verb}: {} already exists (--force replaces it)",
            dest.display()
        )));
    }
    if !existing.is_file() {
        return Err(Failure::usage(format!(
            "image {verb}: {} is not a regular file; only files are replaced",
            dest.display()
        )));
    }
    Ok(())
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

/// A size as qemu-img reads one: a number (a fraction allowed) with an optional suffix B, K,
/// M, G, T, P or E (either case, binary multiples). qemu-img refuses `64MB` or `64MiB`, and so
/// does this.
fn parse_size(text: &str) -> Result<Size, Failure> {
    let bad = |why: &str| {
        Failure::usage(format!(
            "size {text:?}: {why} (qemu-img's syntax: a number with an optional suffix K, M, \
             G, T, P or E, e.g. 512M or 1.5G)"
        ))
    };
    let number = text
        .strip_suffix(|c: char| "bBkKmMgGtTpPeE".contains(c))
        .unwrap_or(text);
    if number.is_empty() || !number.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(bad("not a size"));
    }
    text.parse::<Size>().map_err(|e| bad(&e.to_string()))
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
    let relative = |delta: &str, grow: bool| -> Result<Size, Failure> {
        let delta = parse_size(delta)?;
        let current = img.info(&a.image).map_err(op_failure("resize"))?;
        let total = if grow {
            current.virtual_size.checked_add(delta.bytes())
        } else {
            current.virtual_size.checked_sub(delta.bytes())
        };
        let total = total.ok_or_else(|| {
            Failure::usage(format!(
                "image resize: {}{delta} from {} bytes is out of range",
                if grow { '+' } else { '-' },
                current.virtual_size
            ))
        })?;
        Ok(Size::from(total))
    };
    let size = if let Some(delta) = a.size.strip_prefix('+') {
        relative(delta, true)?
    } else if let Some(delta) = a.size.strip_prefix('-') {
        relative(delta, false)?
    } else {
        parse_size(&a.size)?
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
    let result = if a.source.as_os_str() == "-" {
        img.flash_stream(std::io::stdin().lock(), &a.target, &format, |s| match s {
            StreamProgress::Read(n) => p.update_bytes(n),
            StreamProgress::Converting(f) => p.update(f),
        })
    } else {
        img.flash(&a.source, &a.target, &format, |f| p.update(f))
    };
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

/// `qemu-img check`'s exit codes.
const CHECK_CORRUPT: u8 = 2;
const CHECK_LEAKS: u8 = 3;
const CHECK_UNSUPPORTED: u8 = 63;

fn check(img: &QemuImg, a: &CheckArgs) -> CliResult {
    let repair = a.repair.map(|r| match r {
        RepairArg::Leaks => Repair::Leaks,
        RepairArg::All => Repair::All,
    });
    let report = match img.check(&a.image, repair) {
        Ok(report) => report,
        Err(e @ qemu_process::Error::Unsupported(_)) => {
            return Err(Failure::new(CHECK_UNSUPPORTED, format!("check: {e}")))
        }
        Err(e) => return Err(op_failure("check")(e)),
    };
    crate::print_stdout(&format!("{}\n", check_text(&report)))?;
    Ok(if report.check_errors > 0 {
        exit::FAILURE
    } else if report.corruptions > 0 {
        CHECK_CORRUPT
    } else if report.leaks > 0 {
        CHECK_LEAKS
    } else {
        exit::SUCCESS
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
            if !list.is_empty() {
                crate::print_stdout(&snapshot_table(&list))?;
            }
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
    fn sizes_in_qemu_imgs_syntax() {
        let ok = |t: &str| parse_size(t).unwrap().bytes();
        assert_eq!(ok("64M"), 64 << 20);
        assert_eq!(ok("64m"), 64 << 20);
        assert_eq!(ok("1.5G"), 3 << 29);
        assert_eq!(ok("65536"), 65536);
        assert_eq!(ok("512b"), 512);
        assert_eq!(ok("2k"), 2048);
        for bad in ["64MB", "64MiB", "64 M", "M", "", "-1M", "1.2.3G", "lots"] {
            let e = parse_size(bad).unwrap_err();
            assert_eq!(e.code, exit::USAGE, "{bad}");
            assert!(
                e.message.contains("qemu-img's syntax"),
                "{bad}: {}",
                e.message
            );
        }
    }
}
