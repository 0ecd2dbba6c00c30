//! The many-VMs workload, run in a fresh process (`qm-bench __scale CLIENT N`) so that its
//! memory, descriptors and CPU time are its own: launch N `-machine none` VMs, query each 100
//! times, the machines taken in turn, then quit them all and reap them. The process first
//! lowers its soft limit of open files to 1024 (the usual default), so the run shows whether N
//! machines fit in it.
//!
//! Clients:
//! - `ours`: one thread, `MachineSet::launch`, then 100 rounds of `MachineSet::execute_all`
//!   (`query-status` to every machine at once, the replies taken as they come), then
//!   `MachineSet::shutdown_all` and drop.
//! - `serial`: the same, but each round asks the machines one after the other with
//!   `Machine::command` (one round trip at a time).
//! - `events`: the same set, but each round takes every machine in turn through `stop`, its
//!   STOP event from `MachineSet::next_event`, `cont` and its RESUME event (for the
//!   instruction counts: one machine's events among many idle ones).
//! - `floor`: N threads, each a floor client (`FloorVm`) for one VM: launch, 100 queries, quit;
//!   the threads meet at barriers between the phases so that the phases can be timed.
//!
//! It prints `name value` lines (see [`Report`]).

use std::path::Path;
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use qemu_process::{AccelChoice, MachineSet};
use qmp_proto::commands::QueryStatus;

use crate::candidates::{cpu_ns, machine_config};
use crate::floor::{FloorVm, QUERY_STATUS};
use crate::procfs::threads_cpu_ns;
use crate::rss::status_kib;

/// Queries per machine.
pub const QUERIES: usize = 100;
/// Untimed queries per machine before those (counted in the launch phase), so that the first
/// use of the code and the allocator's growth are not in the per-command figures.
pub const WARMUP: usize = 5;
/// The soft limit of open files the workload runs under.
pub const NOFILE: u64 = 1024;
const SHUTDOWN: Duration = Duration::from_secs(30);

/// What one run measured.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Report {
    /// Launch to reaped, ns.
    pub wall_ns: f64,
    /// The launch phase, ns.
    pub launch_ns: f64,
    /// The query phase, ns.
    pub query_ns: f64,
    /// The quit-and-reap phase, ns.
    pub shutdown_ns: f64,
    /// The client's CPU time over the query phase, ns.
    pub query_cpu_ns: f64,
    /// The QEMUs' CPU time over the query phase, ns.
    pub qemu_query_cpu_ns: f64,
    /// The client's CPU time over the whole run, ns.
    pub cpu_ns: f64,
    /// VmRSS before the launch (after the guardian started), KiB.
    pub rss_before_kib: f64,
    /// VmRSS after the queries, KiB.
    pub rss_kib: f64,
    /// RssAnon after the queries, KiB.
    pub anon_kib: f64,
    /// VmHWM at the end, KiB.
    pub hwm_kib: f64,
    /// Open descriptors before the launch.
    pub fds_before: f64,
    /// Open descriptors after the queries.
    pub fds: f64,
    /// The guardian's open descriptors before the launch (ours only).
    pub guardian_fds_before: f64,
    /// The guardian's open descriptors after the queries (ours only).
    pub guardian_fds: f64,
    /// The soft limit of open files during the run.
    pub nofile: f64,
}

impl Report {
    const FIELDS: [&'static str; 16] = [
        "wall_ns",
        "launch_ns",
        "query_ns",
        "shutdown_ns",
        "query_cpu_ns",
        "qemu_query_cpu_ns",
        "cpu_ns",
        "rss_before_kib",
        "rss_kib",
        "anon_kib",
        "hwm_kib",
        "fds_before",
        "fds",
        "guardian_fds_before",
        "guardian_fds",
        "nofile",
    ];

