//! Peak RSS of a client that manages one VM, measured in a fresh process (`qm-bench __rss
//! CLIENT`): launch one VM, 100 query-status, 500 stop/cont whose 1000 STOP/RESUME events are
//! kept and then taken at once, query-version, shut down; then report VmHWM and the current
//! RSS split from /proc/self/status.

use std::path::Path;
use std::time::Duration;

use qemu_process::{AccelChoice, Machine, MachineConfig};
use qmp_proto::commands::QueryStatus;

use crate::floor::{FloorVm, QUERY_STATUS};

/// The fields of /proc/self/status the report shows, in KiB.
pub const FIELDS: &[&str] = &["VmHWM", "VmRSS", "RssAnon", "RssFile", "VmData", "VmExe"];

/// Runs the workload with `client` (`ours` or `floor`) and prints `vmhwm_kib N` and the other
/// [`FIELDS`] (`rssanon_kib N`, ...).
pub fn run(client: &str, qemu: &Path) -> Result<(), String> {
    match client {
        "ours" => ours(qemu).map_err(|e| format!("ours: {e}"))?,
        "floor" => floor(qemu).map_err(|e| format!("floor: {e}"))?,
        other => return Err(format!("unknown client {other:?}")),
    }
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("reading /proc/self/status: {e}"))?;
    for field in FIELDS {
        let kib =
            status_kib(&status, field).ok_or_else(|| format!("no {field} in /proc/self/status"))?;
        println!("{}_kib {kib}", field.to_ascii_lowercase());
    }
    Ok(())
}

/// stop/cont pairs in the workload.
const EVENT_PAIRS: usize = 500;

fn ours(qemu: &Path) -> Result<(), String> {
    let mut config = MachineConfig::new(qemu);
    config
        .args(["-machine", "none", "-nodefaults"])
        .accel(AccelChoice::Tcg);
    let mut vm = Machine::launch(&config).map_err(|e| e.to_string())?;
    for _ in 0..100 {
        vm.command(&QueryStatus).map_err(|e| e.to_string())?;
    }
    for _ in 0..EVENT_PAIRS {
        vm.pause().map_err(|e| e.to_string())?;
        vm.resume().map_err(|e| e.to_string())?;
    }
    // QEMU sends STOP and RESUME before the replies to stop and cont: all are kept by now.
    let events = vm.events().len();
    if events != 2 * EVENT_PAIRS {
        return Err(format!("{events} events kept, not {}", 2 * EVENT_PAIRS));
    }
    vm.execute("query-version", None)
        .map_err(|e| e.to_string())?;
    vm.shutdown(Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    Ok(())
}

fn floor(qemu: &Path) -> Result<(), String> {
    let mut vm = FloorVm::launch(qemu, "tcg").map_err(|e| e.to_string())?;
    for _ in 0..100 {
        vm.execute(QUERY_STATUS).map_err(|e| e.to_string())?;
    }
    // The floor keeps no events: it only counts the lines it skipped on the way to replies.
    let skipped_before = vm.lines_skipped();
    for _ in 0..EVENT_PAIRS {
        vm.execute(b"{\"execute\":\"stop\"}\r\n")
            .map_err(|e| e.to_string())?;
        vm.execute(b"{\"execute\":\"cont\"}\r\n")
            .map_err(|e| e.to_string())?;
    }
    let events = vm.lines_skipped() - skipped_before;
    if events != 2 * EVENT_PAIRS as u64 {
        return Err(format!("{events} events seen, not {}", 2 * EVENT_PAIRS));
    }
    vm.execute(b"{\"execute\":\"query-version\"}\r\n")
        .map_err(|e| e.to_string())?;
    vm.quit().map_err(|e| e.to_string())?;
    Ok(())
}

/// The value of `field` (`VmHWM: 1234 kB`) in a /proc/PID/status text, in KiB.
pub fn status_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        let number = rest.trim().strip_suffix("kB")?.trim();
        number.parse().ok()
    })
}

/// Parses `name_kib N` lines (what [`run`] prints) into `(name, KiB)` pairs.
pub fn parse_report(output: &str) -> Vec<(String, u64)> {
    output
        .lines()
        .filter_map(|line| {
            let (name, n) = line.split_once(' ')?;
            let name = name.strip_suffix("_kib")?;
            Some((name.to_owned(), n.trim().parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tqm-bench\nVmPeak:\t   10000 kB\nVmHWM:\t    3120 kB\n\
                          VmRSS:\t    3004 kB\nRssAnon:\t     400 kB\nVmHWMX:\t 1 kB\n";

    #[test]
    fn status_fields() {
        assert_eq!(status_kib(STATUS, "VmHWM"), Some(3120));
        assert_eq!(status_kib(STATUS, "RssAnon"), Some(400));
        assert_eq!(status_kib(STATUS, "VmSwap"), None);
        assert_eq!(status_kib("VmHWM:\t12 MB\n", "VmHWM"), None);
    }

    #[test]
    fn report_lines() {
        assert_eq!(
            parse_report("vmhwm_kib 3120\nrssanon_kib 400\nnoise\nx_kib y\n"),
            [("vmhwm".to_owned(), 3120), ("rssanon".to_owned(), 400)]
        );
    }

    #[test]
    fn this_process_has_a_peak() {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        assert!(status_kib(&status, "VmHWM").unwrap() > 0);
    }
}
