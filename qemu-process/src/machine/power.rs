//! The power state of a machine, now and as it changes: Jumpstarter's power `read()`.

use std::time::Duration;

use qmp_proto::{Event, EventFilter, RunState};

use super::{Deadline, Machine};
use crate::error::Error;

/// Whether a machine is on, as a power switch sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PowerState {
    /// QEMU is not running (it exited, or was never ours and its connection closed), or the
    /// guest powered off and QEMU stays (`-no-shutdown`).
    Off,
    /// The guest runs.
    Running,
    /// QEMU runs with the guest stopped (paused, started with `-S`, an error stop, a
    /// migration, ...).
    Paused,
}

impl PowerState {
    /// `off`, `running` or `paused`.
    pub fn name(self) -> &'static str {
        match self {
            PowerState::Off => "off",
            PowerState::Running => "running",
            PowerState::Paused => "paused",
        }
    }

    /// The state a QEMU run state means.
    fn of_run_state(state: &RunState) -> PowerState {
        match state {
            RunState::Running => PowerState::Running,
            RunState::Shutdown => PowerState::Off,
            _ => PowerState::Paused,
        }
    }

    /// The state an event reports, for the events that change it.
    fn of_event(event: &Event) -> Option<PowerState> {
        match event.name.as_str() {
            "RESUME" => Some(PowerState::Running),
            "STOP" => Some(PowerState::Paused),
            "SHUTDOWN" => Some(PowerState::Off),
            _ => None,
        }
    }
}

/// The events that change the power state.
fn power_events() -> EventFilter {
    EventFilter::new()
        .or("RESUME", None)
        .or("STOP", None)
        .or("SHUTDOWN", None)
}

impl Machine {
    /// The power state now: [`PowerState::Off`] once QEMU has exited, else what `query-status`
    /// says. The kept `STOP`, `RESUME` and `SHUTDOWN` events are taken (the state returned
    /// supersedes them), so that [`power_wait_change`](Machine::power_wait_change) reports
    /// only what changes after this call.
    pub fn power_state(&mut self) -> Result<PowerState, Error> {
        let _ = self.process_io();
        let filter = power_events();
        while self.qmp.session.take_event_matching(&filter).is_some() {}
        let state = if self.gone() {
            PowerState::Off
        } else {
            match self.status() {
                Ok(run) => PowerState::of_run_state(&run),
                // QEMU went away during the query.
                Err(Error::Exited(_) | Error::Disconnected) => PowerState::Off,
                Err(e) => return Err(e),
            }
        };
        self.power_last = Some(state);
        Ok(state)
    }

    /// Waits until the power state changes from the last one reported (by this call or
    /// [`power_state`](Machine::power_state)) and returns the new one: from the events QEMU
    /// sends (`RESUME`, `STOP`, `SHUTDOWN`, taken from the kept events in order) and QEMU's
    /// exit. An event that repeats the state is skipped. [`Error::Timeout`] when nothing
    /// changes in time; once [`PowerState::Off`] was reported and QEMU has exited, nothing can
    /// change: [`Error::Exited`] (or [`Error::Disconnected`] for an attached machine) at once.
    pub fn power_wait_change(&mut self, timeout: Duration) -> Result<PowerState, Error> {
        let deadline = Deadline::after(timeout);
        let filter = power_events();
        let state = self.run_until(
            deadline,
            || "a change of the power state".to_owned(),
            |m| {
                while let Some(event) = m.qmp.session.take_event_matching(&filter) {
                    let Some(state) = PowerState::of_event(&event) else {
                        continue;
                    };
                    if m.power_last != Some(state) {
                        return Some(Ok(state));
                    }
                }
                if m.gone() {
                    if m.power_last != Some(PowerState::Off) {
                        return Some(Ok(PowerState::Off));
                    }
                    return Some(Err(m.connection_error()));
                }
                None
            },
        )?;
        self.power_last = Some(state);
        Ok(state)
    }

    /// Each change of the power state (see [`power_wait_change`](Machine::power_wait_change))
    /// until `timeout` has passed in all, or QEMU has exited after reporting
    /// [`PowerState::Off`]: the iterator then ends. Other errors are yielded, and end it.
    ///
    /// ```no_run
    /// # use qemu_process::{Machine, MachineConfig, PowerState};
    /// # use std::time::Duration;
    /// # let mut vm = Machine::launch(&MachineConfig::new("qemu-system-x86_64"))?;
    /// println!("now {:?}", vm.power_state()?);
    /// for change in vm.power_changes(Duration::from_secs(60)) {
    ///     println!("now {:?}", change?);
    /// }
    /// # Ok::<(), qemu_process::Error>(())
    /// ```
    pub fn power_changes(&mut self, timeout: Duration) -> PowerChanges<'_> {
        PowerChanges {
            machine: self,
            deadline: Deadline::after(timeout),
            done: false,
        }
    }

    /// QEMU has exited (or, attached, its connection is gone).
    fn gone(&mut self) -> bool {
        match &self.child {
            Some(_) => self.exit_status_now().is_some(),
            None => !self.qmp_open(),
        }
    }
}

/// The changes of a machine's power state until a deadline: see
/// [`Machine::power_changes`].
#[derive(Debug)]
pub struct PowerChanges<'m> {
    machine: &'m mut Machine,
    deadline: Deadline,
    done: bool,
}

impl Iterator for PowerChanges<'_> {
    type Item = Result<PowerState, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let remaining = self.deadline.remaining().unwrap_or(Duration::MAX);
        match self.machine.power_wait_change(remaining) {
            Ok(state) => Some(Ok(state)),
            Err(e) => {
                self.done = true;
                match e {
                    Error::Timeout { .. } | Error::Exited(_) | Error::Disconnected => None,
                    e => Some(Err(e)),
                }
            }
        }
    }
}
