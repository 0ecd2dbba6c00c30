//! [`MachineSet`]: many machines driven from one thread through one poll.
//!
//! Each [`Machine`] has its own epoll instance; the set registers those (an epoll descriptor is
//! itself pollable) in an outer `mio::Poll`, so one wait covers every socket and exit watch of every
//! machine.
//!
//! The cost of a wake-up does not grow with the number of machines: only the machines the poll
//! reports (and those the caller had in hand, through [`MachineSet::get_mut`] or
//! [`MachineSet::iter_mut`]) are looked at, machines with kept events wait in a queue, and the
//! counts of open connections and running processes are kept up to date as machines change
//! rather than recounted.

use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::process::ExitStatus;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use qmp_proto::Event;
use serde_json::Value;

use crate::config::MachineConfig;
use crate::error::Error;
use crate::machine::{Deadline, Machine};

/// Machines launched, watched and shut down together, from one thread.
///
/// ```no_run
/// use qemu_process::{MachineConfig, MachineSet};
/// use std::time::Duration;
///
/// let mut config = MachineConfig::new("qemu-system-x86_64");
/// config.args(["-machine", "none", "-nodefaults"]);
/// let configs = vec![config.clone(), config.clone(), config];
/// // All three are spawned first, then their greetings are awaited under one deadline.
/// let mut set = MachineSet::launch(&configs, Duration::from_secs(30))?;
/// // One command to every machine at once; the replies in index order.
/// for reply in set.execute_all("query-status", None, Duration::from_secs(5)) {
///     assert_eq!(reply?["status"], "running");
/// }
/// set.get_mut(1).unwrap().pause()?;
/// let (index, event) = set.next_event(Duration::from_secs(5))?;
/// assert_eq!((index, event.name.as_str()), (1, "STOP"));
/// for result in set.shutdown_all(Duration::from_secs(10)) {
///     result?;
/// }
/// # Ok::<(), qemu_process::Error>(())
/// ```
///
/// # Costs
///
/// Waiting costs nothing: a thread blocked in [`next_event`](MachineSet::next_event) (or any
/// other wait) sleeps in one `epoll_wait` until QEMU sends something or the deadline passes;
/// there is no timer and no polling, here or in the process guardian. The work per event or
/// reply does not depend on how many machines the set holds.
///
/// Each machine holds open, in this process: its epoll instance, its QMP socket, its console
/// socket (when it has a console), its channel to the process guardian (which becomes readable
/// when QEMU exits) and the guardian's watch of its temp dir: 4 descriptors, 5 with a console
/// (a VM description with a VNC display or files of its own may hold a few more); the set holds
/// one more, its own epoll instance. 128 machines with consoles take 641, within the usual
/// soft limit of 1024 (`ulimit -n`), so the library leaves the limit alone. A program that runs
/// more machines raises its own soft limit (up to the hard limit, no privileges needed:
/// `setrlimit(RLIMIT_NOFILE)`); when the limit is reached, a launch fails with an
/// [`Error::Io`] that names the step that got `EMFILE` ("Too many open files"), and leaves
/// nothing behind. The guardian holds one descriptor per machine and two per temp dir, and
/// raises its own soft limit to its hard limit.
pub struct MachineSet {
    machines: Vec<Machine>,
    poll: Poll,
    events: Events,
    /// Machines to look at before the next wait: those the set's poll reported, and those the
    /// caller had in hand mutably (their kept events and connection may have changed).
    touched: Marks,
    /// Machines holding kept events, in the order [`MachineSet::next_event`] takes them from
    /// (a machine goes to the back after each event it gives: round robin).
    with_events: Marks,
    /// Per machine: whether its QMP connection was open when last looked at.
    open: Vec<bool>,
    /// How many of `open` are true.
    open_count: usize,
    /// The machines the last poll reported (reused between polls).
    ready: Vec<usize>,
}

/// A queue of machine indices in which each index is at most once.
#[derive(Debug, Default)]
struct Marks {
    queue: VecDeque<usize>,
    marked: Vec<bool>,
}

impl Marks {
    fn grow(&mut self, len: usize) {
        self.marked.resize(len, false);
    }

    fn mark(&mut self, index: usize) {
        if let Some(m) = self.marked.get_mut(index) {
            if !*m {
                *m = true;
                self.queue.push_back(index);
            }
        }
    }

    fn mark_all(&mut self) {
        for index in 0..self.marked.len() {
            self.mark(index);
        }
    }

    fn pop(&mut self) -> Option<usize> {
        let index = self.queue.pop_front()?;
        self.marked[index] = false;
        Some(index)
    }
}

impl std::fmt::Debug for MachineSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MachineSet")
            .field("machines", &self.machines)
            .finish_non_exhaustive()
    }
}

impl MachineSet {
    /// An empty set.
    pub fn new() -> Result<MachineSet, Error> {
        Ok(MachineSet {
            machines: Vec::new(),
            poll: Poll::new().map_err(Error::io_with("creating an epoll instance"))?,
            events: Events::with_capacity(64),
            touched: Marks::default(),
            with_events: Marks::default(),
            open: Vec::new(),
            open_count: 0,
            ready: Vec::new(),
        })
    }

