//! Idle costs nothing: 64 idle VMs held by a thread blocked in the library's wait
//! (`MachineSet::next_event` with a timeout as long as the window), against the floor holding
//! 64 VMs in one `poll(2)` on their QMP sockets; the waiting thread's CPU time and context
//! switches over the window, and the process guardian's.

use std::time::{Duration, Instant};

use qemu_process::{AccelChoice, Error, MachineSet};

use crate::candidates::machine_config;
use crate::floor::FloorVm;
use crate::procfs::{threads_cpu_ns, Usage};
use crate::report::{met, Row};
use crate::stats::{fmt_ns, Summary};

use super::{progress, Ctx};

/// How many VMs are held.
const VMS: usize = 64;
/// The goal for the client's CPU time over the window.
const CPU_GOAL_NS: f64 = 1e6;

/// What one hold measured.
#[derive(Clone, Copy, Debug, Default)]
struct Hold {
    wall_ns: f64,
    client: Usage,
    guardian: Option<Usage>,
    qemu_cpu_ns: f64,
}

/// Waits a moment (what the launches left in flight settles), then measures around `wait`.
fn hold(
    pids: &[u32],
    guardian: Option<u32>,
    mut wait: impl FnMut() -> Result<(), String>,
) -> Result<Hold, String> {
    let guardian_usage = || guardian.map(|g| Usage::read(&g.to_string())).transpose();
    // This thread's CPU clock is read last before the wait and first after it, so that the
    // /proc reads (hundreds of files for the QEMUs) are not counted in its CPU time.
    let q0 = threads_cpu_ns(pids);
    let g0 = guardian_usage()?;
    let c0 = Usage::read("thread-self")?;
    let cpu0 = Usage::thread_cpu_ns()?;
    let start = Instant::now();
    wait()?;
    let wall_ns = start.elapsed().as_nanos() as f64;
    let cpu1 = Usage::thread_cpu_ns()?;
    let mut c1 = Usage::read("thread-self")?;
    // The CPU time from the clock, read right around the wait (schedstat lags behind for a
    // running thread).
    c1.cpu_ns = c0.cpu_ns + (cpu1 - cpu0);
    let g1 = guardian_usage()?;
    let q1 = threads_cpu_ns(pids);
    Ok(Hold {
        wall_ns,
        client: c1.minus(c0),
        guardian: g1.zip(g0).map(|(a, b)| a.minus(b)),
        qemu_cpu_ns: q1 - q0,
    })
}

fn ours(ctx: &Ctx<'_>, window: Duration) -> Result<Hold, String> {
    let err = |e: Error| format!("ours: {e}");
    let configs = vec![machine_config(&ctx.options.qemu, AccelChoice::Tcg); VMS];
    let mut set = MachineSet::launch(&configs, Duration::from_secs(300)).map_err(err)?;
    let pids: Vec<u32> = set.iter().filter_map(|m| m.pid()).collect();
    let guardian = qemu_process::guardian_pid();
    let mut wait = |d: Duration| match set.next_event(d) {
        Err(e) if e.is_timeout() => Ok(()),
        Ok((i, event)) => Err(format!("ours: an event from an idle VM {i}: {event:?}")),
        Err(e) => Err(err(e)),
    };
    wait(Duration::from_millis(200))?;
    let held = hold(&pids, guardian, || wait(window))?;
    for result in set.shutdown_all(Duration::from_secs(30)) {
        result.map_err(err)?;
    }
    Ok(held)
}

fn floor(ctx: &Ctx<'_>, window: Duration) -> Result<Hold, String> {
    let mut vms = Vec::with_capacity(VMS);
    for _ in 0..VMS {
        vms.push(FloorVm::launch(&ctx.options.qemu, "tcg").map_err(|e| format!("floor: {e}"))?);
    }
    let pids: Vec<u32> = vms.iter().filter_map(FloorVm::pid).collect();
    let mut fds: Vec<libc::pollfd> = vms
        .iter()
        .map(|vm| libc::pollfd {
            fd: vm.socket_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let mut wait = |d: Duration| {
        // SAFETY: `fds` is a valid array of pollfd of that length.
        let n = unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                d.as_millis() as libc::c_int,
            )
        };
        match n {
            0 => Ok(()),
            n if n > 0 => Err("floor: an idle VM sent something".to_owned()),
            _ => Err(format!("floor: poll: {}", std::io::Error::last_os_error())),
        }
    };
    wait(Duration::from_millis(200))?;
    let held = hold(&pids, None, || wait(window))?;
    for vm in vms {
        vm.quit().map_err(|e| format!("floor: {e}"))?;
    }
    Ok(held)
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    Summary::of(&values.collect::<Vec<_>>()).map_or(f64::NAN, |s| s.median)
}