    fn values(&self) -> [f64; 16] {
        [
            self.wall_ns,
            self.launch_ns,
            self.query_ns,
            self.shutdown_ns,
            self.query_cpu_ns,
            self.qemu_query_cpu_ns,
            self.cpu_ns,
            self.rss_before_kib,
            self.rss_kib,
            self.anon_kib,
            self.hwm_kib,
            self.fds_before,
            self.fds,
            self.guardian_fds_before,
            self.guardian_fds,
            self.nofile,
        ]
    }

    /// The `name value` lines.
    pub fn to_text(&self) -> String {
        Self::FIELDS
            .iter()
            .zip(self.values())
            .map(|(k, v)| format!("{k} {v}\n"))
            .collect()
    }

    /// Parses what [`to_text`](Report::to_text) printed; every field must be there.
    pub fn parse(text: &str) -> Result<Report, String> {
        let mut values = [f64::NAN; 16];
        for line in text.lines() {
            let Some((k, v)) = line.split_once(' ') else {
                continue;
            };
            if let Some(i) = Self::FIELDS.iter().position(|f| *f == k) {
                values[i] = v.trim().parse().map_err(|_| format!("bad {k}: {v:?}"))?;
            }
        }
        if let Some(i) = values.iter().position(|v| v.is_nan()) {
            return Err(format!("no {} in {text:?}", Self::FIELDS[i]));
        }
        let [wall_ns, launch_ns, query_ns, shutdown_ns, query_cpu_ns, qemu_query_cpu_ns, cpu_ns, rss_before_kib, rss_kib, anon_kib, hwm_kib, fds_before, fds, guardian_fds_before, guardian_fds, nofile] =
            values;
        Ok(Report {
            wall_ns,
            launch_ns,
            query_ns,
            shutdown_ns,
            query_cpu_ns,
            qemu_query_cpu_ns,
            cpu_ns,
            rss_before_kib,
            rss_kib,
            anon_kib,
            hwm_kib,
            fds_before,
            fds,
            guardian_fds_before,
            guardian_fds,
            nofile,
        })
    }
}

/// Runs the workload for `client` with `n` VMs, each queried `queries` times, and prints the
/// report.
pub fn run(client: &str, n: usize, queries: usize, qemu: &Path) -> Result<(), String> {
    let nofile = lower_nofile(NOFILE)?;
    let mut report = match client {
        "ours" => ours(n, queries, qemu, Mode::ExecuteAll)?,
        "serial" => ours(n, queries, qemu, Mode::Serial)?,
        "events" => ours(n, queries, qemu, Mode::Events)?,
        "floor" => floor(n, queries, qemu)?,
        other => return Err(format!("unknown client {other:?}")),
    };
    report.nofile = nofile as f64;
    report.hwm_kib = status_field("VmHWM")?;
    print!("{}", report.to_text());
    Ok(())
}

/// Lowers the soft limit of open files to `limit` (if it is higher) and returns it.
fn lower_nofile(limit: u64) -> Result<u64, String> {
    // SAFETY: all-zero is a valid rlimit; getrlimit writes into it.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: `lim` is writable.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(format!("getrlimit: {}", std::io::Error::last_os_error()));
    }
    if lim.rlim_cur > limit {
        lim.rlim_cur = limit;
        // SAFETY: `lim` is a valid rlimit with the soft limit at most the hard one.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(format!("setrlimit: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(lim.rlim_cur)
}

fn status_field(field: &str) -> Result<f64, String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("reading /proc/self/status: {e}"))?;
    status_kib(&status, field)
        .map(|v| v as f64)
        .ok_or_else(|| format!("no {field} in /proc/self/status"))
}

/// How many descriptors `pid` (or this process) has open.
pub fn open_fds(pid: Option<u32>) -> Result<f64, String> {
    let dir = match pid {
        Some(pid) => format!("/proc/{pid}/fd"),
        None => "/proc/self/fd".to_owned(),
    };
    let entries = std::fs::read_dir(&dir).map_err(|e| format!("reading {dir}: {e}"))?;
    // The listing's own descriptor is among them for /proc/self.
    let count = entries.count() - usize::from(pid.is_none());
    Ok(count as f64)
}

