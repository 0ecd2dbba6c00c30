//! Exit codes and the command's one error type.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success; for `run`: the VM ended the way it was asked to (guest powered off, `--for` elapsed, the escape menu's quit) and QEMU exited cleanly |
//! | 1 | an operation failed (a QMP command returned an error in a script, an image operation failed, QEMU or a started VM could not be reached) |
//! | 2 | usage or input error: bad arguments, a spec that does not parse or describes an impossible VM, a file the command or the spec names that does not exist (a spec, a flash source, a disk, a kernel) |
//! | 3 | QEMU could not be launched: binary not found, QEMU exited during start-up (its own message is printed), start-up timed out |
//! | 4 | QEMU or the guest ended abnormally: QEMU crashed or exited with a failure status, the guest panicked, or QEMU had to be killed because it did not shut down in time |
//! | 129, 130, 143 | interrupted by SIGHUP, SIGINT or SIGTERM (128 + the signal number), after the VM was stopped as for a quit |

use std::fmt;

/// Everything went as asked.
pub const SUCCESS: u8 = 0;
/// An operation failed.
pub const FAILURE: u8 = 1;
/// Bad arguments or an invalid spec (also clap's own usage-error code).
pub const USAGE: u8 = 2;
/// QEMU could not be launched.
pub const LAUNCH: u8 = 3;
/// QEMU or the guest ended abnormally.
pub const ABNORMAL: u8 = 4;

/// The exit code for an interruption by `signal`: 128 + its number, like a shell reports it.
pub fn for_signal(signal: i32) -> u8 {
    u8::try_from(128 + signal).unwrap_or(FAILURE)
}

/// The text of the exit-code table for `--help`.
pub const HELP_TABLE: &str = "\
Exit codes:
  0    success (run: the guest powered off, --for elapsed, or quit from the escape menu)
  1    an operation failed (QMP error in a script, image operation, I/O)
  2    usage or input error (bad arguments, an invalid spec, a file it names is missing)
  3    QEMU could not be launched (its own message is printed)
  4    QEMU or the guest ended abnormally (crash, failure status, guest panic, killed)
  130  interrupted by SIGINT (129 SIGHUP, 143 SIGTERM); the VM was stopped first
  image check exits as qemu-img check (see `image check --help`)";

/// A failure: the exit code and one line (or, for launch failures, QEMU's own output after it).
#[derive(Debug)]
pub struct Failure {
    /// The process exit code.
    pub code: u8,
    /// What went wrong.
    pub message: String,
    /// Further lines printed after the message as they are (QEMU's output).
    pub detail: Option<String>,
}

impl Failure {
    /// A failure with `code` and a message.
    pub fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
            detail: None,
        }
    }

    /// Exit code 1.
    pub fn failed(message: impl Into<String>) -> Failure {
        Failure::new(FAILURE, message)
    }

    /// Exit code 2.
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure::new(USAGE, message)
    }

    /// Adds lines printed after the message.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Failure {
        let detail = detail.into();
        if !detail.trim().is_empty() {
            self.detail = Some(detail);
        }
        self
    }

    /// A failure from a `qemu_process` error that happened while launching QEMU: exit code 3
    /// with QEMU's own output, when the error says QEMU could not start.
    pub fn from_launch(e: qemu_process::Error) -> Failure {
        use qemu_process::Error as E;
        match e {
            E::Launch { status, argv, log } => {
                let mut detail = log.trim_end().to_owned();
                if detail.is_empty() {
                    detail = "(QEMU printed nothing)".to_owned();
                }
                log::info!("the command was: {}", qemu_cmdline::shell_quote(&argv));
                Failure::new(
                    LAUNCH,
                    format!("QEMU exited during launch ({status}); its output:"),
                )
                .with_detail(detail)
            }
            e @ (E::Spec(_) | E::InvalidArgument(_) | E::NotFound { .. }) => {
                Failure::usage(e.to_string())
            }
            e => Failure::new(LAUNCH, format!("cannot launch the VM: {e}")),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(detail) = &self.detail {
            write!(f, "\n{detail}")?;
        }
        Ok(())
    }
}

/// The result of a subcommand: its exit code, or a failure to report.
pub type CliResult = Result<u8, Failure>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;

    #[test]
    fn signals_map_to_128_plus_n() {
        assert_eq!(for_signal(libc::SIGINT), 130);
        assert_eq!(for_signal(libc::SIGTERM), 143);
        assert_eq!(for_signal(libc::SIGHUP), 129);
        assert_eq!(for_signal(1000), FAILURE);
    }

    #[test]
    fn launch_failure_carries_qemu_output() {
        let e = qemu_process::Error::Launch {
            status: ExitStatus::from_raw(1 << 8),
            argv: vec!["qemu-system-x86_64".into(), "-bogus".into()],
            log: "qemu-system-x86_64: -bogus: invalid option\n".into(),
        };
        let f = Failure::from_launch(e);
        assert_eq!(f.code, LAUNCH);
        assert!(f.message.contains("exit status: 1"), "{}", f.message);
        assert_eq!(
            f.detail.as_deref(),
            Some("qemu-system-x86_64: -bogus: invalid option")
        );
        let missing = Failure::from_launch(qemu_process::Error::BinaryNotFound("/no/q".into()));
        assert_eq!(missing.code, LAUNCH);
        assert!(missing.to_string().contains("/no/q"));
        assert!(missing.detail.is_none());
        let source = Failure::from_launch(qemu_process::Error::NotFound {
            what: "flash source".into(),
            path: "/no/src.img".into(),
        });
        assert_eq!(source.code, USAGE);
        assert_eq!(source.message, "flash source: /no/src.img does not exist");
    }

    #[test]
    fn empty_detail_is_dropped() {
        let f = Failure::failed("x").with_detail("  \n");
        assert!(f.detail.is_none());
        assert_eq!(f.to_string(), "x");
    }
}
