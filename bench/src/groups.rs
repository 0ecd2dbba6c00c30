//! The groups of rows, run in order, and the report around them.

use std::io::Write;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};

use qemu_process::AccelChoice;

use crate::candidates::{
    interleave, machine_config, our_session_options, session_bytes, CApiRtt, Candidate, DecodePass,
    FloorCycle, FloorRtt, FloorSet, OursCycle, OursRtt, PythonCycle, PythonRtt, RttPlan, Samples,
    SetCycle,
};
use crate::opts::Options;
use crate::python::{self, Server};
use crate::report::{met, table, Met, Row};
use crate::stats::{fmt_bytes, fmt_ns, paired_ratios, Summary};
use crate::sysinfo;

/// How many iterations each group runs.
#[derive(Clone, Copy, Debug)]
struct Counts {
    cycle_warmup: usize,
    cycle_rounds: usize,
    rtt_warmup: usize,
    rtt_block: usize,
    rtt_rounds: usize,
    rss_runs: usize,
    decode_mb: usize,
    decode_rounds: usize,
    set_warmup: usize,
    set_rounds: usize,
}

const FULL: Counts = Counts {
    cycle_warmup: 3,
    cycle_rounds: 50,
    rtt_warmup: 20,
    rtt_block: 100,
    rtt_rounds: 50,
    rss_runs: 3,
    decode_mb: 100,
    decode_rounds: 7,
    set_warmup: 1,
    set_rounds: 8,
};

const QUICK: Counts = Counts {
    cycle_warmup: 1,
    cycle_rounds: 5,
    rtt_warmup: 5,
    rtt_block: 50,
    rtt_rounds: 6,
    rss_runs: 1,
    decode_mb: 10,
    decode_rounds: 2,
    set_warmup: 0,
    set_rounds: 2,
};

/// What the groups share: options, counts, the Python availability, and the details text.
struct Ctx<'a> {
    options: &'a Options,
    counts: Counts,
    /// `Ok(description)` when qemu.qmp can run, else why not.
    python: Result<String, String>,
    details: Vec<String>,
    /// Sections printed verbatim after the details: (title, text).
    sections: Vec<(String, String)>,
}