/// How the `ours` clients query.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// `MachineSet::execute_all("query-status")` per round.
    ExecuteAll,
    /// `Machine::command(&QueryStatus)` on each machine in turn.
    Serial,
    /// Each machine in turn: `pause`, `MachineSet::next_event` (its STOP), `resume`,
    /// `next_event` (its RESUME); one round counts as one query per machine.
    Events,
}

fn ours(n: usize, queries: usize, qemu: &Path, mode: Mode) -> Result<Report, String> {
    let err = |e: qemu_process::Error| e.to_string();
    let config = machine_config(qemu, AccelChoice::Tcg);
    let configs = vec![config; n];
    let guardian = qemu_process::start_guardian().map_err(err)?;
    let mut r = Report {
        rss_before_kib: status_field("VmRSS")?,
        fds_before: open_fds(None)?,
        guardian_fds_before: open_fds(Some(guardian))?,
        ..Report::default()
    };
    let (start, cpu_start) = (Instant::now(), cpu_ns());
    let mut set = MachineSet::launch(&configs, Duration::from_secs(600)).map_err(err)?;
    let round = |set: &mut MachineSet| -> Result<(), String> {
        match mode {
            Mode::ExecuteAll => {
                for reply in set.execute_all("query-status", None, Duration::from_secs(60)) {
                    reply.map_err(err)?;
                }
            }
            Mode::Serial => {
                for vm in set.iter_mut() {
                    vm.command(&QueryStatus).map_err(err)?;
                }
            }
            Mode::Events => {
                for i in 0..set.len() {
                    for (name, event) in [("stop", "STOP"), ("cont", "RESUME")] {
                        let vm = set.get_mut(i).ok_or("no machine")?;
                        vm.execute(name, None).map_err(err)?;
                        let (from, got) = set.next_event(Duration::from_secs(60)).map_err(err)?;
                        if (from, got.name.as_str()) != (i, event) {
                            return Err(format!("{event} of {i} expected, got {got:?} of {from}"));
                        }
                    }
                }
            }
        }
        Ok(())
    };
    for _ in 0..WARMUP {
        round(&mut set)?;
    }
    let pids: Vec<u32> = set.iter().filter_map(|m| m.pid()).collect();
    let qemu_launched = threads_cpu_ns(&pids);
    let launched = Instant::now();
    let cpu_launched = cpu_ns();
    for _ in 0..queries {
        round(&mut set)?;
    }
    let queried = Instant::now();
    r.query_cpu_ns = cpu_ns() - cpu_launched;
    r.qemu_query_cpu_ns = threads_cpu_ns(&pids) - qemu_launched;
    r.rss_kib = status_field("VmRSS")?;
    r.anon_kib = status_field("RssAnon")?;
    r.fds = open_fds(None)?;
    r.guardian_fds = open_fds(Some(guardian))?;
    let measuring = queried.elapsed();
    for result in set.shutdown_all(SHUTDOWN) {
        let status = result.map_err(err)?;
        if !status.success() {
            return Err(format!("QEMU exited with {status}"));
        }
    }
    drop(set);
    let end = Instant::now();
    r.cpu_ns = cpu_ns() - cpu_start;
    r.launch_ns = (launched - start).as_nanos() as f64;
    r.query_ns = (queried - launched).as_nanos() as f64;
    // The /proc reads between the phases are not the library's: leave them out.
    r.shutdown_ns = (end - queried - measuring).as_nanos() as f64;
    r.wall_ns = r.launch_ns + r.query_ns + r.shutdown_ns;
    Ok(r)
}

