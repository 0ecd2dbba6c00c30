//! A real guest: the busybox fixture of the tests crate booted under TCG, against a floor client
//! that runs the same QEMU command line and reads the console socket itself. One boot per unit
//! gives two figures: launch to the ready line on the console, and the time to deliver the
//! bytes a `qm.run` script then prints (between two markers), i.e. console throughput.

use std::time::{Duration, Instant};

use qemu_cmdline::{Size, VmSpec};
use qemu_machine_tests::fixture::{run_param, GuestFixture, READY_LINE};
use qemu_process::{AccelChoice, Machine, MachineConfig};

use crate::candidates::cpu_ns;
use crate::floor::FloorGuest;
use crate::report::{met, Row};
use crate::stats::{fmt_bytes, fmt_ns, paired_ratios, Summary};

use super::{progress, Ctx};

const START: &[u8] = b"QM-BENCH-START";
const END: &[u8] = b"QM-BENCH-END";
/// How long one wait for the guest may take (TCG on a loaded machine).
const WAIT: Duration = Duration::from_secs(300);

/// The guest's script: the start marker, `bytes` bytes of `x`, the end marker.
fn script(bytes: usize) -> String {
    format!(
        "echo {}\nhead -c {bytes} /dev/zero | tr '\\0' x\necho {}\n",
        String::from_utf8_lossy(START),
        String::from_utf8_lossy(END)
    )
}

/// The launch config: the fixture with the script, 256 MiB, TCG, a console buffer that keeps
/// all of the output.
fn config(qemu: &std::path::Path, bytes: usize) -> Result<MachineConfig, String> {
    let fixture = GuestFixture::get().map_err(|e| e.to_string())?;
    let spec = VmSpec {
        memory: Some(Size::mib(256)),
        kernel: Some(fixture.kernel.clone()),
        initrd: Some(fixture.initrd.clone()),
        append: Some(fixture.kernel_cmdline(&[], &run_param(&script(bytes)))),
        no_reboot: true,
        ..VmSpec::default()
    };
    let mut config = MachineConfig::new(qemu);
    config
        .vm(spec)
        .accel(AccelChoice::Tcg)
        .launch_timeout(WAIT)
        .console_buffer_bytes(bytes + (1 << 20));
    Ok(config)
}

/// One unit's figures.
#[derive(Clone, Copy, Debug, Default)]
struct Unit {
    boot_ns: f64,
    console_ns: f64,
    console_bytes: f64,
    console_cpu_ns: f64,
}

fn ours(config: &MachineConfig) -> Result<Unit, String> {
    let err = |e: qemu_process::Error| format!("ours: {e}");
    let start = Instant::now();
    let mut vm = Machine::launch(config).map_err(err)?;
    vm.console_wait_for(READY_LINE.as_bytes(), WAIT)
        .map_err(err)?;
    let boot_ns = start.elapsed().as_nanos() as f64;
    vm.console_wait_for(START, WAIT).map_err(err)?;
    let (t, cpu) = (Instant::now(), cpu_ns());
    let delivered = vm.console_wait_for(END, WAIT).map_err(err)?;
    let console_ns = t.elapsed().as_nanos() as f64;
    let console_cpu_ns = cpu_ns() - cpu;
    drop(vm);
    Ok(Unit {
        boot_ns,
        console_ns,
        console_bytes: delivered.len() as f64,
        console_cpu_ns,
    })
}

fn floor(argv: &[std::ffi::OsString]) -> Result<Unit, String> {
    let err = |e: std::io::Error| format!("floor: {e}");
    let start = Instant::now();
    let mut guest = FloorGuest::spawn(argv).map_err(err)?;
    guest.read_until(READY_LINE.as_bytes()).map_err(err)?;
    let boot_ns = start.elapsed().as_nanos() as f64;
    guest.read_until(START).map_err(err)?;
    let (t, cpu) = (Instant::now(), cpu_ns());
    let bytes = guest.read_until(END).map_err(err)?;
    let console_ns = t.elapsed().as_nanos() as f64;
    let console_cpu_ns = cpu_ns() - cpu;
    drop(guest);
    Ok(Unit {
        boot_ns,
        console_ns,
        console_bytes: bytes as f64,
        console_cpu_ns,
    })
}

fn summary(values: &[f64]) -> Summary {
    Summary::of(values).unwrap_or(Summary {
        n: 0,
        median: f64::NAN,
        p90: f64::NAN,
        mean: f64::NAN,
        stdev: f64::NAN,
        min: f64::NAN,
    })
}

