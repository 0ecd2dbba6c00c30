//! 200 launch/shutdown cycles in one process: the open descriptor count is unchanged, no child
//! process is left (not even a zombie; the process guardian aside, which stays for the life of
//! the process, and has no children left either), no temp dir is left. One test alone in its binary, so
//! no other test's descriptors or children disturb the counts.

use std::time::{Duration, Instant};

use qemu_machine_tests::support::{entries, none_config, scratch};
use qemu_process::Machine;

fn open_fds() -> Vec<String> {
    let mut fds: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let target = std::fs::read_link(e.path())
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_default();
            format!("{} -> {target}", e.file_name().to_string_lossy())
        })
        .collect();
    fds.sort();
    fds
}

/// Processes whose parent is this process, other than the process guardian, and processes whose
/// parent is the guardian: the QEMUs (zombies included).
fn children() -> Vec<String> {
    let guardian = qemu_process::guardian_pid().expect("a launch started the guardian");
    let mut out = children_of(std::process::id());
    out.retain(|stat| !stat.starts_with(&format!("{guardian} ")));
    out.extend(children_of(guardian));
    out
}

/// Processes whose parent is `parent` (zombies included), as their /proc/PID/stat lines.
fn children_of(parent: u32) -> Vec<String> {
    let me = parent.to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            let fields: Vec<&str> = stat
                .rsplit_once(") ")
                .map(|(_, rest)| rest.split(' ').collect())
                .unwrap_or_default();
            fields.get(1) == Some(&me.as_str())
        })
        .collect()
}

#[test]
fn two_hundred_launch_shutdown_cycles_leak_nothing() {
    let scratch = scratch("leaks");
    let mut config = none_config();
    config.temp_base_dir(scratch.path()).console(true);
    // One cycle first, so that lazily opened descriptors of the process are counted in the
    // baseline (the directory listing of /proc/self/fd itself is closed again).
    {
        let mut vm = Machine::launch(&config).unwrap();
        vm.shutdown(Duration::from_secs(10)).unwrap();
    }
    let fds_before = open_fds();
    assert!(children().is_empty(), "{:?}", children());
    let start = Instant::now();
    for cycle in 0..200 {
        let mut vm = Machine::launch(&config).unwrap();
        if cycle % 2 == 0 {
            vm.status().unwrap();
        }
        let status = vm.shutdown(Duration::from_secs(10)).unwrap();
        assert!(status.success(), "cycle {cycle}: {status}");
        drop(vm);
    }
    let elapsed = start.elapsed();
    let fds_after = open_fds();
    assert_eq!(fds_before, fds_after, "descriptors leaked");
    assert!(children().is_empty(), "children left: {:?}", children());
    assert!(
        entries(scratch.path()).is_empty(),
        "{:?}",
        entries(scratch.path())
    );
    eprintln!("200 cycles in {elapsed:?} ({:?} each)", elapsed / 200);
}