fn floor(n: usize, queries: usize, qemu: &Path) -> Result<Report, String> {
    let mut r = Report {
        rss_before_kib: status_field("VmRSS")?,
        fds_before: open_fds(None)?,
        ..Report::default()
    };
    // Every thread and this one meet after the launches (twice: the QEMUs' CPU time is read
    // between), after the queries, and after the /proc reads below (so that nothing is quit
    // before they are done).
    let barrier = Barrier::new(n + 1);
    let pids = Mutex::new(Vec::with_capacity(n));
    let mut qemu_cpu = [0.0; 2];
    let (start, cpu_start) = (Instant::now(), cpu_ns());
    let mut marks = Vec::new();
    let results: Vec<Result<(), String>> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..n)
            .map(|_| {
                let (barrier, pids) = (&barrier, &pids);
                scope.spawn(move || {
                    let vm = FloorVm::launch(qemu, "tcg")
                        .map_err(|e| e.to_string())
                        .and_then(|mut vm| {
                            if let Some(pid) = vm.pid() {
                                pids.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
                            }
                            for _ in 0..WARMUP {
                                vm.execute(QUERY_STATUS).map_err(|e| e.to_string())?;
                            }
                            Ok(vm)
                        });
                    barrier.wait();
                    barrier.wait();
                    let queried = vm.and_then(|mut vm| {
                        for _ in 0..queries {
                            vm.execute(QUERY_STATUS).map_err(|e| e.to_string())?;
                        }
                        Ok(vm)
                    });
                    barrier.wait();
                    barrier.wait();
                    let exit = queried?.quit().map_err(|e| e.to_string())?;
                    if !exit.success() {
                        return Err(format!("QEMU exited with {exit}"));
                    }
                    Ok(())
                })
            })
            .collect();
        // Launched: the QEMUs' CPU is read while every thread waits, then they are let go.
        barrier.wait();
        let pids = pids.lock().unwrap_or_else(|e| e.into_inner()).clone();
        qemu_cpu[0] = threads_cpu_ns(&pids);
        marks.push((Instant::now(), cpu_ns()));
        barrier.wait();
        // Queried.
        barrier.wait();
        marks.push((Instant::now(), cpu_ns()));
        qemu_cpu[1] = threads_cpu_ns(&pids);
        let reads = (|| -> Result<(f64, f64, f64), String> {
            Ok((
                status_field("VmRSS")?,
                status_field("RssAnon")?,
                open_fds(None)?,
            ))
        })();
        marks.push((Instant::now(), 0.0));
        barrier.wait();
        if let Ok((rss, anon, fds)) = reads {
            (r.rss_kib, r.anon_kib, r.fds) = (rss, anon, fds);
        }
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err("a floor thread panicked".into()))
            })
            .collect()
    });
    let end = Instant::now();
    for result in results {
        result?;
    }
    if r.fds == 0.0 {
        return Err("reading /proc/self failed".into());
    }
    let (launched, cpu_launched) = marks[0];
    let (queried, cpu_queried) = marks[1];
    let measured = marks[2].0;
    r.cpu_ns = cpu_ns() - cpu_start;
    r.query_cpu_ns = cpu_queried - cpu_launched;
    r.qemu_query_cpu_ns = qemu_cpu[1] - qemu_cpu[0];
    r.launch_ns = (launched - start).as_nanos() as f64;
    r.query_ns = (queried - launched).as_nanos() as f64;
    r.shutdown_ns = (end - measured).as_nanos() as f64;
    r.wall_ns = r.launch_ns + r.query_ns + r.shutdown_ns;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_round_trips_through_text() {
        let r = Report {
            wall_ns: 1.5e9,
            fds: 517.0,
            nofile: 1024.0,
            ..Report::default()
        };
        assert_eq!(Report::parse(&r.to_text()), Ok(r));
        let err = Report::parse("wall_ns 1\n").unwrap_err();
        assert!(err.contains("no launch_ns"), "{err}");
        assert!(Report::parse("wall_ns x\n").is_err());
    }

    #[test]
    fn counts_own_descriptors() {
        let before = open_fds(None).unwrap();
        let file = std::fs::File::open("/proc/self/status").unwrap();
        assert_eq!(open_fds(None).unwrap(), before + 1.0);
        drop(file);
        // Listing another process's table opens nothing in that process.
        let other = open_fds(Some(std::process::id())).unwrap();
        assert_eq!(
            other,
            before + 1.0,
            "our own listing counts when it is ours"
        );
    }
}
