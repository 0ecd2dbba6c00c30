//! The peak-RSS rows: each workload in a fresh process.

use std::process::{Command, Stdio};

use crate::python;
use crate::report::{met, Row};
use crate::stats::{fmt_bytes, Summary};

use super::Ctx;

/// Runs one peak-RSS workload in a fresh process and returns its `name_kib` figures.
fn rss_child(mut cmd: Command, what: &str) -> Result<Vec<(String, u64)>, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "{what}: {}: {}{}",
            out.status,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let report = crate::rss::parse_report(&stdout);
    if !report.iter().any(|(k, _)| k == "vmhwm") {
        return Err(format!("{what}: no vmhwm_kib in {stdout:?}"));
    }
    Ok(report)
}

pub(super) fn peak_rss(ctx: &mut Ctx<'_>) -> Result<Vec<Row>, String> {
    let o = ctx.options;
    let exe = std::env::current_exe().map_err(|e| format!("finding qm-bench itself: {e}"))?;
    let python_ok = ctx.python.is_ok();
    let clients: &[&str] = if python_ok {
        &["ours", "floor", "python"]
    } else {
        &["ours", "floor"]
    };
    let mut peaks: Vec<Vec<f64>> = vec![Vec::new(); clients.len()];
    let mut last: Vec<Vec<(String, u64)>> = vec![Vec::new(); clients.len()];
    for run in 0..ctx.counts.rss_runs {
        for k in 0..clients.len() {
            let i = (run + k) % clients.len();
            let cmd = match clients[i] {
                "python" => {
                    let mut c = Command::new(&o.python);
                    c.arg(python::script())
                        .arg("rss")
                        .arg("--qemu")
                        .arg(&o.qemu);
                    c
                }
                client => {
                    let mut c = Command::new(&exe);
                    c.args(["__rss", client]).arg("--qemu").arg(&o.qemu);
                    c
                }
            };
            let report = rss_child(cmd, clients[i])?;
            let hwm = report
                .iter()
                .find(|(k, _)| k == "vmhwm")
                .map(|(_, v)| *v as f64 * 1024.0)
                .expect("checked");
            peaks[i].push(hwm);
            last[i] = report;
        }
        eprintln!("[rss] run {}/{}", run + 1, ctx.counts.rss_runs);
    }
    for (client, report) in clients.iter().zip(&last) {
        let fields: Vec<String> = report
            .iter()
            .map(|(k, v)| format!("{k} {}", fmt_bytes(*v as f64 * 1024.0)))
            .collect();
        ctx.detail(format!(
            "- peak RSS workload (launch, 100 query-status, 500 stop/cont with their 1000 events kept, query-version, quit), {client}: {}",
            fields.join(", ")
        ));
    }
    let median = |v: &[f64]| Summary::of(v).map(|s| s.median).unwrap_or(f64::NAN);
    let ours = median(&peaks[0]);
    let floor = median(&peaks[1]);
    let limit = 4.0 * 1024.0 * 1024.0;
    let mut rows = vec![Row {
        measurement: "peak RSS (VmHWM) of a client process managing one VM, vs floor".into(),
        ours: fmt_bytes(ours),
        baseline: fmt_bytes(floor),
        ratio: format!("{:.2}×", ours / floor),
        goal: "≤ 4 MiB".into(),
        met: met(ours <= limit),
    }];
    let measurement = "peak RSS of that client vs QEMU's Python stack (qemu.qmp)";
    if python_ok {
        let py = median(&peaks[2]);
        rows.push(Row {
            measurement: measurement.into(),
            ours: fmt_bytes(ours),
            baseline: fmt_bytes(py),
            ratio: format!("{:.2}× ({:.1}× smaller)", ours / py, py / ours),
            goal: "≤ 4 MiB (Python: 22 MiB)".into(),
            met: met(ours <= limit),
        });
    } else {
        rows.push(Row::not_run(measurement, "—", python::INSTALL_HINT));
    }
    Ok(rows)
}
