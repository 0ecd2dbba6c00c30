//! The things being timed, behind one trait so that a group's candidates can be interleaved
//! (A, B, C, B, C, A, ...) and machine noise spreads evenly over them.

use std::ffi::{c_char, CStr, CString};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::ptr;
use std::time::{Duration, Instant};

use qemu_process::{AccelChoice, Machine, MachineConfig, MachineSet, RunState};
use qemumachine::config::{qm_config_free, qm_config_from_json, QmConfig};
use qemumachine::error::{qm_last_error_message_dup, qm_string_free};
use qemumachine::machine::{
    qm_machine_execute, qm_machine_free, qm_machine_launch, qm_machine_shutdown, QmMachine,
};
use qemumachine::QmStatus;
use qmp_proto::commands::QueryStatus;
use qmp_proto::{Session, SessionOptions};

use crate::floor::{FloorVm, CAPABILITIES, QUERY_STATUS};
use crate::python;

/// How long a graceful shutdown may take before it counts as a failure.
const SHUTDOWN: Duration = Duration::from_secs(10);

/// What one candidate measured over a group.
#[derive(Debug, Default)]
pub struct Samples {
    /// One figure per operation (ns, or MB/s for throughput).
    pub values: Vec<f64>,
    /// The client's user+sys CPU time over all operations, in ns.
    pub cpu_ns: f64,
    /// The user+sys CPU time of the children reaped during the operations (the QEMUs a
    /// cycle launches and reaps), in ns.
    pub child_cpu_ns: f64,
}

/// One thing to time. `run` performs one unit (a cycle, a block of round trips) and appends
/// its figures.
pub trait Candidate {
    /// Runs one unit.
    fn run(&mut self, out: &mut Samples) -> Result<(), String>;
}

/// Runs `warmup` units of every candidate (discarded), then `rounds` rounds in which each
/// candidate runs one unit, the starting candidate rotating from round to round.
pub fn interleave(
    candidates: &mut [&mut dyn Candidate],
    warmup: usize,
    rounds: usize,
    mut progress: impl FnMut(usize),
) -> Result<Vec<Samples>, String> {
    let n = candidates.len();
    let mut scratch = Samples::default();
    for _ in 0..warmup {
        for c in candidates.iter_mut() {
            c.run(&mut scratch)?;
        }
    }
    let mut samples: Vec<Samples> = (0..n).map(|_| Samples::default()).collect();
    for round in 0..rounds {
        for k in 0..n {
            let i = (round + k) % n;
            candidates[i].run(&mut samples[i])?;
        }
        progress(round + 1);
    }
    Ok(samples)
}

/// This process's user+sys CPU time so far, in ns.
pub fn cpu_ns() -> f64 {
    rusage_ns(libc::RUSAGE_SELF)
}

/// The user+sys CPU time of this process's reaped children so far, in ns.
pub fn children_cpu_ns() -> f64 {
    rusage_ns(libc::RUSAGE_CHILDREN)
}

