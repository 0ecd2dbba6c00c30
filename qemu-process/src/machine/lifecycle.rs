//! Power and run state, and the end of QEMU: shutdown, kill, wait.

use std::process::ExitStatus;
use std::time::Duration;

use qmp_proto::commands::QueryStatus;
use qmp_proto::{Event, EventFilter, RunState};

use super::{Deadline, Machine, KILL_REAP_LIMIT};
use crate::error::Error;
use crate::spawn::ChildProc;

impl Machine {
    // ------------------------------------------------------------------------------------------
    // Power and run state
    // ------------------------------------------------------------------------------------------

    /// The VM's run state (`query-status`).
    pub fn status(&mut self) -> Result<RunState, Error> {
        self.command(&QueryStatus).map(|info| info.status)
    }

    /// Pauses the VM (`stop`).
    pub fn pause(&mut self) -> Result<(), Error> {
        self.execute("stop", None).map(|_| ())
    }

    /// Resumes the VM (`cont`).
    pub fn resume(&mut self) -> Result<(), Error> {
        self.execute("cont", None).map(|_| ())
    }

    /// Resets the VM (`system_reset`); a RESET event follows.
    pub fn reset(&mut self) -> Result<(), Error> {
        self.execute("system_reset", None).map(|_| ())
    }

    /// Presses the ACPI power button (`system_powerdown`) and waits for the guest to shut down
    /// (the SHUTDOWN event, which is returned). A guest that ignores the request is reported as
    /// [`Error::Timeout`]. Only SHUTDOWN events that arrive after the request count.
    pub fn powerdown(&mut self, timeout: Duration) -> Result<Event, Error> {
        let deadline = Deadline::after(timeout);
        self.qmp
            .session
            .set_event_filter(EventFilter::new().or("SHUTDOWN", None));
        if let Err(e) = self.execute_with_timeout("system_powerdown", None, timeout) {
            self.qmp.session.clear_event_filter();
            return Err(e);
        }
        self.finish_event_wait(deadline)
    }

    // ------------------------------------------------------------------------------------------
    // Shutdown
    // ------------------------------------------------------------------------------------------

    pub(super) fn child_or_unsupported(&self, what: &str) -> Result<&ChildProc, Error> {
        self.child.as_ref().ok_or_else(|| {
            Error::Unsupported(format!(
                "{what} of an attached machine (it is not our process; execute quit instead)"
            ))
        })
    }

    /// Asks QEMU to exit: `quit` over QMP, or SIGTERM when QMP is unusable. Does not wait.
    pub(crate) fn begin_shutdown(&mut self) {
        let Some(child) = &self.child else { return };
        if child.status().is_some() {
            return;
        }
        log::info!("shutting down QEMU (pid {})", child.pid());
        if self.qmp_usable() {
            log::debug!("QMP -> quit");
            match self.qmp.session.execute("quit", None) {
                Ok(id) => {
                    // Nobody waits for its reply: QEMU's exit is the answer.
                    self.qmp.session.abandon(id);
                    self.flush_qmp();
                    if !self.qmp.write_failed {
                        return;
                    }
                }
                Err(e) => log::debug!("could not queue quit: {e}"),
            }
        }
        if let Some(child) = &self.child {
            log::info!(
                "QMP unusable: sending SIGTERM to QEMU (pid {})",
                child.pid()
            );
            if let Err(e) = child.signal(libc::SIGTERM) {
                log::warn!("SIGTERM to QEMU failed: {e}");
            }
        }
    }

    /// Shuts QEMU down gracefully: `quit` (or SIGTERM without QMP), then waits for the exit
    /// until `timeout`. If QEMU is still there, it is killed and reaped and
    /// [`Error::NotGraceful`] is returned. QEMU's exit status and log stay readable afterwards.
    pub fn shutdown(&mut self, timeout: Duration) -> Result<ExitStatus, Error> {
        self.child_or_unsupported("shutdown")?;
        if let Some(status) = self.exit_status_now() {
            return Ok(status);
        }
        let deadline = Deadline::after(timeout);
        self.begin_shutdown();
        match self.wait_exit(deadline, "QEMU to exit after quit") {
            Ok(status) => Ok(status),
            Err(e) => {
                log::warn!("QEMU did not shut down gracefully ({e}); killing it");
                let status = self.kill()?;
                Err(Error::NotGraceful { status })
            }
        }
    }

    /// Kills QEMU (SIGKILL) and reaps it. Returns the exit status (already exited: its status).
    pub fn kill(&mut self) -> Result<ExitStatus, Error> {
        self.child_or_unsupported("kill")?;
        if let Some(status) = self.exit_status_now() {
            return Ok(status);
        }
        let child = self.child.as_mut().expect("checked");
        log::warn!("killing QEMU (pid {})", child.pid());
        match child.kill_and_reap(KILL_REAP_LIMIT) {
            Ok(Some(_)) => Ok(self.exit_status_now().expect("reaped")),
            Ok(None) => Err(Error::Timeout {
                what: "QEMU to die after SIGKILL".into(),
                after: KILL_REAP_LIMIT,
            }),
            Err(e) => Err(Error::io("killing QEMU", e)),
        }
    }

    /// Waits for QEMU to exit on its own (a guest that powers off) until `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> Result<ExitStatus, Error> {
        self.child_or_unsupported("wait")?;
        self.wait_exit(Deadline::after(timeout), "QEMU to exit")
    }

    pub(super) fn wait_exit(
        &mut self,
        deadline: Deadline,
        what: &str,
    ) -> Result<ExitStatus, Error> {
        self.run_until(
            deadline,
            || what.to_owned(),
            |m| m.exit_status_now().map(Ok),
        )
    }
}
