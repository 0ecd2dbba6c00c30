//! The QMP round-trip rows, through the Rust API and the C ABI.

use qemu_process::AccelChoice;

use crate::candidates::{
    interleave, machine_config, our_session_options, session_bytes, CApiRtt, Candidate, FloorRtt,
    OursRtt, PythonRtt, RttPlan, Samples,
};
use crate::python;
use crate::report::{met, Met, Row};
use crate::stats::fmt_ns;

use super::{faster_cell, paired_detail, progress, start_python, summary, time_cell, Ctx, Unit};

pub(super) fn round_trips(ctx: &mut Ctx<'_>) -> Result<Vec<Row>, String> {
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