impl Ctx<'_> {
    fn detail(&mut self, text: String) {
        self.details.push(text);
    }

    /// One detail line per candidate: median, p90, mean ± stdev, n.
    fn detail_samples(&mut self, group: &str, names: &[&str], samples: &[Samples], unit: Unit) {
        for (name, s) in names.iter().zip(samples) {
            if let Some(sum) = Summary::of(&s.values) {
                let mut line = format!(
                    "- {group}, {name}: median {}, p90 {}, mean {} ± {}, min {}, n = {}",
                    unit.fmt(sum.median),
                    unit.fmt(sum.p90),
                    unit.fmt(sum.mean),
                    unit.fmt(sum.stdev),
                    unit.fmt(sum.min),
                    sum.n
                );
                if s.cpu_ns > 0.0 && unit == Unit::Ns {
                    line.push_str(&format!(
                        "; client CPU {} per operation",
                        fmt_ns(s.cpu_ns / sum.n as f64)
                    ));
                }
                if s.child_cpu_ns > 0.0 && unit == Unit::Ns {
                    line.push_str(&format!(
                        ", QEMU CPU {} per operation",
                        fmt_ns(s.child_cpu_ns / sum.n as f64)
                    ));
                }
                self.details.push(line);
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Unit {
    Ns,
    MBps,
}

impl Unit {
    fn fmt(self, v: f64) -> String {
        match self {
            Unit::Ns => fmt_ns(v),
            Unit::MBps => format!("{v:.1} MB/s"),
        }
    }
}

/// A detail line with the round-by-round ratio of `a` to `b`.
fn paired_detail(what: &str, a: &Samples, b: &Samples, per_round: usize) -> Option<String> {
    let p = paired_ratios(&a.values, &b.values, per_round)?;
    Some(format!(
        "- {what}, paired round by round: median ratio {:.3}×, p90 {:.3}×, over {} rounds",
        p.median, p.p90, p.n
    ))
}

fn summary(s: &Samples, what: &str) -> Result<Summary, String> {
    Summary::of(&s.values).ok_or_else(|| format!("{what}: no samples"))
}

/// `median (p90 …)`.
fn time_cell(s: &Summary) -> String {
    format!("{} (p90 {})", fmt_ns(s.median), fmt_ns(s.p90))
}

/// `0.48× (2.08× faster)`: ours over the baseline, and how many times faster that is.
fn faster_cell(ours: f64, baseline: f64) -> String {
    format!("{:.2}× ({:.2}× faster)", ours / baseline, baseline / ours)
}

fn progress(group: &'static str, total: usize) -> impl FnMut(usize) {
    move |done| {
        eprint!("\r[{group}] round {done}/{total}   ");
        if done == total {
            eprintln!();
        }
    }
}

/// Runs the selected groups and prints the report; fails if a group could not run.
pub fn run(options: &Options) -> ExitCode {
    let counts = if options.quick { QUICK } else { FULL };
    let machine = sysinfo::Machine::probe(&options.qemu);
    let python = python::check(&options.python);
    let load_before = sysinfo::load_average();
    let mut ctx = Ctx {
        options,
        counts,
        python,
        details: Vec::new(),
        sections: Vec::new(),
    };
    eprintln!(
        "qm-bench: {} run on {} CPUs; progress below, the report on stdout",
        if options.quick { "quick" } else { "full" },
        machine.nproc
    );

    let mut rows = Vec::new();
    let mut failed = Vec::new();
    type Group = fn(&mut Ctx<'_>) -> Result<Vec<Row>, String>;
    let groups: [(&str, &[&str], Group); 8] = [
        ("cycle", &["cycle"], cycle_tcg),
        ("cycle-kvm", &["cycle-kvm"], |c| {
            cycle_kvm(c, sysinfo::kvm_usable())
        }),
        ("rtt", &["rtt", "cabi"], round_trips),
        ("rss", &["rss"], peak_rss),
        ("decoder", &["decoder"], decoder),
        ("concurrent", &["concurrent"], concurrent),
        ("sizes", &["sizes"], sizes),
        ("process-bench", &["process-bench"], process_bench),
    ];
    for (name, selectors, group) in groups {
        if !selectors.iter().any(|s| options.runs(s)) {
            continue;
        }
        eprintln!("[{name}] ...");
        match group(&mut ctx) {
            Ok(r) => rows.extend(r),
            Err(e) => {
                eprintln!("[{name}] failed: {e}");
                rows.push(Row::not_run(
                    format!("group `{name}`"),
                    "—",
                    &format!("failed: {e}"),
                ));
                failed.push(name);
            }
        }
    }

    let load_after = sysinfo::load_average();
    let mut out = String::new();
    out.push_str("# qemu-machine benchmarks\n\n");
    out.push_str(&format!(
        "- date: {}\n- machine: {} CPUs, {}, Linux {}\n- QEMU: {} (`{}`), /dev/kvm usable: {}\n",
        machine.date,
        machine.nproc,
        machine.cpu,
        machine.kernel,
        machine.qemu,
        options.qemu.display(),
        if machine.kvm { "yes" } else { "no" }
    ));
    out.push_str(&format!(
        "- load average (1, 5, 15 min) before the run: {load_before}; after: {load_after} \
         (other work on the machine competes with the figures below)\n"
    ));
    out.push_str(&format!(
        "- Python stack: {}\n",
        match &ctx.python {
            Ok(v) => v.clone(),
            Err(e) => format!("unavailable ({e}): {}", python::INSTALL_HINT),
        }
    ));
    out.push_str(&format!(
        "- source: {}\n",
        sysinfo::source(Path::new(env!("CARGO_MANIFEST_DIR")))
    ));
    out.push_str(&format!(
        "- run: `qm-bench{}{}` ({} build){}\n\n",
        if options.quick { " --quick" } else { "" },
        if options.only.is_empty() {
            String::new()
        } else {
            format!(" --only {}", options.only.join(","))
        },
        if cfg!(debug_assertions) {
            "DEBUG"
        } else {
            "release"
        },
        if options.quick {
            "; a smoke run: too few iterations to quote"
        } else {
            ""
        }
    ));
    if cfg!(debug_assertions) {
        out.push_str(
            "**This is a debug build: its figures say nothing. Run \
             `cargo run --release -p qemu-machine-bench`.**\n\n",
        );
    }
    out.push_str(&table(&rows));
    out.push_str(
        "\nTimes are medians with the 90th percentile in parentheses; every baseline ran in the \
         same process (or, for the Python stack, beside it), interleaved with ours. The floor \
         is a minimal client with no library: socketpair, fork/exec with the socket inherited, \
         blocking writes of JSON text and reads up to CRLF, `quit`, waitpid.\n",
    );
    if !ctx.details.is_empty() {
        out.push_str("\n## Details\n\n");
        for line in &ctx.details {
            out.push_str(line);
            out.push('\n');
        }
    }
    for (title, text) in &ctx.sections {
        out.push_str(&format!(
            "\n## {title}\n\n```text\n{}\n```\n",
            text.trim_end()
        ));
    }
    print!("{out}");
    let _ = std::io::stdout().flush();
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("qm-bench: groups that failed: {}", failed.join(", "));
        ExitCode::FAILURE
    }
}

fn start_python(ctx: &Ctx<'_>) -> Result<Option<Server>, String> {
    match &ctx.python {
        Ok(_) => Server::start(&ctx.options.python, &ctx.options.qemu, "tcg").map(Some),
        Err(_) => Ok(None),
    }
}

// ----------------------------------------------------------------------------------------------
// Cycles
// ----------------------------------------------------------------------------------------------

const CYCLE: &str = "launch → negotiated → query-status → quit → reaped";

fn cycle_tcg(ctx: &mut Ctx<'_>) -> Result<Vec<Row>, String> {
    let qemu = ctx.options.qemu.clone();
    let c = ctx.counts;
    let mut server = start_python(ctx)?;
    let mut ours = OursCycle(machine_config(&qemu, AccelChoice::Tcg));
    let mut floor = FloorCycle::new(&qemu, AccelChoice::Tcg);
    let mut floor_same = FloorCycle::like_ours(&qemu, AccelChoice::Tcg)?;
    let mut py = server.as_mut().map(PythonCycle);
    let mut cands: Vec<&mut dyn Candidate> = vec![&mut ours, &mut floor, &mut floor_same];
    if let Some(p) = py.as_mut() {
        cands.push(p);
    }
    let samples = interleave(
        &mut cands,
        c.cycle_warmup,
        c.cycle_rounds,
        progress("cycle", c.cycle_rounds),
    )?;
    drop(cands);
    drop(server);

    let names: &[&str] = &[
        "ours (Machine)",
        "floor (no library)",
        "floor sending our exact bytes",
        "Python (qemu.qmp)",
    ];
    ctx.detail_samples("cycle, TCG", &names[..samples.len()], &samples, Unit::Ns);
    for (i, what) in [
        (1, "cycle, TCG, ours / floor"),
        (2, "cycle, TCG, ours / floor sending our exact bytes"),
        (3, "cycle, TCG, ours / Python"),
    ] {
        if let Some(line) = samples
            .get(i)
            .and_then(|b| paired_detail(what, &samples[0], b, 1))
        {
            ctx.detail(line);
        }
    }
    let o = summary(&samples[0], "ours")?;
    let f = summary(&samples[1], "floor")?;
    let fs = summary(&samples[2], "floor, our bytes")?;
    let mut rows = vec![
        Row {
            measurement: format!(
                "VM cycle, TCG ({CYCLE}) vs the plain floor (`qmp_capabilities` without oob)"
            ),
            ours: time_cell(&o),
            baseline: time_cell(&f),
            ratio: format!("{:.3}×", o.median / f.median),
            goal: "≤ 1.05×".into(),
            met: met(o.median / f.median <= 1.05),
        },
        Row {
            measurement:
                "VM cycle, TCG, vs a floor that sends our exact bytes: the client's own share"
                    .into(),
            ours: time_cell(&o),
            baseline: time_cell(&fs),
            ratio: format!("{:.3}×", o.median / fs.median),
            goal: "≤ 1.05×".into(),
            met: met(o.median / fs.median <= 1.05),
        },
    ];
    let py_measurement = "VM cycle, TCG, vs QEMU's Python stack (qemu.qmp as QEMUMachine)";
    match samples.get(3) {
        Some(p) => {
            let p = summary(p, "Python")?;
            rows.push(Row {
                measurement: py_measurement.into(),
                ours: time_cell(&o),
                baseline: time_cell(&p),
                ratio: faster_cell(o.median, p.median),
                goal: "≥ 1.2× faster".into(),
                met: met(p.median / o.median >= 1.2),
            });
        }
        None => rows.push(Row::not_run(
            py_measurement,
            "≥ 1.2× faster",
            python::INSTALL_HINT,
        )),
    }
    Ok(rows)
}

fn cycle_kvm(ctx: &mut Ctx<'_>, kvm: bool) -> Result<Vec<Row>, String> {
    let measurement = format!("VM cycle, KVM ({CYCLE}) vs the plain floor");
    let qemu = ctx.options.qemu.clone();
    let c = ctx.counts;
    let mut floor = FloorCycle::new(&qemu, AccelChoice::Kvm);
    if !kvm {
        return Ok(vec![Row::not_run(
            measurement,
            "≤ 1.05×",
            "not run: /dev/kvm is not usable here",
        )]);
    }
    if let Err(e) = floor.once() {
        return Ok(vec![Row::not_run(
            measurement,
            "≤ 1.05×",
            &format!("not run: QEMU with -accel kvm fails here ({e})"),
        )]);
    }
    let mut ours = OursCycle(machine_config(&qemu, AccelChoice::Kvm));
    let samples = interleave(
        &mut [&mut ours, &mut floor],
        c.cycle_warmup,
        c.cycle_rounds,
        progress("cycle-kvm", c.cycle_rounds),
    )?;
    ctx.detail_samples(
        "cycle, KVM",
        &["ours (Machine)", "floor (no library)"],
        &samples,
        Unit::Ns,
    );
    if let Some(line) = paired_detail("cycle, KVM, ours / floor", &samples[0], &samples[1], 1) {
        ctx.detail(line);
    }
    let o = summary(&samples[0], "ours")?;
    let f = summary(&samples[1], "floor")?;
    Ok(vec![Row {
        measurement,
        ours: time_cell(&o),
        baseline: time_cell(&f),
        ratio: format!("{:.3}×", o.median / f.median),
        goal: "≤ 1.05×".into(),
        met: met(o.median / f.median <= 1.05),
    }])
}

// ----------------------------------------------------------------------------------------------
// Round trips (and the C ABI)
// ----------------------------------------------------------------------------------------------

fn round_trips(ctx: &mut Ctx<'_>) -> Result<Vec<Row>, String> {
    let o = ctx.options;
    let (want_rtt, want_cabi) = (o.runs("rtt"), o.runs("cabi"));
    let qemu = o.qemu.clone();
    let c = ctx.counts;

    let plan = RttPlan {
        warmup: c.rtt_warmup,
        block: c.rtt_block,
    };
    let mut ours = OursRtt {
        config: machine_config(&qemu, AccelChoice::Tcg),
        plan,
    };
    let mut floor = want_rtt.then(|| FloorRtt {
        qemu: qemu.clone(),
        plan,
        like_ours: false,
    });
    let mut floor_same = want_rtt.then(|| FloorRtt {
        qemu: qemu.clone(),
        plan,
        like_ours: true,
    });
    let mut server = if want_rtt { start_python(ctx)? } else { None };
    let mut capi = if want_cabi {
        Some(CApiRtt::new(&qemu, plan)?)
    } else {
        None
    };

    let mut names = vec!["ours (Machine::execute)"];
    let mut cands: Vec<&mut dyn Candidate> = vec![&mut ours];
    if let Some(f) = floor.as_mut() {
        names.push("floor (no library)");
        cands.push(f);
    }
    if let Some(f) = floor_same.as_mut() {
        names.push("floor sending our exact bytes");
        cands.push(f);
    }
    let mut py = server.as_mut().map(|server| PythonRtt { server, plan });
    if let Some(p) = py.as_mut() {
        names.push("Python (qemu.qmp)");
        cands.push(p);
    }
    if let Some(a) = capi.as_mut() {
        names.push("C ABI (qm_machine_execute + qm_string_free)");
        cands.push(a);
    }
    let samples = interleave(&mut cands, 0, c.rtt_rounds, progress("rtt", c.rtt_rounds))?;
    drop(cands);
    drop(server);
    ctx.detail(format!(
        "- query-status round trips: every round, each candidate launches its own VM, runs {} \
         untimed and {} timed round trips, and shuts it down",
        plan.warmup, plan.block
    ));
    if want_rtt {
        let (caps, requests) = session_bytes(our_session_options(), 2)?;
        let text = |b: &[u8]| format!("`{}`", String::from_utf8_lossy(b).trim_end());
        ctx.detail(format!(
            "- our bytes (qmp_proto::Session with Machine's default options: oob on, in-band ids \
             off): {} then {}, {}, ...; the floor's: {} then {}",
            text(&caps),
            text(&requests[0]),
            text(&requests[1]),
            text(crate::floor::CAPABILITIES),
            text(crate::floor::QUERY_STATUS)
        ));
    }
    ctx.detail_samples("query-status round trip", &names, &samples, Unit::Ns);
    for (i, name) in names.iter().enumerate().skip(1) {
        let (a, b, what) = if name.starts_with("C ABI") {
            (
                &samples[i],
                &samples[0],
                format!("round trip, {name} / ours"),
            )
        } else {
            (
                &samples[0],
                &samples[i],
                format!("round trip, ours / {name}"),
            )
        };
        if let Some(line) = paired_detail(&what, a, b, plan.block) {
            ctx.detail(line);
        }
    }

    let index = |name: &str| names.iter().position(|n| n.starts_with(name));
    let per_op = |s: &Samples| s.cpu_ns / s.values.len() as f64;
    let mut rows = Vec::new();
    let ours_s = summary(&samples[0], "ours")?;
    let ours_cpu = per_op(&samples[0]);
    if want_rtt {
        let f_samples = &samples[index("floor").expect("floor ran")];
        let f = summary(f_samples, "floor")?;
        let ratio = ours_s.median / f.median;
        rows.push(Row {
            measurement:
                "query-status round trip, one running VM, vs the plain floor (`qmp_capabilities` without oob)"
                    .into(),
            ours: time_cell(&ours_s),
            baseline: time_cell(&f),
            ratio: format!("{ratio:.3}×"),
            goal: "≤ 1.03×".into(),
            met: met(ratio <= 1.03),
        });
        let same = summary(
            &samples[index("floor sending").expect("ran")],
            "floor, our bytes",
        )?;
        let ratio = ours_s.median / same.median;
        rows.push(Row {
            measurement:
                "query-status round trip vs a floor that sends our exact bytes: the client's own share"
                    .into(),
            ours: time_cell(&ours_s),
            baseline: time_cell(&same),
            ratio: format!("{ratio:.3}×"),
            goal: "≤ 1.03×".into(),
            met: met(ratio <= 1.03),
        });
        let py_measurement = "query-status round trip vs QEMU's Python stack (qemu.qmp)";
        let py_cpu_measurement = "client CPU time per query-status vs Python (getrusage)";
        match index("Python") {
            Some(i) => {
                let p = summary(&samples[i], "Python")?;
                rows.push(Row {
                    measurement: py_measurement.into(),
                    ours: time_cell(&ours_s),
                    baseline: time_cell(&p),
                    ratio: faster_cell(ours_s.median, p.median),
                    goal: "≥ 1.5× faster".into(),
                    met: met(p.median / ours_s.median >= 1.5),
                });
                let p_cpu = per_op(&samples[i]);
                rows.push(Row {
                    measurement: "client CPU time per query-status vs floor (getrusage)".into(),
                    ours: fmt_ns(ours_cpu),
                    baseline: fmt_ns(per_op(f_samples)),
                    ratio: format!("{:.2}×", ours_cpu / per_op(f_samples)),
                    goal: "—".into(),
                    met: Met::NoGoal,
                });
                rows.push(Row {
                    measurement: py_cpu_measurement.into(),
                    ours: fmt_ns(ours_cpu),
                    baseline: fmt_ns(p_cpu),
                    ratio: format!("{:.3}× ({:.1}× less)", ours_cpu / p_cpu, p_cpu / ours_cpu),
                    goal: "—".into(),
                    met: Met::NoGoal,
                });
            }
            None => {
                rows.push(Row::not_run(
                    py_measurement,
                    "≥ 1.5× faster",
                    python::INSTALL_HINT,
                ));
                rows.push(Row {
                    measurement: "client CPU time per query-status vs floor (getrusage)".into(),
                    ours: fmt_ns(ours_cpu),
                    baseline: fmt_ns(per_op(f_samples)),
                    ratio: format!("{:.2}×", ours_cpu / per_op(f_samples)),
                    goal: "—".into(),
                    met: Met::NoGoal,
                });
                rows.push(Row::not_run(py_cpu_measurement, "—", python::INSTALL_HINT));
            }
        }
    }
    if want_cabi {
        let i = index("C ABI").expect("C ABI ran");
        let a = summary(&samples[i], "C ABI")?;
        let ratio = a.median / ours_s.median;
        rows.push(Row {
            measurement:
                "query-status round trip through the C ABI (qm_machine_execute + qm_string_free) vs the Rust API (Machine::execute)"
                    .into(),
            ours: time_cell(&a),
            baseline: time_cell(&ours_s),
            ratio: format!("{ratio:.3}×"),
            goal: "≤ 1.02×".into(),
            met: met(ratio <= 1.02),
        });
        ctx.detail(format!(
            "- C ABI client CPU per query-status: {} (Rust API: {})",
            fmt_ns(per_op(&samples[i])),
            fmt_ns(ours_cpu)
        ));
    }
    Ok(rows)
}

// ----------------------------------------------------------------------------------------------
// Peak RSS
// ----------------------------------------------------------------------------------------------

// ----------------------------------------------------------------------------------------------
// qemu-process's own benchmark
// ----------------------------------------------------------------------------------------------

/// The workspace root (the harness's source tree).
fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ is in the workspace")
}

/// The cargo target directory this binary was built into (`<target>/release/qm-bench`).
fn target_dir() -> Result<std::path::PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("finding qm-bench itself: {e}"))?;
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .ok_or_else(|| "qm-bench is not in a cargo target directory".to_owned())
}

