//! Architecture profiles: the board, CPU, console and firmware a guest architecture uses,
//! as plain data.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{Accel, CommandLine, Cpu, Machine};

/// A guest architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    /// 64-bit x86.
    #[default]
    X86_64,
    /// 64-bit Arm.
    Aarch64,
    /// 64-bit RISC-V.
    Riscv64,
}

impl Arch {
    /// The profile of the architecture.
    pub fn profile(self) -> &'static ArchProfile {
        match self {
            Arch::X86_64 => &X86_64,
            Arch::Aarch64 => &AARCH64,
            Arch::Riscv64 => &RISCV64,
        }
    }
    /// The name QEMU uses (`x86_64`, `aarch64`, `riscv64`).
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
            Arch::Riscv64 => "riscv64",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How virtio devices are attached: `virtio-blk-pci` or `virtio-blk-device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VirtioTransport {
    /// PCI(e): `-device virtio-*-pci`.
    #[default]
    Pci,
    /// Memory-mapped: `-device virtio-*-device` on the board's virtio-mmio buses.
    Mmio,
}

/// A pair of UEFI firmware files: the code and the variable-store template that goes with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UefiPaths {
    /// The read-only code image.
    pub code: &'static str,
    /// The template each VM copies for its own variable store.
    pub vars: &'static str,
}

/// What an architecture needs to boot: the QEMU binary, the board, the default CPU, the
/// serial console, the virtio transport and where distributions install UEFI firmware.
/// Picking an installed firmware file is left to the caller (this crate does no I/O).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchProfile {
    /// The architecture.
    pub arch: Arch,
    /// The QEMU binary (`qemu-system-<arch>`).
    pub binary: &'static str,
    /// The machine type.
    pub machine: &'static str,
    /// Properties the machine gets by default (`gic-version=max` on arm).
    pub machine_props: &'static [(&'static str, &'static str)],
    /// The CPU model under TCG; `None` keeps QEMU's default.
    pub tcg_cpu: Option<&'static str>,
    /// The CPU model when a hardware accelerator may be used (`max` is the host CPU under KVM
    /// and HVF, and everything TCG can emulate under TCG, so it suits a fallback list).
    pub hw_cpu: Option<&'static str>,
    /// The serial console's name in a Linux guest (`console=` on the kernel command line).
    pub console: &'static str,
    /// The UART model `-serial` attaches to.
    pub uart: &'static str,
    /// The default virtio transport.
    pub virtio_transport: VirtioTransport,
    /// UEFI firmware locations, in order of preference.
    pub uefi: &'static [UefiPaths],
}

/// 64-bit x86 on a q35 board. Under TCG the CPU is `max`, every feature TCG emulates (in QEMU
/// 7.2 up to x86-64-v3: SSE4.2, POPCNT, AVX2, ...), so that distributions built for
/// x86-64-v2 (RHEL 9) or v3 run; QEMU's own default, `qemu64`, is x86-64-v1.
pub const X86_64: ArchProfile = ArchProfile {
    arch: Arch::X86_64,
    binary: "qemu-system-x86_64",
    machine: "q35",
    machine_props: &[],
    tcg_cpu: Some("max"),
    hw_cpu: Some("max"),
    console: "ttyS0",
    uart: "isa-serial",
    virtio_transport: VirtioTransport::Pci,
    uefi: &[
        UefiPaths {
            code: "/usr/share/OVMF/OVMF_CODE_4M.fd",
            vars: "/usr/share/OVMF/OVMF_VARS_4M.fd",
        },
        UefiPaths {
            code: "/usr/share/OVMF/OVMF_CODE.fd",
            vars: "/usr/share/OVMF/OVMF_VARS.fd",
        },
        UefiPaths {
            code: "/usr/share/edk2/ovmf/OVMF_CODE.fd",
            vars: "/usr/share/edk2/ovmf/OVMF_VARS.fd",
        },
        UefiPaths {
            code: "/usr/share/edk2/x64/OVMF_CODE.4m.fd",
            vars: "/usr/share/edk2/x64/OVMF_VARS.4m.fd",
        },
        UefiPaths {
            code: "/usr/share/qemu/ovmf-x86_64-code.bin",
            vars: "/usr/share/qemu/ovmf-x86_64-vars.bin",
        },
    ],
};

/// 64-bit Arm on the virt board with the best available GIC.
pub const AARCH64: ArchProfile = ArchProfile {
    arch: Arch::Aarch64,
    binary: "qemu-system-aarch64",
    machine: "virt",
    machine_props: &[("gic-version", "max")],
    tcg_cpu: Some("cortex-a57"),
    hw_cpu: Some("max"),
    console: "ttyAMA0",
    uart: "pl011",
    virtio_transport: VirtioTransport::Pci,
    uefi: &[
        UefiPaths {
            code: "/usr/share/AAVMF/AAVMF_CODE.fd",
            vars: "/usr/share/AAVMF/AAVMF_VARS.fd",
        },
        UefiPaths {
            code: "/usr/share/edk2/aarch64/QEMU_EFI-pflash.raw",
            vars: "/usr/share/edk2/aarch64/vars-template-pflash.raw",
        },
        UefiPaths {
            code: "/usr/share/qemu/edk2-aarch64-code.fd",
            vars: "/usr/share/qemu/edk2-arm-vars.fd",
        },
    ],
};

/// 64-bit RISC-V on the virt board.
pub const RISCV64: ArchProfile = ArchProfile {
    arch: Arch::Riscv64,
    binary: "qemu-system-riscv64",
    machine: "virt",
    machine_props: &[],
    tcg_cpu: None,
    hw_cpu: None,
    console: "ttyS0",
    uart: "ns16550a",
    virtio_transport: VirtioTransport::Pci,
    uefi: &[
        UefiPaths {
            code: "/usr/share/qemu-efi-riscv64/RISCV_VIRT_CODE.fd",
            vars: "/usr/share/qemu-efi-riscv64/RISCV_VIRT_VARS.fd",
        },
        UefiPaths {
            code: "/usr/share/edk2/riscv/RISCV_VIRT_CODE.fd",
            vars: "/usr/share/edk2/riscv/RISCV_VIRT_VARS.fd",
        },
    ],
};

impl ArchProfile {
    /// The profile's machine with its default properties.
    pub fn machine(&self) -> Machine {
        self.machine_props
            .iter()
            .fold(Machine::new(self.machine), |m, (k, v)| m.prop(*k, *v))
    }

    /// The default CPU for an accelerator list: [`ArchProfile::hw_cpu`] when any of them is a
    /// hardware accelerator, else [`ArchProfile::tcg_cpu`]. `None` leaves `-cpu` out.
    pub fn cpu_for(&self, accels: &[Accel]) -> Option<Cpu> {
        let model = if accels.iter().any(Accel::is_hardware) {
            self.hw_cpu
        } else {
            self.tcg_cpu
        };
        model.map(Cpu::new)
    }

    /// A command line for the profile's binary, machine, default CPU for `accels`, accelerators
    /// and virtio transport.
    ///
    /// ```
    /// use qemu_cmdline::{Accel, Arch};
    /// let mut cmd = Arch::Aarch64.profile().command_line(&[Accel::Tcg]);
    /// cmd.paused();
    /// assert_eq!(
    ///     cmd.build().unwrap().to_string(),
    ///     "qemu-system-aarch64 -machine virt,gic-version=max -accel tcg -cpu cortex-a57 -S"
    /// );
    /// // x86_64 under TCG: a CPU with the x86-64-v2 features, not QEMU's default qemu64.
    /// let cmd = Arch::X86_64.profile().command_line(&[Accel::Tcg]);
    /// assert!(cmd.build().unwrap().to_string().ends_with("-accel tcg -cpu max"));
    /// ```
    pub fn command_line(&self, accels: &[Accel]) -> CommandLine {
        let mut cmd = CommandLine::new(self.binary);
        cmd.machine(self.machine())
            .accel_fallback(accels.iter().cloned())
            .virtio_transport(self.virtio_transport);
        if let Some(cpu) = self.cpu_for(accels) {
            cmd.cpu(cpu);
        }
        cmd
    }
}
