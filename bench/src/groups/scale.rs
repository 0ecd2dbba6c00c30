//! How the cost grows with the number of VMs: N = 1, 16, 64, 128 VMs from one thread
//! (`MachineSet`) against N floor clients on N threads, every unit in a fresh process
//! (`qm-bench __scale`, see `scale.rs`) so that its memory, descriptors and CPU time are its own.

use std::process::{Command, Stdio};

use crate::report::{met, Met, Row};
use crate::scale::{Report, NOFILE, QUERIES, WARMUP};
use crate::stats::{fmt_bytes, fmt_ns, paired_ratios, Summary};

use super::{progress, Ctx};

/// The numbers of VMs.
const NS: [usize; 4] = [1, 16, 64, 128];
/// The goal for the client's memory per machine beyond the first.
const RSS_PER_VM_GOAL_KIB: f64 = 64.0;

/// One candidate: a client and a number of VMs.
#[derive(Clone, Copy, PartialEq)]
struct Cand {
    client: &'static str,
    n: usize,
}

fn run_child(ctx: &Ctx<'_>, cand: Cand) -> Result<Report, String> {
    let exe = std::env::current_exe().map_err(|e| format!("finding qm-bench itself: {e}"))?;
    let what = format!("{} with {} VMs", cand.client, cand.n);
    let out = Command::new(exe)
        .args(["__scale", cand.client, &cand.n.to_string()])
        .arg("--qemu")
        .arg(&ctx.options.qemu)
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
    Report::parse(&stdout).map_err(|e| format!("{what}: {e}"))
}

/// The median of one field over a candidate's runs.
fn median(runs: &[Report], field: impl Fn(&Report) -> f64) -> f64 {
    let values: Vec<f64> = runs.iter().map(field).collect();
    Summary::of(&values).map_or(f64::NAN, |s| s.median)
}