/// `cargo bench -p qemu-process --bench lifecycle`: the library crate's own, smaller version of
/// the cycle, round-trip and RSS rows (fixed blocks, one VM per client), run so that one command
/// covers every benchmark of the workspace; its output is shown as it is, as a cross-check.
fn process_bench(ctx: &mut Ctx<'_>) -> Result<Vec<Row>, String> {
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

fn peak_rss(ctx: &mut Ctx<'_>) -> Result<Vec<Row>, String> {
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

// ----------------------------------------------------------------------------------------------
// Decoder
// ----------------------------------------------------------------------------------------------

fn decoder(ctx: &mut Ctx<'_>) -> Result<Vec<Row>, String> {
    use qmp_proto::bench_stream::{self, READ_SIZE, SMALL_READ_SIZE};
    let c = ctx.counts;
    let stream = bench_stream::build(c.decode_mb * 1_000_000);
    let mut serde = DecodePass {
        stream: &stream,
        pass: bench_stream::serde_json_presplit,
        name: "serde_json",
    };
    let mut values = DecodePass {
        stream: &stream,
        pass: bench_stream::decoder_values,
        name: "Decoder::next_value",
    };
    let mut messages = DecodePass {
        stream: &stream,
        pass: bench_stream::decoder_messages,
        name: "Decoder::next_message",
    };
    let mut small = DecodePass {
        stream: &stream,
        pass: bench_stream::decoder_values_small_reads,
        name: "Decoder::next_value, small reads",
    };
    let samples = interleave(
        &mut [&mut serde, &mut values, &mut messages, &mut small],
        1,
        c.decode_rounds,
        progress("decoder", c.decode_rounds),
    )?;
    ctx.detail(format!(
        "- decoder stream: {:.1} MB, {} messages (mean {} bytes), fed in {} KiB reads \
         (or {SMALL_READ_SIZE}-byte reads)",
        stream.bytes.len() as f64 / 1e6,
        stream.messages.len(),
        stream.bytes.len() / stream.messages.len(),
        READ_SIZE / 1024
    ));
    ctx.detail_samples(
        "decoder",
        &[
            "serde_json::from_slice::<Value> on pre-split messages",
            "Decoder::next_value",
            "Decoder::next_message",
            "Decoder::next_value, 256-byte reads",
        ],
        &samples,
        Unit::MBps,
    );
    let base = summary(&samples[0], "serde_json")?;
    let mut rows = Vec::new();
    for (i, what) in [
        (1, "Decoder::next_value (streamed, 64 KiB reads)"),
        (2, "Decoder::next_message (streamed, classified)"),
        (3, "Decoder::next_value (256-byte reads: messages split)"),
    ] {
        let s = summary(&samples[i], what)?;
        rows.push(Row {
            measurement: format!(
                "qmp-proto {what} vs serde_json::from_slice on the same messages, pre-split"
            ),
            ours: format!("{:.0} MB/s", s.median),
            baseline: format!("{:.0} MB/s", base.median),
            ratio: format!("{:.2}×", s.median / base.median),
            goal: "—".into(),
            met: Met::NoGoal,
        });
    }
    Ok(rows)
}

// ----------------------------------------------------------------------------------------------
// Many VMs from one thread
// ----------------------------------------------------------------------------------------------

fn concurrent(ctx: &mut Ctx<'_>) -> Result<Vec<Row>, String> {
    let c = ctx.counts;
    let config = machine_config(&ctx.options.qemu, AccelChoice::Tcg);
    let mut sets: Vec<SetCycle> = [1usize, 4, 16]
        .iter()
        .map(|&n| SetCycle {
            configs: vec![config.clone(); n],
        })
        .collect();
    let mut floor16 = FloorSet {
        qemu: ctx.options.qemu.clone(),
        n: 16,
    };
    let mut cands: Vec<&mut dyn Candidate> =
        sets.iter_mut().map(|s| s as &mut dyn Candidate).collect();
    cands.push(&mut floor16);
    let samples = interleave(
        &mut cands,
        c.set_warmup,
        c.set_rounds,
        progress("concurrent", c.set_rounds),
    )?;
    drop(cands);
    ctx.detail_samples(
        "many VMs (MachineSet: launch, query-status each, shutdown_all)",
        &[
            "1 VM",
            "4 VMs",
            "16 VMs",
            "16 VMs, floor clients on 16 threads",
        ],
        &samples,
        Unit::Ns,
    );
    if let Some(line) = paired_detail(
        "16 VMs, MachineSet / floor clients on threads",
        &samples[2],
        &samples[3],
        1,
    ) {
        ctx.detail(line);
    }
    let one = summary(&samples[0], "1 VM")?;
    let nproc = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    for (i, n) in [(1, 4.0), (2, 16.0)] {
        let s = &samples[i];
        let per_vm = (s.cpu_ns + s.child_cpu_ns) / s.values.len() as f64 / n;
        ctx.detail(format!(
            "- {n} VMs: QEMU + client CPU {} per VM; on {nproc} idle CPUs that alone takes at \
             least {} for {n} VMs ({:.2}× of {n} × one VM)",
            fmt_ns(per_vm),
            fmt_ns(per_vm * n / nproc),
            per_vm * n / nproc / (n * one.median)
        ));
    }
    let mut rows = Vec::new();
    for (i, n, goal) in [(1, 4.0, 1.0), (2, 16.0, 0.5)] {
        let s = summary(&samples[i], "n VMs")?;
        let ratio = s.median / (n * one.median);
        rows.push(Row {
            measurement: format!(
                "{n} VMs at once from one thread (MachineSet: launch, query-status each, shutdown_all) vs {n} × one VM"
            ),
            ours: time_cell(&s),
            baseline: format!("{n} × {} = {}", fmt_ns(one.median), fmt_ns(n * one.median)),
            ratio: format!("{ratio:.2}×"),
            goal: if goal < 1.0 {
                format!("≤ {goal}× (well under {n}×)")
            } else {
                format!("< {goal}×")
            },
            met: met(if goal < 1.0 { ratio <= goal } else { ratio < goal }),
        });
    }
    let s16 = summary(&samples[2], "16 VMs")?;
    let f16 = summary(&samples[3], "16 VMs, floor")?;
    rows.push(Row {
        measurement: "16 VMs at once: ours from one thread vs 16 floor clients on 16 threads"
            .into(),
        ours: time_cell(&s16),
        baseline: time_cell(&f16),
        ratio: format!("{:.3}×", s16.median / f16.median),
        goal: "—".into(),
        met: Met::NoGoal,
    });
    Ok(rows)
}

// ----------------------------------------------------------------------------------------------
// Sizes
// ----------------------------------------------------------------------------------------------

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

fn sizes(ctx: &mut Ctx<'_>) -> Result<Vec<Row>, String> {
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