fn rusage_ns(who: libc::c_int) -> f64 {
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage; `who` is RUSAGE_SELF or RUSAGE_CHILDREN.
    let rc = unsafe { libc::getrusage(who, &mut usage) };
    if rc != 0 {
        return f64::NAN;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 * 1e9 + t.tv_usec as f64 * 1e3;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Times `n` calls of `op`, one figure each, and the CPU time over them.
fn timed_block(
    n: usize,
    out: &mut Samples,
    mut op: impl FnMut() -> Result<(), String>,
) -> Result<(), String> {
    let (cpu, child_cpu) = (cpu_ns(), children_cpu_ns());
    for _ in 0..n {
        let start = Instant::now();
        op()?;
        out.values.push(start.elapsed().as_nanos() as f64);
    }
    out.cpu_ns += cpu_ns() - cpu;
    out.child_cpu_ns += children_cpu_ns() - child_cpu;
    Ok(())
}

/// The config of the VM every row uses: `-machine none -nodefaults`.
pub fn machine_config(qemu: &Path, accel: AccelChoice) -> MachineConfig {
    let mut config = MachineConfig::new(qemu);
    config
        .args(["-machine", "none", "-nodefaults"])
        .accel(accel);
    config
}

fn accel_name(accel: AccelChoice) -> &'static str {
    match accel {
        AccelChoice::Kvm => "kvm",
        _ => "tcg",
    }
}

// ----------------------------------------------------------------------------------------------
// Lifecycle cycles
// ----------------------------------------------------------------------------------------------

/// Ours: `Machine::launch`, `command(&QueryStatus)`, `shutdown`, drop (temp dir removed).
pub struct OursCycle(pub MachineConfig);

impl Candidate for OursCycle {
    fn run(&mut self, out: &mut Samples) -> Result<(), String> {
        timed_block(1, out, || {
            let mut vm = Machine::launch(&self.0).map_err(|e| format!("ours: {e}"))?;
            let status = vm.command(&QueryStatus).map_err(|e| format!("ours: {e}"))?;
            if status.status != RunState::Running {
                return Err(format!("ours: query-status says {:?}", status.status));
            }
            let exit = vm.shutdown(SHUTDOWN).map_err(|e| format!("ours: {e}"))?;
            drop(vm);
            if !exit.success() {
                return Err(format!("ours: QEMU exited with {exit}"));
            }
            Ok(())
        })
    }
}

/// The floor client's cycle: its plain negotiation and request, or the exact bytes our
/// library writes ([`FloorCycle::like_ours`]).
pub struct FloorCycle {
    /// The QEMU binary.
    pub qemu: PathBuf,
    /// The accelerator.
    pub accel: AccelChoice,
    /// The capability negotiation and query-status requests to send.
    bytes: (Vec<u8>, Vec<u8>),
}

impl FloorCycle {
    /// The plain floor.
    pub fn new(qemu: &Path, accel: AccelChoice) -> FloorCycle {
        FloorCycle {
            qemu: qemu.to_path_buf(),
            accel,
            bytes: (CAPABILITIES.to_vec(), QUERY_STATUS.to_vec()),
        }
    }

    /// A floor that sends our library's bytes ([`session_bytes`] with
    /// [`our_session_options`]).
    pub fn like_ours(qemu: &Path, accel: AccelChoice) -> Result<FloorCycle, String> {
        let (caps, mut requests) = session_bytes(our_session_options(), 1)?;
        Ok(FloorCycle {
            qemu: qemu.to_path_buf(),
            accel,
            bytes: (caps, requests.pop().unwrap_or_default()),
        })
    }

    /// One cycle, untimed (to probe whether an accelerator works).
    pub fn once(&self) -> Result<(), String> {
        let mut vm = FloorVm::launch_with(&self.qemu, accel_name(self.accel), &self.bytes.0)
            .map_err(|e| e.to_string())?;
        vm.execute(&self.bytes.1).map_err(|e| e.to_string())?;
        let exit = vm.quit().map_err(|e| e.to_string())?;
        if !exit.success() {
            return Err(format!("QEMU exited with {exit}"));
        }
        Ok(())
    }
}

impl Candidate for FloorCycle {
    fn run(&mut self, out: &mut Samples) -> Result<(), String> {
        timed_block(1, out, || self.once().map_err(|e| format!("floor: {e}")))
    }
}

/// QEMU's Python stack, through `qmp_bench.py serve`.
pub struct PythonCycle<'a>(pub &'a mut python::Server);

impl Candidate for PythonCycle<'_> {
    fn run(&mut self, out: &mut Samples) -> Result<(), String> {
        let answer = self.0.cycle()?;
        out.values.push(answer.wall_ns);
        out.cpu_ns += answer.cpu_ns;
        out.child_cpu_ns += answer.child_cpu_ns;
        Ok(())
    }
}

// ----------------------------------------------------------------------------------------------
// Round trips
// ----------------------------------------------------------------------------------------------

// Every unit of a round-trip candidate launches its own VM (the same kind for everybody: one
// QMP monitor on a socketpair), runs some untimed round trips to warm up, times a block, and
// shuts the VM down untimed. Fresh VMs every round spread the differences between QEMU
// processes (where the scheduler puts their threads) over all candidates.

/// What a round-trip unit does, besides the VM.
#[derive(Clone, Copy, Debug)]
pub struct RttPlan {
    /// Untimed round trips after the launch.
    pub warmup: usize,
    /// Timed round trips.
    pub block: usize,
}

/// Ours: `Machine::execute("query-status")`.
pub struct OursRtt {
    /// The VM's config.
    pub config: MachineConfig,
    /// The plan.
    pub plan: RttPlan,
}

impl Candidate for OursRtt {
    fn run(&mut self, out: &mut Samples) -> Result<(), String> {
        let mut vm = Machine::launch(&self.config).map_err(|e| format!("ours: {e}"))?;
        let mut op = || {
            let reply = vm
                .execute("query-status", None)
                .map_err(|e| format!("ours: {e}"))?;
            black_box(reply);
            Ok(())
        };
        for _ in 0..self.plan.warmup {
            op()?;
        }
        timed_block(self.plan.block, out, op)?;
        vm.shutdown(SHUTDOWN).map_err(|e| format!("ours: {e}"))?;
        Ok(())
    }
}

