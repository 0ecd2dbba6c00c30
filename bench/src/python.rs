//! QEMU's Python stack (`qemu.qmp`), through `python/qmp_bench.py`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// The committed script (found in the source tree the harness was built from).
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python/qmp_bench.py")
}

/// What a row says when `qemu.qmp` cannot be used.
pub const INSTALL_HINT: &str = "not run: `pip install qemu.qmp` (needs python3)";

/// `Ok(version of qemu.qmp)`, or why the Python rows cannot run.
pub fn check(python: &Path) -> Result<String, String> {
    let out = Command::new(python)
        .arg(script())
        .arg("check")
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("{} not runnable ({e})", python.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.trim().strip_prefix("ok ") {
        Some(version) if out.status.success() => Ok(version.to_owned()),
        _ => Err(text.trim().to_owned()),
    }
}

/// A `qmp_bench.py serve` process.
pub struct Server {
    child: Child,
    /// `None` once closed (on drop).
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    line: String,
}

/// The answer to `rtt N`.
#[derive(Debug, PartialEq)]
pub struct RttBlock {
    /// The client's user+sys CPU time over the block, in ns.
    pub cpu_ns: f64,
    /// Each round trip, in ns.
    pub times_ns: Vec<f64>,
}

impl Server {
    /// Starts the server for `qemu` with the accelerator `accel`.
    pub fn start(python: &Path, qemu: &Path, accel: &str) -> Result<Server, String> {
        let mut child = Command::new(python)
            .arg(script())
            .arg("serve")
            .arg("--qemu")
            .arg(qemu)
            .args(["--accel", accel])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", python.display()))?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        Ok(Server {
            child,
            stdin,
            stdout,
            line: String::new(),
        })
    }

    /// Sends one request and returns the answer line.
    fn ask(&mut self, request: &str) -> Result<&str, String> {
        let stdin = self.stdin.as_mut().expect("open until drop");
        writeln!(stdin, "{request}")
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("qmp_bench.py: sending {request:?}: {e}"))?;
        self.line.clear();
        match self.stdout.read_line(&mut self.line) {
            Ok(0) => Err(format!(
                "qmp_bench.py exited on {request:?} (see its traceback above)"
            )),
            Ok(_) => Ok(self.line.trim_end()),
            Err(e) => Err(format!(
                "qmp_bench.py: reading the answer to {request:?}: {e}"
            )),
        }
    }

    /// One launch→quit cycle.
    pub fn cycle(&mut self) -> Result<CycleAnswer, String> {
        let answer = self.ask("cycle")?;
        parse_cycle(answer).ok_or_else(|| format!("qmp_bench.py: bad answer {answer:?}"))
    }

    /// Launches a VM for round trips.
    pub fn launch(&mut self) -> Result<(), String> {
        self.expect_ok("launch")
    }

    /// `n` round trips.
    pub fn rtt(&mut self, n: usize) -> Result<RttBlock, String> {
        let answer = self.ask(&format!("rtt {n}"))?;
        parse_rtt(answer, n).ok_or_else(|| format!("qmp_bench.py: bad answer {answer:?}"))
    }

    /// Shuts that VM down.
    pub fn stop(&mut self) -> Result<(), String> {
        self.expect_ok("stop")
    }

    fn expect_ok(&mut self, request: &str) -> Result<(), String> {
        let answer = self.ask(request)?;
        if answer == "ok" {
            Ok(())
        } else {
            Err(format!("qmp_bench.py: {request}: {answer}"))
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // End of input makes the server shut its VM down and exit.
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// The answer to `cycle`, in ns.
#[derive(Debug, PartialEq)]
pub struct CycleAnswer {
    /// Wall time.
    pub wall_ns: f64,
    /// The Python process's user+sys CPU time.
    pub cpu_ns: f64,
    /// The reaped QEMU's user+sys CPU time.
    pub child_cpu_ns: f64,
}

/// Parses `cycle <ns> <cpu_ns> <child_cpu_ns>`.
pub fn parse_cycle(answer: &str) -> Option<CycleAnswer> {
    let numbers = answer
        .strip_prefix("cycle ")?
        .split_ascii_whitespace()
        .map(|w| w.parse::<u64>().ok().map(|n| n as f64))
        .collect::<Option<Vec<f64>>>()?;
    match numbers[..] {
        [wall_ns, cpu_ns, child_cpu_ns] => Some(CycleAnswer {
            wall_ns,
            cpu_ns,
            child_cpu_ns,
        }),
        _ => None,
    }
}

/// Parses `rtt <cpu_ns> <ns>...` with exactly `n` times.
pub fn parse_rtt(answer: &str, n: usize) -> Option<RttBlock> {
    let mut words = answer.strip_prefix("rtt ")?.split_ascii_whitespace();
    let cpu_ns = words.next()?.parse::<u64>().ok()? as f64;
    let times_ns = words
        .map(|w| w.parse::<u64>().ok().map(|t| t as f64))
        .collect::<Option<Vec<f64>>>()?;
    (times_ns.len() == n).then_some(RttBlock { cpu_ns, times_ns })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycle_answers() {
        assert_eq!(
            parse_cycle("cycle 77068716 4000000 21000000"),
            Some(CycleAnswer {
                wall_ns: 77068716.0,
                cpu_ns: 4000000.0,
                child_cpu_ns: 21000000.0
            })
        );
        assert_eq!(parse_cycle("cycle 77068716"), None);
        assert_eq!(parse_cycle("cycle 1 2 -3"), None);
        assert_eq!(parse_cycle("cycle 1 2 3 4"), None);
        assert_eq!(parse_cycle("error unknown request 'x'"), None);
    }

    #[test]
    fn rtt_answers() {
        assert_eq!(
            parse_rtt("rtt 750000 741477 314389 278125", 3),
            Some(RttBlock {
                cpu_ns: 750000.0,
                times_ns: vec![741477.0, 314389.0, 278125.0]
            })
        );
        assert_eq!(parse_rtt("rtt 750000 741477 314389", 3), None);
        assert_eq!(parse_rtt("rtt 750000 74x 314389 1", 3), None);
        assert_eq!(parse_rtt("rtt", 0), None);
        assert_eq!(parse_rtt("ok", 0), None);
    }
}