    /// Spawns one QEMU per config, all before waiting for any, then waits for every QMP
    /// negotiation under one deadline. If any fails (launch error, timeout), all are killed and
    /// the error says which ([`Error::InSet`]).
    pub fn launch(configs: &[MachineConfig], timeout: Duration) -> Result<MachineSet, Error> {
        let deadline = Deadline::after(timeout);
        let mut set = MachineSet::new()?;
        for (index, config) in configs.iter().enumerate() {
            let machine = Machine::spawn(config).map_err(|e| in_set(index, e))?;
            set.push(machine)?;
        }
        let mut ready = vec![false; set.machines.len()];
        let mut waiting = set.machines.len();
        // Every machine is looked at once; after that only those the poll reports, as nothing
        // else can change a launch's state.
        let mut check: Vec<usize> = (0..set.machines.len()).collect();
        let timed: Vec<usize> = (0..set.machines.len())
            .filter(|&i| set.machines[i].launch_wake().is_some())
            .collect();
        loop {
            for &index in &check {
                if ready[index] {
                    continue;
                }
                match set.machines[index].launch_check() {
                    Some(Ok(())) => {
                        ready[index] = true;
                        waiting -= 1;
                    }
                    Some(Err(e)) => return Err(in_set(index, e)),
                    None => {}
                }
            }
            if waiting == 0 {
                return Ok(set);
            }
            let remaining = deadline.remaining();
            if remaining == Some(Duration::ZERO) {
                let waiting: Vec<usize> = (0..ready.len()).filter(|&i| !ready[i]).collect();
                return Err(in_set(
                    waiting[0],
                    Error::Timeout {
                        what: format!("the QMP negotiation of machines {waiting:?}"),
                        after: deadline.total(),
                    },
                ));
            }
            // A machine launched without QMP is done when its settle time has passed, which no
            // poll reports: those (none, usually) are looked at on every turn.
            let now = std::time::Instant::now();
            let settle = timed
                .iter()
                .filter(|&&i| !ready[i])
                .filter_map(|&i| set.machines[i].launch_wake())
                .min()
                .map(|at| at.saturating_duration_since(now));
            let wait = match (remaining, settle) {
                (Some(r), Some(s)) => Some(r.min(s)),
                (r, s) => r.or(s),
            };
            set.poll_once(wait)?;
            check.clear();
            check.extend_from_slice(&set.ready);
            check.extend_from_slice(&timed);
        }
    }

    /// Adds a machine (launched or attached); returns its index.
    pub fn push(&mut self, machine: Machine) -> Result<usize, Error> {
        let index = self.machines.len();
        self.poll
            .registry()
            .register(
                &mut SourceFd(&machine.as_raw_fd()),
                Token(index),
                Interest::READABLE,
            )
            .map_err(Error::io_with("registering a machine in the set"))?;
        self.machines.push(machine);
        self.open.push(false);
        self.touched.grow(self.machines.len());
        self.with_events.grow(self.machines.len());
        self.touched.mark(index);
        Ok(index)
    }

    /// How many machines the set holds.
    pub fn len(&self) -> usize {
        self.machines.len()
    }

    /// Whether the set holds no machine.
    pub fn is_empty(&self) -> bool {
        self.machines.is_empty()
    }

    /// The machine at `index`.
    pub fn get(&self, index: usize) -> Option<&Machine> {
        self.machines.get(index)
    }

    /// The machine at `index`, to call any [`Machine`] method on it.
    pub fn get_mut(&mut self, index: usize) -> Option<&mut Machine> {
        // What the caller does with it may keep events or close the connection: looked at
        // before the set's next wait.
        self.touched.mark(index);
        self.machines.get_mut(index)
    }

