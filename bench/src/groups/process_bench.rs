//! qemu-process's own benchmark (`cargo bench -p qemu-process --bench lifecycle`), run and
//! shown as it is.

use std::process::{Command, Stdio};

use crate::report::Row;

use super::{target_dir, workspace_root, Ctx};

/// `cargo bench -p qemu-process --bench lifecycle`: the library crate's own, smaller version of
/// the cycle, round-trip and RSS rows (fixed blocks, one VM per client), run so that one command
/// covers every benchmark of the workspace; its output is shown as it is, as a cross-check.
pub(super) fn process_bench(ctx: &mut Ctx<'_>) -> Result<Vec<Row>, String> {
    let title = "qemu-process/benches/lifecycle.rs (cross-check)";
    if ctx.options.quick {
        ctx.sections.push((
            title.into(),
            "skipped with --quick (it has no short mode)".into(),
        ));
        return Ok(Vec::new());
    }
    let root = workspace_root();
    if !root.join("qemu-process/benches/lifecycle.rs").exists() {
        ctx.sections
            .push((title.into(), "not in this source tree".into()));
        return Ok(Vec::new());
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("[process-bench] cargo bench -p qemu-process --bench lifecycle");
    let out = Command::new(&cargo)
        .args(["bench", "-p", "qemu-process", "--bench", "lifecycle"])
        .env("CARGO_TARGET_DIR", target_dir()?)
        .env("QEMU", &ctx.options.qemu)
        .current_dir(root)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("running cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo bench -p qemu-process --bench lifecycle: {}",
            out.status
        ));
    }
    ctx.sections.push((
        title.into(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ));
    Ok(Vec::new())
}
