//! [`MachineSet`]: many machines driven from one thread through one poll.
//!
//! Each [`Machine`] has its own epoll instance; the set registers those (an epoll descriptor is
//! itself pollable) in an outer `mio::Poll`, so one wait covers every socket and exit watch of every
//! machine.

use std::os::fd::AsRawFd;
use std::process::ExitStatus;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use qmp_proto::Event;

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
/// set.get_mut(1).unwrap().pause()?;
/// let (index, event) = set.next_event(Duration::from_secs(5))?;
/// assert_eq!((index, event.name.as_str()), (1, "STOP"));
/// for result in set.shutdown_all(Duration::from_secs(10)) {
///     result?;
/// }
/// # Ok::<(), qemu_process::Error>(())
/// ```
pub struct MachineSet {
    machines: Vec<Machine>,
    poll: Poll,
    events: Events,
    /// Where the next round-robin look for kept events starts.
    next: usize,
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
            next: 0,
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
        loop {
            for (index, machine) in set.machines.iter_mut().enumerate() {
                if ready[index] {
                    continue;
                }
                match machine.launch_check() {
                    Some(Ok(())) => ready[index] = true,
                    Some(Err(e)) => return Err(in_set(index, e)),
                    None => {}
                }
            }
            let waiting: Vec<usize> = (0..ready.len()).filter(|&i| !ready[i]).collect();
            if waiting.is_empty() {
                return Ok(set);
            }
            let remaining = deadline.remaining();
            if remaining == Some(Duration::ZERO) {
                return Err(in_set(
                    waiting[0],
                    Error::Timeout {
                        what: format!("the QMP negotiation of machines {waiting:?}"),
                        after: deadline.total(),
                    },
                ));
            }
            // A machine launched without QMP is done when its settle time has passed.
            let now = std::time::Instant::now();
            let settle = waiting
                .iter()
                .filter_map(|&i| set.machines[i].launch_wake())
                .min()
                .map(|at| at.saturating_duration_since(now));
            let wait = match (remaining, settle) {
                (Some(r), Some(s)) => Some(r.min(s)),
                (r, s) => r.or(s),
            };
            set.poll_once(wait)?;
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
        self.machines.get_mut(index)
    }

    /// The machines, in index order.
    pub fn iter(&self) -> std::slice::Iter<'_, Machine> {
        self.machines.iter()
    }

    /// The machines, mutably, in index order.
    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, Machine> {
        self.machines.iter_mut()
    }

    /// Dissolves the set.
    pub fn into_machines(self) -> Vec<Machine> {
        self.machines
    }

    /// One wait on every machine's sources, then each ready machine handles its I/O.
    fn poll_once(&mut self, timeout: Option<Duration>) -> Result<(), Error> {
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(Error::io("waiting for machines (epoll_wait)", e)),
        }
        let ready: Vec<usize> = self.events.iter().map(|e| e.token().0).collect();
        for index in ready {
            if let Some(machine) = self.machines.get_mut(index) {
                machine.process_io().map_err(|e| in_set(index, e))?;
            }
        }
        Ok(())
    }

    /// Waits for the next event from any machine and returns it with the machine's index.
    /// Kept events come first, taken round-robin across machines so none starves the others.
    /// [`Error::Disconnected`] when no machine can produce events any more.
    pub fn next_event(&mut self, timeout: Duration) -> Result<(usize, Event), Error> {
        let deadline = Deadline::after(timeout);
        loop {
            let n = self.machines.len();
            for k in 0..n {
                let index = (self.next + k) % n;
                if let Some(event) = self.machines[index].pop_event() {
                    self.next = (index + 1) % n;
                    return Ok((index, event));
                }
            }
            if !self.machines.iter().any(Machine::qmp_open) {
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

    /// Shuts every machine down together: `quit` to all, one deadline for all exits, then
    /// SIGKILL for those still running (their result is [`Error::NotGraceful`]). Results are in
    /// index order.
    pub fn shutdown_all(&mut self, timeout: Duration) -> Vec<Result<ExitStatus, Error>> {
        let deadline = Deadline::after(timeout);
        for machine in &mut self.machines {
            machine.begin_shutdown();
        }
        loop {
            let mut running = 0;
            for machine in &mut self.machines {
                if machine.pid().is_some() && machine.exit_status_now().is_none() {
                    running += 1;
                }
            }
            let remaining = deadline.remaining();
            if running == 0 || remaining == Some(Duration::ZERO) {
                break;
            }
            if let Err(e) = self.poll_once(remaining) {
                log::warn!("waiting for machines to exit: {e}");
                break;
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
