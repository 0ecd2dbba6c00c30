//! What machines cost while they exist, as `MachineSet`'s documentation states it: the
//! descriptors each machine holds in this process and in the process guardian, and a thread
//! blocked in `MachineSet::next_event` that sleeps once for the whole wait while the guardian
//! does not run at all (no timer, no polling). One test alone in its binary, so that no other
//! test's machines change the counts.

use std::time::{Duration, Instant};

use qemu_machine_tests::support::none_config;
use qemu_process::{Error, Machine, MachineSet};

fn open_fds(pid: &str) -> usize {
    let count = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    // The listing of our own table counts itself.
    if pid == "self" {
        count - 1
    } else {
        count
    }
}

/// (voluntary, involuntary) context switches from /proc/`path`/status.
fn switches(path: &str) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{path}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{path}/status"))
    };
    (
        field("voluntary_ctxt_switches"),
        field("nonvoluntary_ctxt_switches"),
    )
}

/// Waits (a bounded while) until the guardian holds `count` descriptors: it closes those of a
/// machine when it handles the goodbyes the machine's drop sent, after the drop returned.
fn guardian_settles_at(guardian: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_fds(guardian) != count {
        assert!(
            Instant::now() < deadline,
            "the guardian holds {} descriptors, not {count}",
            open_fds(guardian)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn machines_hold_few_descriptors_and_cost_nothing_while_idle() {
    let guardian = qemu_process::start_guardian().unwrap().to_string();
    // It closes what it inherited from us and then names itself.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(format!("/proc/{guardian}/comm")).unwrap() != "qm-guardian\n" {
        assert!(Instant::now() < deadline, "the guardian never named itself");
        std::thread::sleep(Duration::from_millis(10));
    }
    let guardian_before = open_fds(&guardian);
    // One machine first, so that what the process opens once (lazily opened files) is in the
    // baseline.
    let mut first = Machine::launch(&none_config()).unwrap();
    first.shutdown(Duration::from_secs(10)).unwrap();
    drop(first);
    guardian_settles_at(&guardian, guardian_before);
    let ours_before = open_fds("self");

    let mut with_console = none_config();
    with_console.console(true);
    let configs = vec![none_config(), none_config(), with_console];
    let mut set = MachineSet::launch(&configs, Duration::from_secs(30)).unwrap();
    // The set's epoll instance; per machine its epoll instance, QMP socket, guardian channel
    // and temp dir watch, and the console socket.
    assert_eq!(open_fds("self") - ours_before, 1 + 4 + 4 + 5);
    // The guardian: the channel of each child, and the channel and the parent directory of
    // each temp dir.
    assert_eq!(open_fds(&guardian) - guardian_before, 3 * 3);

    // Let what the launches set in motion settle, then wait two seconds for an event that
    // does not come: this thread sleeps once, the guardian not at all.
    assert!(set
        .next_event(Duration::from_millis(200))
        .unwrap_err()
        .is_timeout());
    let (ours0, guardian0) = (switches("thread-self"), switches(&guardian));
    let err = set.next_event(Duration::from_secs(2)).unwrap_err();
    let (ours1, guardian1) = (switches("thread-self"), switches(&guardian));
    assert!(err.is_timeout(), "{err:?}");
    // One sleep for the whole wait (a second only if a page fault had to wait for the disk).
    let slept = ours1.0 - ours0.0;
    assert!((1..=2).contains(&slept), "{slept} voluntary switches");
    assert_eq!(guardian1, guardian0, "the guardian ran while all was idle");

    for result in set.shutdown_all(Duration::from_secs(10)) {
        assert!(result.unwrap().success());
    }
    drop(set);
    assert_eq!(open_fds("self"), ours_before);
    guardian_settles_at(&guardian, guardian_before);

    // Out of descriptors: the launch fails with the OS error and the step, leaving nothing.
    let limit = set_nofile(ours_before as u64 + 3);
    let err = Machine::launch(&none_config()).unwrap_err();
    set_nofile(limit);
    match &err {
        Error::Io { context, source } => {
            assert_eq!(source.raw_os_error(), Some(libc::EMFILE), "{err}");
            assert!(!context.is_empty());
            assert!(err.to_string().contains("Too many open files"), "{err}");
        }
        other => panic!("expected Error::Io, got {other:?}"),
    }
    assert_eq!(open_fds("self"), ours_before);
    guardian_settles_at(&guardian, guardian_before);
}

/// Sets the soft limit of open files and returns the previous one.
fn set_nofile(soft: u64) -> u64 {
    // SAFETY: all-zero is a valid rlimit; getrlimit writes into it.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: a writable rlimit.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    let previous = lim.rlim_cur;
    lim.rlim_cur = soft;
    // SAFETY: a valid rlimit, the soft limit below the hard one.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    previous
}
