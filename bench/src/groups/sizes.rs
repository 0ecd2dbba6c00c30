//! The size rows: the stripped library and a statically linked C program.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::report::{Met, Row};
use crate::stats::fmt_bytes;

use super::{target_dir, workspace_root, Ctx};

fn run_tool(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

fn stripped_size(file: &Path, scratch: &Path) -> Result<u64, String> {
    let copy = scratch.join(format!(
        "stripped-{}",
        file.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    std::fs::copy(file, &copy).map_err(|e| format!("copying {}: {e}", file.display()))?;
    run_tool(Command::new("strip").arg(&copy))
        .map_err(|e| format!("{e} (apt-get install -y binutils)"))?;
    std::fs::metadata(&copy)
        .map(|m| m.len())
        .map_err(|e| format!("{}: {e}", copy.display()))
}

pub(super) fn sizes(ctx: &mut Ctx<'_>) -> Result<Vec<Row>, String> {
    let root = workspace_root();
    // The release artifacts go next to this binary's own target directory.
    let target = target_dir()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!(
        "[sizes] cargo build --release -p qemu-ffi (target dir {})",
        target.display()
    );
    let status = Command::new(&cargo)
        .args(["build", "--release", "-p", "qemu-ffi"])
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(root)
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("running cargo: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build --release -p qemu-ffi: {status}"));
    }
    let release = target.join("release");
    let so = release.join("libqemumachine.so");
    let archive = release.join("libqemumachine.a");

    let scratch = tempfile::Builder::new()
        .prefix("qm-bench-sizes-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .map_err(|e| format!("creating a temp dir: {e}"))?;
    let dir = scratch.path();

    let so_size = stripped_size(&so, dir)?;

    let cc = |out: &Path, args: &[&std::ffi::OsStr]| -> Result<(), String> {
        run_tool(
            Command::new("cc")
                .args(["-static", "-O2"])
                .args(args)
                .arg("-o")
                .arg(out),
        )
        .map_err(|e| format!("{e} (apt-get install -y gcc libc6-dev)"))
    };
    let qm_test = dir.join("qm_test_static");
    cc(
        &qm_test,
        &[
            "-I".as_ref(),
            root.join("include").as_os_str(),
            root.join("tests/c/qm_test.c").as_os_str(),
            archive.as_os_str(),
            "-lpthread".as_ref(),
            "-ldl".as_ref(),
            "-lm".as_ref(),
        ],
    )?;
    let hello_c = dir.join("hello.c");
    std::fs::write(
        &hello_c,
        "#include <stdio.h>\nint main(void) { printf(\"%s\\n\", \"hello\"); return 0; }\n",
    )
    .map_err(|e| format!("{}: {e}", hello_c.display()))?;
    let hello = dir.join("hello_static");
    cc(&hello, &[hello_c.as_os_str()])?;
    let qm_size = stripped_size(&qm_test, dir)?;
    let hello_size = stripped_size(&hello, dir)?;
    ctx.detail(format!(
        "- sizes: unstripped libqemumachine.so {}, libqemumachine.a {}",
        fmt_bytes(file_size(&so) as f64),
        fmt_bytes(file_size(&archive) as f64)
    ));
    Ok(vec![
        Row {
            measurement: "stripped libqemumachine.so (release build of qemu-ffi)".into(),
            ours: fmt_bytes(so_size as f64),
            baseline: "—".into(),
            ratio: "—".into(),
            goal: "—".into(),
            met: Met::NoGoal,
        },
        Row {
            measurement: "stripped static C binary: tests/c/qm_test.c + libqemumachine.a (cc -static -O2) vs a static stdio hello".into(),
            ours: fmt_bytes(qm_size as f64),
            baseline: fmt_bytes(hello_size as f64),
            ratio: format!("+{} for the library and test", fmt_bytes((qm_size - hello_size.min(qm_size)) as f64)),
            goal: "—".into(),
            met: Met::NoGoal,
        },
    ])
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}
