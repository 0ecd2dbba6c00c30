//! The launch-to-reaped cycle rows: under TCG, and under KVM where it is usable.

use qemu_process::AccelChoice;

use crate::candidates::{
    interleave, machine_config, Candidate, FloorCycle, OursCycle, PythonCycle,
};
use crate::python;
use crate::report::{met, Row};

use super::{faster_cell, paired_detail, progress, start_python, summary, time_cell, Ctx, Unit};

const CYCLE: &str = "launch → negotiated → query-status → quit → reaped";

pub(super) fn cycle_tcg(ctx: &mut Ctx<'_>) -> Result<Vec<Row>, String> {
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

pub(super) fn cycle_kvm(ctx: &mut Ctx<'_>, kvm: bool) -> Result<Vec<Row>, String> {
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