    /// The machines, in index order.
    pub fn iter(&self) -> std::slice::Iter<'_, Machine> {
        self.machines.iter()
    }

    /// The machines, mutably, in index order.
    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, Machine> {
        self.touched.mark_all();
        self.machines.iter_mut()
    }

    /// Dissolves the set.
    pub fn into_machines(self) -> Vec<Machine> {
        self.machines
    }

    /// One wait on every machine's sources, then each ready machine handles its I/O. The
    /// machines handled are in `self.ready`, and marked as touched.
    fn poll_once(&mut self, timeout: Option<Duration>) -> Result<(), Error> {
        self.ready.clear();
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(Error::io("waiting for machines (epoll_wait)", e)),
        }
        self.ready.extend(self.events.iter().map(|e| e.token().0));
        for &index in &self.ready {
            if let Some(machine) = self.machines.get_mut(index) {
                self.touched.mark(index);
                machine.process_io().map_err(|e| in_set(index, e))?;
            }
        }
        Ok(())
    }

    /// Looks at the touched machines: queues those with kept events, updates the count of open
    /// connections.
    fn look_at_touched(&mut self) {
        while let Some(index) = self.touched.pop() {
            let machine = &self.machines[index];
            if machine.events_pending() > 0 {
                self.with_events.mark(index);
            }
            let open = machine.qmp_open();
            if open != self.open[index] {
                self.open[index] = open;
                if open {
                    self.open_count += 1;
                } else {
                    self.open_count -= 1;
                }
            }
        }
    }

    /// Waits for the next event from any machine and returns it with the machine's index.
    /// Kept events come first, taken round-robin across machines so none starves the others.
    /// [`Error::Disconnected`] when no machine can produce events any more.
    pub fn next_event(&mut self, timeout: Duration) -> Result<(usize, Event), Error> {
        let deadline = Deadline::after(timeout);
        loop {
            self.look_at_touched();
            while let Some(index) = self.with_events.pop() {
                let machine = &mut self.machines[index];
                if let Some(event) = machine.pop_event() {
                    if machine.events_pending() > 0 {
                        self.with_events.mark(index);
                    }
                    return Ok((index, event));
                }
            }
            if self.open_count == 0 {
                return Err(Error::Disconnected);
            }
            let remaining = deadline.remaining();
            if remaining == Some(Duration::ZERO) {
                return Err(Error::Timeout {
                    what: "an event from any machine".into(),
                    after: deadline.total(),
                });
            }
            self.poll_once(remaining)?;
        }
    }

    /// Executes a QMP command on every machine at once and returns the replies in index order
    /// (each as [`Machine::execute`] would return it). The command is written to every machine
    /// first; the replies are then taken as they arrive, under one deadline: a machine that has
    /// not answered when it passes gets [`Error::Timeout`] (and its reply, if it comes later, is
    /// discarded). Events that arrive meanwhile are kept, as by any other call.
    pub fn execute_all(
        &mut self,
        name: &str,
        arguments: Option<Value>,
        timeout: Duration,
    ) -> Vec<Result<Value, Error>> {
        let deadline = Deadline::after(timeout);
        let n = self.machines.len();
        let mut results: Vec<Option<Result<Value, Error>>> = (0..n).map(|_| None).collect();
        let mut ids = vec![None; n];
        let mut outstanding = 0;
        for (index, machine) in self.machines.iter_mut().enumerate() {
            self.touched.mark(index);
            match machine.send_command(name, arguments.clone(), false) {
                Ok(id) => {
                    ids[index] = Some(id);
                    outstanding += 1;
                }
                Err(e) => results[index] = Some(Err(e)),
            }
        }
        while outstanding > 0 {
            let remaining = deadline.remaining();
            if remaining == Some(Duration::ZERO) {
                break;
            }
            if let Err(e) = self.poll_once(remaining) {
                log::warn!("waiting for replies to {name}: {e}");
                break;
            }
            for &index in &self.ready {
                if let Some(id) = ids[index] {
                    if let Some(reply) = self.machines[index].reply_to(id, name) {
                        results[index] = Some(reply);
                        ids[index] = None;
                        outstanding -= 1;
                    }
                }
            }
        }
        results
            .into_iter()
            .zip(ids)
            .enumerate()
            .map(|(index, (result, id))| match (result, id) {
                (Some(result), _) => result,
                (None, Some(id)) => {
                    self.machines[index].abandon(id);
                    Err(Error::Timeout {
                        what: format!("the reply to {name}"),
                        after: deadline.total(),
                    })
                }
                (None, None) => Err(Error::Disconnected),
            })
            .collect()
    }

    /// Shuts every machine down together: `quit` to all, one deadline for all exits, then
    /// SIGKILL for those still running (their result is [`Error::NotGraceful`]). Results are in
    /// index order.
    pub fn shutdown_all(&mut self, timeout: Duration) -> Vec<Result<ExitStatus, Error>> {
        let deadline = Deadline::after(timeout);
        let mut running = vec![false; self.machines.len()];
        let mut count = 0;
        for (index, machine) in self.machines.iter_mut().enumerate() {
            self.touched.mark(index);
            machine.begin_shutdown();
            if machine.pid().is_some() && machine.exit_status_now().is_none() {
                running[index] = true;
                count += 1;
            }
        }
        while count > 0 {
            let remaining = deadline.remaining();
            if remaining == Some(Duration::ZERO) {
                break;
            }
            if let Err(e) = self.poll_once(remaining) {
                log::warn!("waiting for machines to exit: {e}");
                break;
            }
            for &index in &self.ready {
                if running[index] && self.machines[index].exit_status_now().is_some() {
                    running[index] = false;
                    count -= 1;
                }
            }
        }
        self.machines
            .iter_mut()
            .map(|machine| {
                if machine.pid().is_none() {
                    return Err(Error::Unsupported(
                        "shutdown of an attached machine (execute quit instead)".into(),
                    ));
                }
                if let Some(status) = machine.exit_status_now() {
                    return Ok(status);
                }
                log::warn!(
                    "QEMU (pid {:?}) did not exit within {timeout:?}; killing it",
                    machine.pid()
                );
                machine
                    .kill()
                    .and_then(|status| Err(Error::NotGraceful { status }))
            })
            .collect()
    }
}

fn in_set(index: usize, error: Error) -> Error {
    match error {
        Error::InSet { .. } => error,
        other => Error::InSet {
            index,
            source: Box::new(other),
        },
    }
}
