//! The console's escape key: `Ctrl-]` followed by a command key.
//!
//! Everything else typed goes to the guest unchanged, Ctrl-C included (as with `virsh console`
//! and QEMU's `-nographic`): stopping the VM is on the escape menu.

/// The escape key: Ctrl-] (the telnet and virsh console escape).
pub const ESCAPE: u8 = 0x1d;
/// Ctrl-C.
pub const CTRL_C: u8 = 0x03;

/// The help text of `run`'s escape menu (lines end in `\n`; the caller adapts them to raw
/// mode).
pub const HELP: &str = "\
escape keys (Ctrl-] then):
  q or .   stop the VM and quit (a VM with a disk is asked to power off first)
  p        press the ACPI power button (the guest shuts down)
  r        reset the VM
  s        show the VM's status
  c        send Ctrl-C to the guest (a plain Ctrl-C goes to the guest too)
  Ctrl-]   send Ctrl-] to the guest
  ?        this help
";

/// The help text of `console`'s escape menu.
pub const CONSOLE_HELP: &str = "\
escape keys (Ctrl-] then):
  d, q or .  detach (the VM keeps running)
  p          press the ACPI power button (the guest shuts down)
  r          reset the VM
  s          show the VM's status
  c          send Ctrl-C to the guest (a plain Ctrl-C goes to the guest too)
  Ctrl-]     send Ctrl-] to the guest
  ?          this help
";

/// What the keyboard asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Bytes for the guest.
    Send(Vec<u8>),
    /// Quit: stop the VM (`run`) or detach (`console`).
    Quit,
    /// Press the ACPI power button.
    PowerButton,
    /// Reset the VM.
    Reset,
    /// Show the status.
    Status,
    /// Show the help.
    Help,
    /// An unknown key after the escape key.
    Unknown(u8),
}

/// Splits keyboard input into bytes for the guest and commands.
#[derive(Debug, Clone, Default)]
pub struct EscapeParser {
    pending: bool,
}

impl EscapeParser {
    /// A parser with no escape key pending.
    pub fn new() -> EscapeParser {
        EscapeParser::default()
    }

    /// Handles input; consecutive guest bytes are merged into one [`Action::Send`].
    pub fn feed(&mut self, input: &[u8]) -> Vec<Action> {
        let mut actions = Vec::new();
        let mut send = Vec::new();
        let flush = |send: &mut Vec<u8>, actions: &mut Vec<Action>| {
            if !send.is_empty() {
                actions.push(Action::Send(std::mem::take(send)));
            }
        };
        for &b in input {
            if self.pending {
                self.pending = false;
                let action = match b {
                    b'q' | b'Q' | b'.' | b'd' | b'D' => Action::Quit,
                    b'p' | b'P' => Action::PowerButton,
                    b'r' | b'R' => Action::Reset,
                    b's' | b'S' => Action::Status,
                    b'c' | b'C' => {
                        send.push(CTRL_C);
                        continue;
                    }
                    ESCAPE => {
                        send.push(ESCAPE);
                        continue;
                    }
                    b'?' | b'h' | b'H' => Action::Help,
                    other => Action::Unknown(other),
                };
                flush(&mut send, &mut actions);
                actions.push(action);
                continue;
            }
            match b {
                ESCAPE => self.pending = true,
                b => send.push(b),
            }
        }
        flush(&mut send, &mut actions);
        actions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_input_goes_to_the_guest() {
        let mut p = EscapeParser::new();
        assert_eq!(p.feed(b"ls -l\r"), vec![Action::Send(b"ls -l\r".to_vec())]);
        assert!(p.feed(b"").is_empty());
    }

    #[test]
    fn escape_commands_even_across_reads() {
        let mut p = EscapeParser::new();
        assert_eq!(
            p.feed(b"ab\x1d"),
            vec![Action::Send(b"ab".to_vec())],
            "the escape key waits for the next key"
        );
        assert_eq!(p.feed(b"q"), vec![Action::Quit]);
        assert_eq!(
            p.feed(b"x\x1dpy\x1dr\x1ds\x1d?\x1dz"),
            vec![
                Action::Send(b"x".to_vec()),
                Action::PowerButton,
                Action::Send(b"y".to_vec()),
                Action::Reset,
                Action::Status,
                Action::Help,
                Action::Unknown(b'z'),
            ]
        );
    }

    #[test]
    fn literal_escape_and_ctrl_c_through_the_menu() {
        let mut p = EscapeParser::new();
        assert_eq!(
            p.feed(b"a\x1d\x1db\x1dc"),
            vec![Action::Send(vec![b'a', ESCAPE, b'b', CTRL_C])]
        );
    }

    #[test]
    fn ctrl_c_goes_to_the_guest() {
        let mut p = EscapeParser::new();
        assert_eq!(p.feed(b"x\x03y"), vec![Action::Send(b"x\x03y".to_vec())]);
        assert_eq!(
            p.feed(b"\x1dd"),
            vec![Action::Quit],
            "d detaches in `console`"
        );
    }
}
