//! Events throughput: `stop`/`cont` pairs on one VM, every STOP and RESUME event delivered to
//! the caller in order, against the floor reading the same events off the socket.

use std::path::PathBuf;
use std::time::Duration;

use qemu_process::{AccelChoice, Machine, MachineConfig};

use crate::candidates::{
    interleave, machine_config, our_session_options, session_bytes, Candidate, Samples,
};
use crate::floor::{FloorVm, CAPABILITIES};
use crate::report::{Met, Row};
use crate::stats::fmt_ns;

use super::{paired_detail, progress, summary, time_cell, Ctx, Unit};

/// The names the events must come in, over and over.
const ORDER: [&str; 2] = ["STOP", "RESUME"];

/// Times `pairs` stop/cont pairs (after a few untimed ones) and the CPU time over them.
fn timed(
    pairs: usize,
    out: &mut Samples,
    mut pair: impl FnMut() -> Result<(), String>,
) -> Result<(), String> {
    for _ in 0..10 {
        pair()?;
    }
    let (start, cpu) = (std::time::Instant::now(), crate::candidates::cpu_ns());
    for _ in 0..pairs {
        pair()?;
    }
    out.values.push(start.elapsed().as_nanos() as f64);
    out.cpu_ns += crate::candidates::cpu_ns() - cpu;
    Ok(())
}

/// Ours: `Machine::pause`, `Machine::resume`, then `Machine::take_events` (the two events are
/// kept by then: QEMU sends each before the reply to its command).
struct Ours {
    config: MachineConfig,
    pairs: usize,
}

impl Candidate for Ours {
    fn run(&mut self, out: &mut Samples) -> Result<(), String> {
        let err = |e: qemu_process::Error| format!("ours: {e}");
        let mut vm = Machine::launch(&self.config).map_err(err)?;
        let mut seen = 0usize;
        timed(self.pairs, out, || {
            vm.pause().map_err(err)?;
            vm.resume().map_err(err)?;
            for event in vm.take_events() {
                if event.name != ORDER[seen % 2] {
                    return Err(format!("ours: event {seen} is {}", event.name));
                }
                seen += 1;
            }
            Ok(())
        })?;
        if seen != 2 * (self.pairs + 10) {
            return Err(format!("ours: {seen} events for {} pairs", self.pairs + 10));
        }
        vm.shutdown(Duration::from_secs(10)).map_err(err)?;
        Ok(())
    }
}

/// The floor: `stop` and `cont` written, the event lines before each reply checked by name.
/// It negotiates with `caps` (the plain `qmp_capabilities`, or our library's bytes).
struct Floor {
    qemu: PathBuf,
    pairs: usize,
    caps: Vec<u8>,
}

impl Candidate for Floor {
    fn run(&mut self, out: &mut Samples) -> Result<(), String> {
        let err = |e: std::io::Error| format!("floor: {e}");
        let mut vm = FloorVm::launch_with(&self.qemu, "tcg", &self.caps).map_err(err)?;
        let mut seen = 0usize;
        let mut wrong = None;
        timed(self.pairs, out, || {
            for request in [
                &b"{\"execute\":\"stop\"}\r\n"[..],
                b"{\"execute\":\"cont\"}\r\n",
            ] {
                vm.execute_seeing(request, |line| {
                    let want = format!("\"event\": \"{}\"", ORDER[seen % 2]);
                    if !line.windows(want.len()).any(|w| w == want.as_bytes()) {
                        wrong.get_or_insert(seen);
                    }
                    seen += 1;
                })
                .map_err(err)?;
            }
            Ok(())
        })?;
        if let Some(n) = wrong {
            return Err(format!("floor: event {n} out of order"));
        }
        if seen != 2 * (self.pairs + 10) {
            return Err(format!(
                "floor: {seen} events for {} pairs",
                self.pairs + 10
            ));
        }
        vm.quit().map_err(err)?;
        Ok(())
    }
}

pub(super) fn events(ctx: &mut Ctx<'_>) -> Result<Vec<Row>, String> {
    let c = ctx.counts;
    let pairs = c.event_pairs;
    let mut ours = Ours {
        config: machine_config(&ctx.options.qemu, AccelChoice::Tcg),
        pairs,
    };
    let mut floor = Floor {
        qemu: ctx.options.qemu.clone(),
        pairs,
        caps: CAPABILITIES.to_vec(),
    };
    let mut floor_same = Floor {
        qemu: ctx.options.qemu.clone(),
        pairs,
        caps: session_bytes(our_session_options(), 0)?.0,
    };
    let samples = interleave(
        &mut [&mut ours, &mut floor, &mut floor_same],
        0,
        c.event_rounds,
        progress("events", c.event_rounds),
    )?;
    let events = 2 * pairs;
    ctx.detail(format!(
        "- events: every round, each client launches a VM, runs 10 untimed and {pairs} timed \
         stop/cont pairs ({events} STOP and RESUME events, each checked in order), and shuts it \
         down; ours takes the events with `Machine::take_events` after each pair; the second \
         floor negotiates `oob` as our library does (QEMU then runs the monitor's I/O in a \
         thread of its own)"
    ));
    ctx.detail_samples(
        &format!("events, {events} delivered"),
        &[
            "ours (pause, resume, take_events)",
            "floor (no library)",
            "floor negotiating as we do (oob)",
        ],
        &samples,
        Unit::Ns,
    );
    for (i, what) in [
        (1, "events, ours / floor"),
        (2, "events, ours / floor negotiating as we do"),
    ] {
        if let Some(line) = paired_detail(what, &samples[0], &samples[i], 1) {
            ctx.detail(line);
        }
    }
    let o = summary(&samples[0], "ours")?;
    let f = summary(&samples[1], "floor")?;
    let fs = summary(&samples[2], "floor, oob")?;
    let per_event = |s: &Samples| s.cpu_ns / s.values.len() as f64 / events as f64;
    let cell = |sum: &crate::stats::Summary, s: &Samples| {
        format!(
            "{} = {:.0}/s (client CPU {} per event)",
            time_cell(sum),
            events as f64 / (sum.median / 1e9),
            fmt_ns(per_event(s))
        )
    };
    Ok(vec![
        Row {
            measurement: format!(
                "{events} events (stop/cont) delivered in order from one VM, vs the plain floor \
                 (`qmp_capabilities` without oob)"
            ),
            ours: cell(&o, &samples[0]),
            baseline: cell(&f, &samples[1]),
            ratio: format!("{:.3}×", o.median / f.median),
            goal: "—".into(),
            met: Met::NoGoal,
        },
        Row {
            measurement: format!(
                "{events} events, vs a floor that negotiates as we do (oob): the client's own \
                 share"
            ),
            ours: cell(&o, &samples[0]),
            baseline: cell(&fs, &samples[2]),
            ratio: format!("{:.3}×", o.median / fs.median),
            goal: "—".into(),
            met: Met::NoGoal,
        },
    ])
}