pub(super) fn guest(ctx: &mut Ctx<'_>) -> Result<Vec<Row>, String> {
    let bytes = ctx.counts.console_bytes;
    let rounds = ctx.counts.guest_rounds;
    let config = config(&ctx.options.qemu, bytes)?;
    let argv = config.argv().map_err(|e| e.to_string())?;
    let mut units: [Vec<Unit>; 2] = [Vec::new(), Vec::new()];
    let mut report = progress("guest", rounds);
    for round in 0..rounds {
        for k in 0..2 {
            let i = (round + k) % 2;
            let unit = if i == 0 {
                ours(&config)?
            } else {
                floor(&argv)?
            };
            if unit.console_bytes < bytes as f64 {
                return Err(format!(
                    "{} got {} console bytes between the markers, fewer than the {bytes} printed",
                    ["ours", "floor"][i],
                    unit.console_bytes
                ));
            }
            units[i].push(unit);
        }
        report(round + 1);
    }
    let field = |i: usize, f: fn(&Unit) -> f64| units[i].iter().map(f).collect::<Vec<f64>>();
    let boot = [
        summary(&field(0, |u| u.boot_ns)),
        summary(&field(1, |u| u.boot_ns)),
    ];
    let cons = [
        summary(&field(0, |u| u.console_ns)),
        summary(&field(1, |u| u.console_ns)),
    ];
    let cpu = |i: usize| summary(&field(i, |u| u.console_cpu_ns)).median;
    let got = |i: usize| summary(&field(i, |u| u.console_bytes)).median;
    let rate = |i: usize| got(i) / (cons[i].median / 1e9);
    ctx.detail(format!(
        "- guest: the tests crate's busybox fixture, 256 MiB, TCG, booted {rounds} times by each \
         client; command line (the floor runs the same): `{}`",
        qemu_cmdline::shell_quote(&argv)
    ));
    ctx.detail(format!(
        "- guest: after the ready line a `qm.run` script prints `{}`, {} of `x` (`head -c \
         {bytes} /dev/zero | tr '\\0' x`) and `{}`; the console time runs from the client seeing \
         the first marker to it seeing the second, with every byte between delivered (ours: \
         the bytes `Machine::console_wait_for` returns; the floor counts them)",
        String::from_utf8_lossy(START),
        fmt_bytes(bytes as f64),
        String::from_utf8_lossy(END),
    ));
    for (i, name) in [
        "ours (Machine::launch, console_wait_for)",
        "floor (bare reader)",
    ]
    .iter()
    .enumerate()
    {
        ctx.detail(format!(
            "- guest, {name}: boot to ready median {}, p90 {}, min {}; console {} in median {} \
             (p90 {}, min {}) = {:.1} KiB/s, client CPU {} over it ({} per KiB)",
            fmt_ns(boot[i].median),
            fmt_ns(boot[i].p90),
            fmt_ns(boot[i].min),
            fmt_bytes(got(i)),
            fmt_ns(cons[i].median),
            fmt_ns(cons[i].p90),
            fmt_ns(cons[i].min),
            rate(i) / 1024.0,
            fmt_ns(cpu(i)),
            fmt_ns(cpu(i) / (got(i) / 1024.0)),
        ));
    }
    for (what, f) in [
        ("boot to ready", (|u: &Unit| u.boot_ns) as fn(&Unit) -> f64),
        ("console time", |u: &Unit| u.console_ns),
    ] {
        if let Some(p) = paired_ratios(&field(0, f), &field(1, f), 1) {
            ctx.detail(format!(
                "- guest, {what}, ours / floor, paired round by round: median {:.3}×, p90 \
                 {:.3}×, over {} rounds",
                p.median, p.p90, p.n
            ));
        }
    }
    let boot_ratio = boot[0].median / boot[1].median;
    let cons_ratio = cons[0].median / cons[1].median;
    Ok(vec![
        Row {
            measurement: "guest boot, TCG: launch → the fixture's ready line on the console, vs \
                          a floor client reading the console socket"
                .into(),
            ours: format!("{} (p90 {})", fmt_ns(boot[0].median), fmt_ns(boot[0].p90)),
            baseline: format!("{} (p90 {})", fmt_ns(boot[1].median), fmt_ns(boot[1].p90)),
            ratio: format!("{boot_ratio:.3}×"),
            goal: "≤ 1.02×".into(),
            met: met(boot_ratio <= 1.02),
        },
        Row {
            measurement: format!(
                "console throughput: {} printed by the guest, delivered to the caller, vs the \
                 same floor reader",
                fmt_bytes(bytes as f64)
            ),
            ours: format!("{} = {:.1} KiB/s", fmt_ns(cons[0].median), rate(0) / 1024.0),
            baseline: format!("{} = {:.1} KiB/s", fmt_ns(cons[1].median), rate(1) / 1024.0),
            ratio: format!("{cons_ratio:.3}× the time"),
            goal: "≤ 1.05× the floor's time".into(),
            met: met(cons_ratio <= 1.05),
        },
    ])
}
