//! Driving a guest's serial console through a [`Machine`], with everything known about the
//! guest (what its console printed, QEMU's log) in the panic message when it does not answer.

use std::time::{Duration, Instant};

use qemu_process::Machine;

/// A launched VM with the time it started, for boot-time figures and diagnostics.
pub struct Guest {
    /// The machine.
    pub vm: Machine,
    /// When the launch began.
    pub started: Instant,
    /// Everything the console printed that a wait consumed.
    pub transcript: String,
}

impl Guest {
    /// Wraps a launched machine; `started` is when its launch began.
    pub fn new(vm: Machine, started: Instant) -> Guest {
        Guest {
            vm,
            started,
            transcript: String::new(),
        }
    }

    /// Panics with `what`, the console output so far and QEMU's log.
    pub fn fail(&mut self, what: &str) -> ! {
        let pending = String::from_utf8_lossy(&self.vm.console_read()).into_owned();
        let log = self.vm.log().unwrap_or_else(|e| format!("(no log: {e})"));
        panic!(
            "{what} (after {:.1} s)\n--- console ---\n{}{pending}\n--- QEMU log ---\n{log}",
            self.started.elapsed().as_secs_f64(),
            self.transcript
        );
    }

    /// Waits for `pattern` on the console; returns what came before it.
    pub fn expect(&mut self, pattern: &str, timeout: Duration) -> String {
        match self.vm.console_wait_for(pattern.as_bytes(), timeout) {
            Ok(before) => {
                let before = String::from_utf8_lossy(&before).into_owned();
                self.transcript.push_str(&before);
                self.transcript.push_str(pattern);
                before
            }
            Err(e) => self.fail(&format!("waiting for {pattern:?}: {e}")),
        }
    }

    /// Writes `text` to the console.
    pub fn send(&mut self, text: &str, timeout: Duration) {
        if let Err(e) = self.vm.console_write(text.as_bytes(), timeout) {
            self.fail(&format!("writing {text:?} to the console: {e}"));
        }
    }

    /// Seconds since the launch began.
    pub fn elapsed_secs(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}
