//! The groups of rows, run in order, and the report around them.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use crate::candidates::Samples;
use crate::opts::Options;
use crate::python::{self, Server};
use crate::report::{table, Row};
use crate::stats::{fmt_ns, paired_ratios, Summary};
use crate::sysinfo;

mod concurrent;
mod cycles;
mod decoder;
mod events;
mod guest;
mod idle;
mod peak_rss;
mod process_bench;
mod round_trips;
mod scale;
mod sizes;

use concurrent::concurrent;
use cycles::{cycle_kvm, cycle_tcg};
use decoder::decoder;
use events::events;
use guest::guest;
use idle::idle;
use peak_rss::peak_rss;
use process_bench::process_bench;
use round_trips::round_trips;
use scale::scale;
use sizes::sizes;

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
    scale_rounds: usize,
    idle_rounds: usize,
    idle_window: Duration,
    guest_rounds: usize,
    console_bytes: usize,
    event_pairs: usize,
    event_rounds: usize,
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
    scale_rounds: 5,
    idle_rounds: 2,
    idle_window: Duration::from_secs(10),
    guest_rounds: 8,
    console_bytes: 256 << 10,
    event_pairs: 5000,
    event_rounds: 6,
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
    scale_rounds: 1,
    idle_rounds: 1,
    idle_window: Duration::from_secs(3),
    guest_rounds: 1,
    console_bytes: 32 << 10,
    event_pairs: 1000,
    event_rounds: 2,
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
    let groups: [(&str, &[&str], Group); 12] = [
        ("cycle", &["cycle"], cycle_tcg),
        ("cycle-kvm", &["cycle-kvm"], |c| {
            cycle_kvm(c, sysinfo::kvm_usable())
        }),
        ("rtt", &["rtt", "cabi"], round_trips),
        ("rss", &["rss"], peak_rss),
        ("decoder", &["decoder"], decoder),
        ("concurrent", &["concurrent"], concurrent),
        ("scale", &["scale"], scale),
        ("idle", &["idle"], idle),
        ("guest", &["boot", "console"], guest),
        ("events", &["events"], events),
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