/// The QMP greeting of QEMU 7.2, as the sessions below receive it.
const GREETING: &[u8] = b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 22, \"minor\": 2, \
    \"major\": 7}, \"package\": \"\"}, \"capabilities\": [\"oob\"]}}\r\n";

/// The session options `Machine::launch` uses with a default `MachineConfig` (read from
/// qemu-process: `oob` on, `qmp_ids` off).
pub fn our_session_options() -> SessionOptions {
    SessionOptions {
        oob: true,
        in_band_ids: false,
        ..SessionOptions::default()
    }
}

/// The bytes our library writes for capability negotiation and then `n` query-status requests,
/// as a `qmp_proto::Session` with `options` produces them (fed with the replies QEMU would
/// send), so that a floor client can send exactly those.
pub fn session_bytes(options: SessionOptions, n: usize) -> Result<(Vec<u8>, Vec<Vec<u8>>), String> {
    fn take(session: &mut Session) -> Vec<u8> {
        let out = session.transmit().to_vec();
        session.advance_transmit(out.len());
        out
    }
    fn reply_to(request: &[u8], value: &str) -> Result<Vec<u8>, String> {
        let request: serde_json::Value =
            serde_json::from_slice(request).map_err(|e| format!("our request: {e}"))?;
        Ok(match request.get("id") {
            Some(id) => format!("{{\"return\": {value}, \"id\": {id}}}\r\n"),
            None => format!("{{\"return\": {value}}}\r\n"),
        }
        .into_bytes())
    }
    let err = |e: qmp_proto::Error| format!("building our requests: {e}");
    let mut session = Session::new(options);
    session.receive(GREETING).map_err(err)?;
    let caps = take(&mut session);
    session.receive(&reply_to(&caps, "{}")?).map_err(err)?;
    if !session.is_ready() {
        return Err("building our requests: the session did not negotiate".into());
    }
    let status = r#"{"status": "running", "singlestep": false, "running": true}"#;
    let mut requests = Vec::with_capacity(n);
    for _ in 0..n {
        let id = session.execute("query-status", None).map_err(err)?;
        let request = take(&mut session);
        session.receive(&reply_to(&request, status)?).map_err(err)?;
        match session.take_reply(id) {
            Some(Ok(_)) => {}
            other => return Err(format!("building our requests: reply {other:?}")),
        }
        requests.push(request);
    }
    Ok((caps, requests))
}

/// The floor client's round trip: its plain request, or (`like_ours`) the exact bytes our
/// library writes ([`session_bytes`] with [`our_session_options`]).
pub struct FloorRtt {
    /// The QEMU binary.
    pub qemu: PathBuf,
    /// The plan.
    pub plan: RttPlan,
    /// Send our library's bytes instead of the plain request.
    pub like_ours: bool,
}

impl Candidate for FloorRtt {
    fn run(&mut self, out: &mut Samples) -> Result<(), String> {
        let n = self.plan.warmup + self.plan.block;
        let (caps, ours) = if self.like_ours {
            session_bytes(our_session_options(), n)?
        } else {
            (CAPABILITIES.to_vec(), Vec::new())
        };
        let mut vm =
            FloorVm::launch_with(&self.qemu, "tcg", &caps).map_err(|e| format!("floor: {e}"))?;
        let mut requests = ours.iter();
        let mut op = || {
            let bytes = match requests.next() {
                Some(request) => &request[..],
                None => QUERY_STATUS,
            };
            let len = vm.execute(bytes).map_err(|e| format!("floor: {e}"))?;
            black_box(len);
            Ok(())
        };
        for _ in 0..self.plan.warmup {
            op()?;
        }
        timed_block(self.plan.block, out, op)?;
        let exit = vm.quit().map_err(|e| format!("floor: {e}"))?;
        if !exit.success() {
            return Err(format!("floor: QEMU exited with {exit}"));
        }
        Ok(())
    }
}

/// QEMU's Python stack's round trip.
pub struct PythonRtt<'a> {
    /// The server.
    pub server: &'a mut python::Server,
    /// The plan.
    pub plan: RttPlan,
}

