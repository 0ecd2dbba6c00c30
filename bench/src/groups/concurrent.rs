//! Many VMs driven from one thread.

use qemu_process::AccelChoice;

use crate::candidates::{interleave, machine_config, Candidate, FloorSet, SetCycle};
use crate::report::{met, Met, Row};
use crate::stats::fmt_ns;

use super::{paired_detail, progress, summary, time_cell, Ctx, Unit};

pub(super) fn concurrent(ctx: &mut Ctx<'_>) -> Result<Vec<Row>, String> {
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