pub(super) fn scale(ctx: &mut Ctx<'_>) -> Result<Vec<Row>, String> {
    let rounds = ctx.counts.scale_rounds;
    let mut cands = Vec::new();
    for n in NS {
        cands.push(Cand { client: "ours", n });
        cands.push(Cand { client: "floor", n });
    }
    cands.push(Cand {
        client: "serial",
        n: 128,
    });
    let mut runs: Vec<Vec<Report>> = vec![Vec::new(); cands.len()];
    // Small sets are quick and their figures noisier: they get more rounds.
    let rounds_for = |n: usize| rounds * (64 / n).clamp(1, 4);
    let most = rounds_for(1);
    let mut report = progress("scale", most);
    for round in 0..most {
        let active: Vec<usize> = (0..cands.len())
            .filter(|&i| round < rounds_for(cands[i].n))
            .collect();
        for k in 0..active.len() {
            let i = active[(round + k) % active.len()];
            runs[i].push(run_child(ctx, cands[i])?);
        }
        report(round + 1);
    }
    let runs_of = |client: &str, n: usize| -> &[Report] {
        let i = cands
            .iter()
            .position(|c| c.client == client && c.n == n)
            .expect("a candidate");
        &runs[i]
    };

    ctx.detail(format!(
        "- many VMs: each unit is a fresh `qm-bench __scale` process under a soft limit of {NOFILE} \
         open files: N `-machine none` VMs launched, each queried {QUERIES} times (the machines \
         taken in turn), all quit and reaped. Ours: one thread, `MachineSet::launch`, {QUERIES} \
         × `MachineSet::execute_all(\"query-status\")` (the command written to every machine, \
         the replies taken as they come), `shutdown_all`; the floor: N threads, each a floor \
         client for one VM, meeting at barriers between the phases; serial: like ours, but \
         each round asks the machines one after the other with `Machine::command` \
         ({} rounds of 1 VM, {} of 16, {rounds} of 64 and 128)",
        rounds_for(1),
        rounds_for(16)
    ));
    for (i, c) in cands.iter().enumerate() {
        let r = &runs[i];
        let commands = (c.n * QUERIES) as f64;
        ctx.detail(format!(
            "- {} VMs, {}: wall {} (launch and {WARMUP} untimed queries each {}, queries {}, \
             quit and reap {}); client CPU {} in all, {} per query-status, QEMU CPU {} per \
             query-status; VmRSS {} (before launching {}, RssAnon {}), VmHWM {}; {} \
             descriptors open ({} before){}",
            c.n,
            match c.client {
                "ours" => "ours (MachineSet::execute_all)",
                "serial" => "ours, serial (Machine::command, one at a time)",
                _ => "floor (N threads)",
            },
            fmt_ns(median(r, |x| x.wall_ns)),
            fmt_ns(median(r, |x| x.launch_ns)),
            fmt_ns(median(r, |x| x.query_ns)),
            fmt_ns(median(r, |x| x.shutdown_ns)),
            fmt_ns(median(r, |x| x.cpu_ns)),
            fmt_ns(median(r, |x| x.query_cpu_ns) / commands),
            fmt_ns(median(r, |x| x.qemu_query_cpu_ns) / commands),
            fmt_bytes(median(r, |x| x.rss_kib) * 1024.0),
            fmt_bytes(median(r, |x| x.rss_before_kib) * 1024.0),
            fmt_bytes(median(r, |x| x.anon_kib) * 1024.0),
            fmt_bytes(median(r, |x| x.hwm_kib) * 1024.0),
            median(r, |x| x.fds),
            median(r, |x| x.fds_before),
            if c.client == "floor" {
                String::new()
            } else {
                format!(
                    "; the guardian: {} ({} before)",
                    median(r, |x| x.guardian_fds),
                    median(r, |x| x.guardian_fds_before)
                )
            }
        ));
    }
    for n in NS {
        let wall = |r: &[Report]| r.iter().map(|x| x.wall_ns).collect::<Vec<_>>();
        if let Some(p) = paired_ratios(&wall(runs_of("ours", n)), &wall(runs_of("floor", n)), 1) {
            ctx.detail(format!(
                "- {n} VMs, ours / floor wall time, paired round by round: median {:.3}×, p90 \
                 {:.3}×, over {} rounds",
                p.median, p.p90, p.n
            ));
        }
    }

    let mut rows = Vec::new();
    for n in NS {
        let (o, f) = (runs_of("ours", n), runs_of("floor", n));
        let (ow, fw) = (median(o, |x| x.wall_ns), median(f, |x| x.wall_ns));
        rows.push(Row {
            measurement: format!(
                "{n} VM{} from one thread (MachineSet: launch, {QUERIES} × execute_all \
                 query-status, shutdown_all) vs {n} floor client{} on {n} thread{}",
                if n == 1 { "" } else { "s" },
                if n == 1 { "" } else { "s" },
                if n == 1 { "" } else { "s" },
            ),
            ours: format!(
                "{} (queries {})",
                fmt_ns(ow),
                fmt_ns(median(o, |x| x.query_ns))
            ),
            baseline: format!(
                "{} (queries {})",
                fmt_ns(fw),
                fmt_ns(median(f, |x| x.query_ns))
            ),
            ratio: format!("{:.3}×", ow / fw),
            goal: "—".into(),
            met: Met::NoGoal,
        });
    }

    // Client CPU per command, as N grows.
    let per_cmd = |client: &str, n: usize| {
        median(runs_of(client, n), |x| x.query_cpu_ns) / (n * QUERIES) as f64
    };
    let series = |client: &str| {
        NS.iter()
            .map(|&n| format!("{:.1}", per_cmd(client, n) / 1e3))
            .collect::<Vec<_>>()
            .join(" / ")
            + " µs"
    };
    let growth_ours = per_cmd("ours", 128) / per_cmd("ours", 16);
    let growth_floor = per_cmd("floor", 128) / per_cmd("floor", 16);
    rows.push(Row {
        measurement: format!(
            "client CPU time per query-status with {} VMs (ours: one thread; floor: a thread per \
             VM)",
            NS.map(|n| n.to_string()).join(" / ")
        ),
        ours: series("ours"),
        baseline: series("floor"),
        ratio: format!(
            "{:.2}× at 128; 16 → 128 VMs: ours ×{growth_ours:.2}, floor ×{growth_floor:.2}",
            per_cmd("ours", 128) / per_cmd("floor", 128)
        ),
        goal: "— (cache misses and batching move it; see the instructions row)".into(),
        met: Met::NoGoal,
    });
    rows.extend(instructions(ctx)?);

    // Memory per machine beyond the first.
    let rss_per_vm = |client: &str| {
        (median(runs_of(client, 128), |x| x.rss_kib) - median(runs_of(client, 1), |x| x.rss_kib))
            / 127.0
    };
    let (orss, frss) = (rss_per_vm("ours"), rss_per_vm("floor"));
    rows.push(Row {
        measurement:
            "client RSS per machine beyond the first ((VmRSS with 128 VMs − with 1) / 127)".into(),
        ours: fmt_bytes(orss * 1024.0),
        baseline: fmt_bytes(frss * 1024.0),
        ratio: format!("{:.2}×", orss / frss),
        goal: format!("< {RSS_PER_VM_GOAL_KIB} KiB"),
        met: met(orss < RSS_PER_VM_GOAL_KIB),
    });

    // Descriptors.
    let fds_per_vm = |r: &[Report]| median(r, |x| (x.fds - x.fds_before) / 128.0);
    let (o128, f128) = (runs_of("ours", 128), runs_of("floor", 128));
    let open128 = median(o128, |x| x.fds);
    let nofile = median(o128, |x| x.nofile);
    rows.push(Row {
        measurement: format!(
            "open descriptors per machine in the client, 128 VMs under `ulimit -n` {NOFILE}"
        ),
        ours: format!("{:.1} ({open128} open of {nofile})", fds_per_vm(o128)),
        baseline: format!("{:.1} ({} open)", fds_per_vm(f128), median(f128, |x| x.fds)),
        ratio: "—".into(),
        goal: format!("128 VMs within {NOFILE}"),
        met: met(open128 < nofile && nofile <= NOFILE as f64),
    });
    rows.push(Row {
        measurement: "the guardian's open descriptors per machine, 128 VMs".into(),
        ours: format!(
            "{:.1} ({} open)",
            median(o128, |x| (x.guardian_fds - x.guardian_fds_before) / 128.0),
            median(o128, |x| x.guardian_fds)
        ),
        baseline: "— (no guardian)".into(),
        ratio: "—".into(),
        goal: "—".into(),
        met: Met::NoGoal,
    });
    Ok(rows)
}