impl Candidate for PythonRtt<'_> {
    fn run(&mut self, out: &mut Samples) -> Result<(), String> {
        self.server.launch()?;
        if self.plan.warmup > 0 {
            self.server.rtt(self.plan.warmup)?;
        }
        let block = self.server.rtt(self.plan.block)?;
        out.values.extend(block.times_ns);
        out.cpu_ns += block.cpu_ns;
        self.server.stop()
    }
}

/// The C ABI: `qm_machine_execute` + `qm_string_free`, called from Rust, on a machine from
/// `qm_config_from_json` + `qm_machine_launch`.
pub struct CApiRtt {
    /// The configuration JSON (NUL-terminated).
    pub config_json: CString,
    /// The plan.
    pub plan: RttPlan,
}

/// The calling thread's last libqemumachine error message.
fn last_error() -> String {
    let text = qm_last_error_message_dup();
    if text.is_null() {
        return "(no message)".into();
    }
    // SAFETY: a non-NULL result is a NUL-terminated string owned by us until freed.
    let message = unsafe { CStr::from_ptr(text) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: allocated by the library, freed once.
    unsafe { qm_string_free(text) };
    message
}

fn c_check(status: QmStatus, what: &str) -> Result<(), String> {
    if status == QmStatus::Ok {
        Ok(())
    } else {
        Err(format!("C ABI: {what}: {status:?}: {}", last_error()))
    }
}

/// Config and machine handles, freed on drop.
struct CHandles {
    config: *mut QmConfig,
    machine: *mut QmMachine,
}

impl Drop for CHandles {
    fn drop(&mut self) {
        // SAFETY: live handles or NULL (both functions accept NULL), each freed once.
        unsafe {
            qm_machine_free(self.machine);
            qm_config_free(self.config);
        }
    }
}

impl CApiRtt {
    /// The plan for the same VM as the other candidates.
    pub fn new(qemu: &Path, plan: RttPlan) -> Result<CApiRtt, String> {
        let json = serde_json::json!({
            "binary": qemu,
            "args": ["-machine", "none", "-nodefaults"],
            "accel": "tcg",
        })
        .to_string();
        let config_json = CString::new(json).map_err(|e| e.to_string())?;
        Ok(CApiRtt { config_json, plan })
    }
}

impl Candidate for CApiRtt {
    fn run(&mut self, out: &mut Samples) -> Result<(), String> {
        let mut h = CHandles {
            config: ptr::null_mut(),
            machine: ptr::null_mut(),
        };
        // SAFETY: the JSON is NUL-terminated; `h.config` is a valid place for the handle.
        let status = unsafe { qm_config_from_json(self.config_json.as_ptr(), &mut h.config) };
        c_check(status, "qm_config_from_json")?;
        // SAFETY: `h.config` is a live config handle; `h.machine` a valid place.
        let status = unsafe { qm_machine_launch(h.config, &mut h.machine) };
        c_check(status, "qm_machine_launch")?;
        let machine = h.machine;
        let command: *const c_char = c"query-status".as_ptr();
        let op = || {
            let mut reply: *mut c_char = ptr::null_mut();
            // SAFETY: a live machine handle, a NUL-terminated command, no arguments, and a
            // valid place for the reply.
            let status =
                unsafe { qm_machine_execute(machine, command, ptr::null(), -1, &mut reply) };
            c_check(status, "qm_machine_execute")?;
            black_box(reply);
            // SAFETY: the reply was allocated by the library and is freed once.
            unsafe { qm_string_free(reply) };
            Ok(())
        };
        for _ in 0..self.plan.warmup {
            op()?;
        }
        timed_block(self.plan.block, out, op)?;
        // SAFETY: a live machine handle.
        let status = unsafe { qm_machine_shutdown(machine, 10_000) };
        c_check(status, "qm_machine_shutdown")
    }
}

// ----------------------------------------------------------------------------------------------
// Many VMs from one thread
// ----------------------------------------------------------------------------------------------

/// `n` VMs: `MachineSet::launch`, `query-status` on each, `shutdown_all`, drop.
pub struct SetCycle {
    /// One config per VM.
    pub configs: Vec<MachineConfig>,
}

impl Candidate for SetCycle {
    fn run(&mut self, out: &mut Samples) -> Result<(), String> {
        let n = self.configs.len();
        timed_block(1, out, || {
            let mut set = MachineSet::launch(&self.configs, Duration::from_secs(60))
                .map_err(|e| format!("{n} VMs: {e}"))?;
            for vm in set.iter_mut() {
                vm.command(&QueryStatus)
                    .map_err(|e| format!("{n} VMs: {e}"))?;
            }
            for result in set.shutdown_all(SHUTDOWN) {
                result.map_err(|e| format!("{n} VMs: shutdown: {e}"))?;
            }
            drop(set);
            Ok(())
        })
    }
}

/// The floor for `n` VMs at once: `n` floor clients, one thread each, each running a whole
/// cycle; timed until the last is reaped.
pub struct FloorSet {
    /// The QEMU binary.
    pub qemu: PathBuf,
    /// How many VMs.
    pub n: usize,
}

impl Candidate for FloorSet {
    fn run(&mut self, out: &mut Samples) -> Result<(), String> {
        let (qemu, n) = (&self.qemu, self.n);
        timed_block(1, out, || {
            let cycle = FloorCycle::new(qemu, AccelChoice::Tcg);
            std::thread::scope(|scope| {
                let threads: Vec<_> = (0..n).map(|_| scope.spawn(|| cycle.once())).collect();
                threads.into_iter().try_for_each(|t| {
                    t.join()
                        .map_err(|_| "a floor thread panicked".to_owned())?
                        .map_err(|e| format!("floor, {n} VMs: {e}"))
                })
            })
        })
    }
}

// ----------------------------------------------------------------------------------------------
// Decoder throughput
// ----------------------------------------------------------------------------------------------

/// One pass of a decoder loop over the shared stream, as MB/s.
pub struct DecodePass<'a> {
    /// The stream.
    pub stream: &'a qmp_proto::bench_stream::Stream,
    /// The loop (returns how many messages it saw).
    pub pass: fn(&qmp_proto::bench_stream::Stream) -> Option<usize>,
    /// Its name, for errors.
    pub name: &'static str,
}