pub(super) fn idle(ctx: &mut Ctx<'_>) -> Result<Vec<Row>, String> {
    let window = ctx.counts.idle_window;
    let rounds = ctx.counts.idle_rounds;
    let mut ours_holds = Vec::new();
    let mut floor_holds = Vec::new();
    let mut report = progress("idle", rounds);
    for round in 0..rounds {
        if round % 2 == 0 {
            ours_holds.push(ours(ctx, window)?);
            floor_holds.push(floor(ctx, window)?);
        } else {
            floor_holds.push(floor(ctx, window)?);
            ours_holds.push(ours(ctx, window)?);
        }
        report(round + 1);
    }
    let secs = window.as_secs_f64();
    for (name, holds) in [
        ("ours (one thread in MachineSet::next_event)", &ours_holds),
        ("floor (one poll(2) on the 64 QMP sockets)", &floor_holds),
    ] {
        for h in holds.iter() {
            ctx.detail(format!(
                "- idle, {VMS} VMs held {secs:.0} s, {name}: window {}; the waiting thread: CPU \
                 {}, {} voluntary and {} involuntary context switches{}; the {VMS} QEMUs: CPU {}",
                fmt_ns(h.wall_ns),
                fmt_ns(h.client.cpu_ns),
                h.client.voluntary,
                h.client.involuntary,
                match h.guardian {
                    Some(g) => format!(
                        "; the guardian: CPU {}, {} voluntary and {} involuntary context switches",
                        fmt_ns(g.cpu_ns),
                        g.voluntary,
                        g.involuntary
                    ),
                    None => String::new(),
                },
                fmt_ns(h.qemu_cpu_ns),
            ));
        }
    }
    let cpu = |h: &[Hold]| median(h.iter().map(|h| h.client.cpu_ns));
    // A wake-up ends a sleep, and a sleep is a voluntary switch; an involuntary one is a
    // preemption of a running thread (other work on the machine), not a wake-up.
    let most =
        |h: &[Hold], f: fn(&Usage) -> f64| h.iter().map(|h| f(&h.client)).fold(0.0, f64::max);
    let (ocpu, fcpu) = (cpu(&ours_holds), cpu(&floor_holds));
    let switches = |h: &[Hold]| {
        format!(
            "{} ({} involuntary)",
            most(h, |u| u.voluntary),
            most(h, |u| u.involuntary)
        )
    };
    let worst_sleeps = most(&ours_holds, |u| u.voluntary);
    let g_cpu = median(
        ours_holds
            .iter()
            .map(|h| h.guardian.map_or(f64::NAN, |g| g.cpu_ns)),
    );
    let g_sw = ours_holds
        .iter()
        .map(|h| h.guardian.map_or(f64::NAN, |g| g.switches()))
        .fold(0.0, f64::max);
    let what = format!("{VMS} idle VMs held {secs:.0} s by a thread blocked in");
    Ok(vec![
        Row {
            measurement: format!(
                "{what} MachineSet::next_event: the client's CPU time over the window, vs the \
                 floor blocked in poll(2)"
            ),
            ours: fmt_ns(ocpu),
            baseline: fmt_ns(fcpu),
            ratio: "—".into(),
            goal: "< 1 ms".into(),
            met: met(ocpu < CPU_GOAL_NS),
        },
        Row {
            measurement: format!(
                "{what} MachineSet::next_event: the waiting thread's voluntary context switches, \
                 most in a round (1 = its one sleep, ended by the timeout)"
            ),
            ours: switches(&ours_holds),
            baseline: switches(&floor_holds),
            ratio: "—".into(),
            goal: "no wake-ups (1 sleep)".into(),
            met: met(worst_sleeps <= 1.0),
        },
        Row {
            measurement: format!(
                "the process guardian over the same {secs:.0} s: CPU time, context switches"
            ),
            ours: format!("{}, {g_sw}", fmt_ns(g_cpu)),
            baseline: "— (no guardian)".into(),
            ratio: "—".into(),
            goal: "nothing (0 switches)".into(),
            met: met(g_sw == 0.0),
        },
    ])
}
