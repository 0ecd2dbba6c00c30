//! Descriptor passing: `-add-fd` at launch, `getfd` (SCM_RIGHTS) and `add-fd` at run time. Each
//! test makes QEMU actually use the descriptor and checks the effect from outside.

use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use qemu_machine_tests::support::{none_config, scratch};
use qemu_process::{AccelChoice, Machine, MachineConfig};
use serde_json::{json, Value};

fn rw_file(path: &std::path::Path, len: u64) -> std::fs::File {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap();
    file.set_len(len).unwrap();
    file
}

/// Writes `pattern` over the first 4 KiB of block node `node` with HMP's qemu-io.
fn qemu_io_write(vm: &mut Machine, node: &str, pattern: u8) {
    let out = vm
        .execute(
            "human-monitor-command",
            Some(json!({
                "command-line": format!("qemu-io {node} \"write -P {pattern:#x} 0 4k\"")
            })),
        )
        .unwrap();
    // qemu-io reports on QEMU's stdout, not in the reply; the file content is the proof.
    assert!(out.is_string(), "{out}");
}

fn first_bytes(file: &mut std::fs::File, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    file.seek(SeekFrom::Start(0)).unwrap();
    file.read_exact(&mut buf).unwrap();
    buf
}

fn fdset(vm: &mut Machine, id: u64) -> Value {
    let sets = vm.execute("query-fdsets", None).unwrap();
    sets.as_array()
        .unwrap()
        .iter()
        .find(|s| s["fdset-id"] == json!(id))
        .cloned()
        .unwrap_or_else(|| panic!("no fdset {id} in {sets}"))
}

#[test]
fn a_descriptor_added_at_launch_backs_a_block_node() {
    let scratch = scratch("fd-launch");
    let mut file = rw_file(&scratch.path().join("disk.img"), 1 << 20);
    let mut config = none_config();
    config.add_fd(
        OwnedFd::from(file.try_clone().unwrap()),
        7,
        Some("disk,image"),
    );
    let mut vm = Machine::launch(&config).unwrap();
    let set = fdset(&mut vm, 7);
    assert_eq!(set["fds"][0]["opaque"], json!("disk,image"), "{set}");
    vm.execute(
        "blockdev-add",
        Some(json!({"driver": "file", "node-name": "disk0", "filename": "/dev/fdset/7"})),
    )
    .unwrap();
    qemu_io_write(&mut vm, "disk0", 0x5a);
    assert_eq!(first_bytes(&mut file, 4096), vec![0x5a; 4096]);
    vm.shutdown(Duration::from_secs(10)).unwrap();
}

#[test]
fn a_descriptor_sent_with_getfd_is_used_by_qemu() {
    let scratch = scratch("fd-getfd");
    let mut dump = rw_file(&scratch.path().join("dump.elf"), 0);
    let mut config = MachineConfig::new(qemu_machine_tests::qemu_system_x86_64());
    config
        .args(["-machine", "q35", "-m", "16M", "-nodefaults", "-S"])
        .accel(AccelChoice::Tcg);
    let mut vm = Machine::launch(&config).unwrap();
    vm.send_fd(dump.as_fd(), "dumpfd").unwrap();
    // QEMU writes an ELF core of guest memory into the descriptor it received.
    vm.execute(
        "dump-guest-memory",
        Some(json!({"paging": false, "protocol": "fd:dumpfd"})),
    )
    .unwrap();
    let len = dump.metadata().unwrap().len();
    assert!(len >= 16 << 20, "dump is {len} bytes");
    assert_eq!(first_bytes(&mut dump, 4), b"\x7fELF");
    // The name is consumed by the dump; sending again under the same name works.
    vm.send_fd(dump.as_fd(), "again").unwrap();
    vm.execute("closefd", Some(json!({"fdname": "again"})))
        .unwrap();
    // An unknown name is QEMU's error, typed.
    match vm.execute("closefd", Some(json!({"fdname": "never-sent"}))) {
        Err(qemu_process::Error::Qmp(e)) => assert!(e.desc.contains("never-sent"), "{e}"),
        other => panic!("expected a QMP error, got {other:?}"),
    }
    vm.shutdown(Duration::from_secs(10)).unwrap();
}

#[test]
fn a_descriptor_added_to_an_fdset_at_run_time_backs_a_block_node() {
    let scratch = scratch("fd-runtime");
    let mut file = rw_file(&scratch.path().join("disk.img"), 1 << 20);
    let mut vm = Machine::launch(&none_config()).unwrap();
    let entry = vm
        .add_fd_at_runtime(file.as_fd(), Some(3), Some("runtime"))
        .unwrap();
    assert_eq!(entry.fdset_id, 3);
    assert!(entry.fd >= 0);
    let set = fdset(&mut vm, 3);
    assert_eq!(set["fds"][0]["fd"], json!(entry.fd), "{set}");
    assert_eq!(set["fds"][0]["opaque"], json!("runtime"), "{set}");
    // A second descriptor in a new set QEMU numbers itself.
    let other = vm.add_fd_at_runtime(file.as_fd(), None, None).unwrap();
    assert_ne!(other.fdset_id, 3);
    vm.execute(
        "blockdev-add",
        Some(json!({"driver": "file", "node-name": "d", "filename": "/dev/fdset/3"})),
    )
    .unwrap();
    qemu_io_write(&mut vm, "d", 0xa5);
    assert_eq!(first_bytes(&mut file, 4096), vec![0xa5; 4096]);
    // Our descriptor is still ours and usable.
    assert_eq!(file.metadata().unwrap().len(), 1 << 20);
    vm.shutdown(Duration::from_secs(10)).unwrap();
}