impl Candidate for DecodePass<'_> {
    fn run(&mut self, out: &mut Samples) -> Result<(), String> {
        let start = Instant::now();
        let count = (self.pass)(self.stream);
        let elapsed = start.elapsed();
        if count != Some(self.stream.messages.len()) {
            return Err(format!(
                "{}: saw {count:?} of {} messages",
                self.name,
                self.stream.messages.len()
            ));
        }
        out.values
            .push(self.stream.bytes.len() as f64 / 1e6 / elapsed.as_secs_f64());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counter {
        id: f64,
        log: std::rc::Rc<std::cell::RefCell<Vec<f64>>>,
    }

    impl Candidate for Counter {
        fn run(&mut self, out: &mut Samples) -> Result<(), String> {
            self.log.borrow_mut().push(self.id);
            out.values.push(self.id);
            Ok(())
        }
    }

    #[test]
    fn interleaving_rotates_and_discards_warmup() {
        let log = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let mut a = Counter {
            id: 0.0,
            log: log.clone(),
        };
        let mut b = Counter {
            id: 1.0,
            log: log.clone(),
        };
        let mut c = Counter {
            id: 2.0,
            log: log.clone(),
        };
        let mut rounds_seen = 0;
        let samples = interleave(&mut [&mut a, &mut b, &mut c], 1, 3, |r| rounds_seen = r).unwrap();
        assert_eq!(rounds_seen, 3);
        assert_eq!(
            *log.borrow(),
            [0.0, 1.0, 2.0, 0.0, 1.0, 2.0, 1.0, 2.0, 0.0, 2.0, 0.0, 1.0]
        );
        for (i, s) in samples.iter().enumerate() {
            assert_eq!(s.values, [i as f64; 3]);
        }
    }

    #[test]
    fn session_bytes_with_and_without_ids() {
        let (caps, requests) = session_bytes(our_session_options(), 3).unwrap();
        assert_eq!(
            caps,
            b"{\"execute\":\"qmp_capabilities\",\"arguments\":{\"enable\":[\"oob\"]}}\r\n"
        );
        assert_eq!(requests, vec![QUERY_STATUS.to_vec(); 3]);
        let with_ids = SessionOptions {
            oob: false,
            ..SessionOptions::default()
        };
        let (caps, requests) = session_bytes(with_ids, 2).unwrap();
        assert_eq!(caps, b"{\"execute\":\"qmp_capabilities\",\"id\":1}\r\n");
        assert_eq!(
            requests,
            [
                b"{\"execute\":\"query-status\",\"id\":2}\r\n".to_vec(),
                b"{\"execute\":\"query-status\",\"id\":3}\r\n".to_vec()
            ]
        );
    }

    #[test]
    fn cpu_time_advances() {
        let before = cpu_ns();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        black_box(x);
        assert!(cpu_ns() > before);
    }
}
