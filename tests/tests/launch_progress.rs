//! `Machine::launch_with_progress` against a real QEMU and qemu-img: the work a VM launch does
//! on its disks (create, flash with its progress, grow) is reported in order, and the VM runs.

use std::time::Duration;

use qemu_cmdline::Size;
use qemu_process::{AccelChoice, Machine, MachineConfig, Preparing, VmLaunch};

/// A directory removed when dropped (also when the test fails).
struct Scratch(std::path::PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A step as the callback saw it, owned.
#[derive(Debug, PartialEq)]
enum Step {
    Create(String, u64),
    Flash(String, f64),
    Grow(String, u64),
}

#[test]
fn disk_work_is_reported_before_qemu_starts() {
    let _ = qemu_machine_tests::qemu_system_x86_64();
    let _ = qemu_machine_tests::qemu_img();
    let scratch = Scratch(std::env::temp_dir().join(format!("qm-progress-{}", std::process::id())));
    let dir = &scratch.0;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    // A 4 MiB raw image to flash, and a description that flashes it into a disk grown to 8 MiB,
    // plus a new 2 MiB disk.
    let source = dir.join("source.raw");
    std::fs::write(&source, vec![0x5au8; 4 << 20]).unwrap();
    let flashed = dir.join("flashed.qcow2");
    let created = dir.join("created.qcow2");
    let vm = VmLaunch::from_json(&format!(
        r#"{{"machine": "q35", "memory": "64M", "disks": [
            {{"name": "root", "path": "{}", "format": "qcow2", "flash_from": "{}", "size": "8M"}},
            {{"name": "data", "path": "{}", "size": "2M"}}]}}"#,
        flashed.display(),
        source.display(),
        created.display()
    ))
    .unwrap();
    let mut config = MachineConfig::for_vm(vm);
    config
        .accel(AccelChoice::Tcg)
        .launch_timeout(Duration::from_secs(60));
    let mut steps = Vec::new();
    let mut record = |step: &Preparing<'_>| {
        steps.push(match *step {
            Preparing::Create { disk, size, .. } => Step::Create(disk.into(), size.bytes()),
            Preparing::Flash { disk, fraction, .. } => Step::Flash(disk.into(), fraction),
            Preparing::Grow { disk, size, .. } => Step::Grow(disk.into(), size.bytes()),
            _ => panic!("a step this test does not know: {step:?}"),
        })
    };
    let mut machine = Machine::launch_with_progress(&config, &mut record).unwrap();
    assert!(machine.status().is_ok());
    machine.shutdown(Duration::from_secs(30)).unwrap();
    drop(machine);

    let flashes: Vec<f64> = steps
        .iter()
        .filter_map(|s| match s {
            Step::Flash(d, f) if d == "root" => Some(*f),
            _ => None,
        })
        .collect();
    assert!(!flashes.is_empty(), "{steps:?}");
    assert!(flashes.windows(2).all(|w| w[0] <= w[1]), "{steps:?}");
    assert_eq!(flashes.last(), Some(&1.0), "{steps:?}");
    let others: Vec<&Step> = steps
        .iter()
        .filter(|s| !matches!(s, Step::Flash(..)))
        .collect();
    assert_eq!(
        others,
        [
            &Step::Grow("root".into(), Size::mib(8).bytes()),
            &Step::Create("data".into(), Size::mib(2).bytes())
        ],
        "{steps:?}"
    );
    // The grow comes after the flash is complete.
    let grow_at = steps
        .iter()
        .position(|s| matches!(s, Step::Grow(..)))
        .unwrap();
    assert!(matches!(steps[grow_at - 1], Step::Flash(_, f) if f == 1.0));
}
