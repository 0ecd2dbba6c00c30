//! vsock for a VM (`vsock: true`): a `vhost-vsock` device with a context id (CID) that cannot
//! collide with another VM's.
//!
//! The CID is chosen at random among the ones a guest may have: not 0 (the hypervisor), 1
//! (loopback), 2 (the host) or 0xFFFFFFFF (`VMADDR_CID_ANY`). Whether another VM on the host
//! holds it cannot be asked beforehand without racing; the kernel refuses a CID in use when
//! QEMU realizes the device (`EADDRINUSE`, "unable to set guest cid: Address already in use")
//! and QEMU exits. The launch then tries again with another CID (see
//! [`Machine::launch`](crate::Machine::launch)), [`LAUNCH_ATTEMPTS`] times in all.

use std::path::Path;

use qemu_cmdline::{Device, PropValue, VirtioTransport, VmSpec};

use crate::error::Error;

/// The device node the kernel's `vhost_vsock` module provides.
pub const VHOST_VSOCK: &str = "/dev/vhost-vsock";
/// The id of the device in QEMU.
pub(crate) const DEVICE_ID: &str = "vsock0";
/// How many CIDs a launch tries before giving up (a random CID is in use with a probability
/// of about n/4e9 with n VMs on the host: more than one retry is practically never needed).
pub(crate) const LAUNCH_ATTEMPTS: u32 = 5;

/// Whether a guest may have `cid`.
pub(crate) fn usable_cid(cid: u32) -> bool {
    cid > 2 && cid != u32::MAX
}

/// A random CID a guest may have.
pub(crate) fn random_cid() -> u32 {
    loop {
        let mut bytes = [0u8; 4];
        // SAFETY: getrandom writes at most `bytes.len()` bytes into the buffer it is given.
        let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
        let cid = if n == bytes.len() as isize {
            u32::from_ne_bytes(bytes)
        } else {
            // getrandom cannot fail for 4 bytes on Linux >= 3.17; fall back to the clock.
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(3, |d| d.subsec_nanos() ^ std::process::id())
        };
        if usable_cid(cid) {
            return cid;
        }
    }
}

/// Checks that this user can open the vhost-vsock device (what QEMU opens for the device).
pub(crate) fn check_device(device: &Path) -> Result<(), Error> {
    match std::fs::File::options().read(true).write(true).open(device) {
        Ok(_) => Ok(()),
        Err(source) => Err(Error::DeviceUnavailable {
            device: device.to_owned(),
            purpose: "vsock (vhost-vsock-pci): load the vhost_vsock kernel module \
                      (`modprobe vhost_vsock`) and give this user read-write access to it"
                .into(),
            source,
        }),
    }
}

/// Adds the vhost-vsock device with `cid` to `spec` (PCI or MMIO, as the spec's transport).
pub(crate) fn add_device(spec: &mut VmSpec, cid: u32) {
    let transport = spec
        .virtio_transport
        .unwrap_or(spec.arch.profile().virtio_transport);
    let driver = match transport {
        VirtioTransport::Pci => "vhost-vsock-pci",
        VirtioTransport::Mmio => "vhost-vsock-device",
    };
    spec.devices.push(
        Device::new(driver)
            .id(DEVICE_ID)
            .prop("guest-cid", PropValue::UInt(cid.into())),
    );
}

/// The CID of the spec's vsock device, if it has one.
pub(crate) fn cid_of(spec: &VmSpec) -> Option<u32> {
    let device = spec
        .devices
        .iter()
        .find(|d| d.id.as_deref() == Some(DEVICE_ID))?;
    match device.props.get("guest-cid")? {
        PropValue::UInt(n) => u32::try_from(*n).ok(),
        _ => None,
    }
}

/// Gives the spec's vsock device another random CID; returns it.
pub(crate) fn change_cid(spec: &mut VmSpec) -> Option<u32> {
    let old = cid_of(spec)?;
    let device = spec
        .devices
        .iter_mut()
        .find(|d| d.id.as_deref() == Some(DEVICE_ID))?;
    let cid = loop {
        let cid = random_cid();
        if cid != old {
            break cid;
        }
    };
    device.props.set("guest-cid", PropValue::UInt(cid.into()));
    Some(cid)
}

/// Whether a launch failed because the kernel refused the CID as in use by another VM.
pub(crate) fn cid_in_use(error: &Error) -> bool {
    match error {
        Error::Launch { log, .. } => {
            log.contains("unable to set guest cid") && log.contains("Address already in use")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_cids_are_never_chosen() {
        for cid in [0, 1, 2, u32::MAX] {
            assert!(!usable_cid(cid), "{cid}");
        }
        assert!(usable_cid(3) && usable_cid(u32::MAX - 1));
        let cids: Vec<u32> = (0..1000).map(|_| random_cid()).collect();
        assert!(cids.iter().all(|c| usable_cid(*c)));
        // Random: a thousand draws from four billion are practically all different.
        let mut sorted = cids.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert!(sorted.len() > 990, "{} distinct", sorted.len());
    }

    #[test]
    fn the_device_carries_the_cid_and_gets_another_on_retry() {
        let mut spec = VmSpec::default();
        add_device(&mut spec, 1234);
        assert_eq!(spec.devices[0].driver, "vhost-vsock-pci");
        assert_eq!(cid_of(&spec), Some(1234));
        let argv = spec.to_argv().unwrap().to_string();
        assert!(
            argv.contains("-device vhost-vsock-pci,id=vsock0,guest-cid=1234"),
            "{argv}"
        );
        let new = change_cid(&mut spec).unwrap();
        assert_ne!(new, 1234);
        assert!(usable_cid(new));
        assert_eq!(cid_of(&spec), Some(new));
        assert_eq!(spec.devices.len(), 1);

        let mut mmio = VmSpec {
            virtio_transport: Some(VirtioTransport::Mmio),
            ..VmSpec::default()
        };
        add_device(&mut mmio, 7);
        assert_eq!(mmio.devices[0].driver, "vhost-vsock-device");
    }

    #[test]
    fn a_cid_in_use_is_recognised_in_qemus_output() {
        use std::os::unix::process::ExitStatusExt;
        let launch = |log: &str| Error::Launch {
            status: std::process::ExitStatus::from_raw(1 << 8),
            argv: Vec::new(),
            log: log.into(),
        };
        // What QEMU 7.2 prints when the kernel refuses the CID (EADDRINUSE).
        assert!(cid_in_use(&launch(
            "qemu-system-x86_64: -device vhost-vsock-pci,id=vsock0,guest-cid=3: vhost-vsock: \
             unable to set guest cid: Address already in use\n"
        )));
        assert!(!cid_in_use(&launch(
            "qemu-system-x86_64: -device vhost-vsock-pci,id=vsock0,guest-cid=3: vhost-vsock: \
             failed to open vhost device: No such file or directory\n"
        )));
        assert!(!cid_in_use(&Error::Disconnected));
    }

    #[test]
    fn a_missing_device_is_named() {
        let err = check_device(Path::new("/dev/qm-no-such-vhost-vsock")).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("/dev/qm-no-such-vhost-vsock"), "{text}");
        assert!(text.contains("modprobe vhost_vsock"), "{text}");
        assert!(matches!(err, Error::DeviceUnavailable { .. }));
    }
}