/// Queries per machine of the two callgrind runs whose difference is counted.
const CALLGRIND_QUERIES: [usize; 2] = [20, 60];
/// The instructions per command at 128 VMs may be this much more than at 16 (they depend a
/// little on how many replies each wake-up finds); an O(N) scan per event would make them
/// grow with N.
const FLAT: f64 = 1.05;

/// The client's own instructions per command at 16 and 128 VMs, counted by callgrind (the
/// CPU time moves with cache misses and with how many replies a wake-up finds; the
/// instructions a command costs in the client's code do not, unless that code scans the set).
/// Each count is the difference between two runs with 20 and 60 queries per machine, so the
/// launch and shutdown cancel out.
fn instructions(ctx: &mut Ctx<'_>) -> Result<Vec<Row>, String> {
    let measurement =
        "the client's own instructions per round and machine (callgrind), 16 → 128 VMs";
    let goal = format!("flat in N: ≤ {FLAT}×");
    let works = Command::new("valgrind")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !works {
        return Ok(vec![Row::not_run(
            measurement,
            goal,
            "not run: valgrind is missing (apt-get install -y valgrind)",
        )]);
    }
    let exe = std::env::current_exe().map_err(|e| format!("finding qm-bench itself: {e}"))?;
    let dir = tempfile::Builder::new()
        .prefix("qm-bench-callgrind.")
        .tempdir()
        .map_err(|e| format!("a scratch directory: {e}"))?;
    let mut rows = Vec::new();
    for (client, what) in [
        ("ours", "query-status to every machine with execute_all"),
        (
            "events",
            "each machine in turn: stop, its STOP from next_event, cont, its RESUME",
        ),
    ] {
        let per_command = callgrind_per_command(ctx, &exe, dir.path(), client, what)?;
        let growth = per_command[1] / per_command[0];
        rows.push(Row {
            measurement: format!("{measurement}: {what}"),
            ours: format!("{:.0} → {:.0}", per_command[0], per_command[1]),
            baseline: "— (a scan of the set per event would grow with N)".into(),
            ratio: format!("×{growth:.3}"),
            goal: goal.clone(),
            met: met(growth <= FLAT),
        });
    }
    Ok(rows)
}

/// Instructions per round and machine of `__scale CLIENT` at 16 and 128 VMs.
fn callgrind_per_command(
    ctx: &mut Ctx<'_>,
    exe: &std::path::Path,
    dir: &std::path::Path,
    client: &str,
    what: &str,
) -> Result<Vec<f64>, String> {
    let mut per_command = Vec::new();
    for n in [16, 128] {
        let mut totals = Vec::new();
        for q in CALLGRIND_QUERIES {
            eprintln!("[scale] callgrind: {client}, {n} VMs, {q} rounds");
            let child = Command::new("valgrind")
                .args(["--tool=callgrind", "--trace-children=no"])
                .arg(format!("--callgrind-out-file={}/cg.%p", dir.display()))
                .arg(exe)
                .args(["__scale", client, &n.to_string(), &q.to_string()])
                .arg("--qemu")
                .arg(&ctx.options.qemu)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("valgrind: {e}"))?;
            let pid = child.id();
            let out = child
                .wait_with_output()
                .map_err(|e| format!("valgrind: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "valgrind ... __scale {client} {n} {q}: {}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            // The process guardian (a fork of the client) writes a file of its own.
            let file = dir.join(format!("cg.{pid}"));
            let text = std::fs::read_to_string(&file)
                .map_err(|e| format!("reading {}: {e}", file.display()))?;
            let total: f64 = text
                .lines()
                .find_map(|l| l.strip_prefix("summary:"))
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| format!("no summary in {}", file.display()))?;
            totals.push(total);
        }
        let commands = (n * (CALLGRIND_QUERIES[1] - CALLGRIND_QUERIES[0])) as f64;
        per_command.push((totals[1] - totals[0]) / commands);
        ctx.detail(format!(
            "- callgrind, {n} VMs, {what}: {:.0} and {:.0} instructions in the client with {} \
             and {} rounds: {:.0} per round and machine",
            totals[0],
            totals[1],
            CALLGRIND_QUERIES[0],
            CALLGRIND_QUERIES[1],
            (totals[1] - totals[0]) / commands
        ));
    }
    Ok(per_command)
}
