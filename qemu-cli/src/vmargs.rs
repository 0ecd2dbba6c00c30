//! The VM flags shared by `run`, `qmp` and `argv`, and the spec they produce: the JSON spec
//! file (or the embedded default VM) with the flags applied on top.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use clap::Args;
use qemu_cmdline::{Accel, Arch, Cpu, DiskSpec, Machine, PortForward, Size, Smp, VmSpec};
use qemu_process::cloudinit::CloudInitSpec;
use qemu_process::{AccelChoice, DiskLaunch, MachineConfig, VmLaunch};
use serde_json::{Map, Value};

use crate::exit::Failure;

/// The VM `run` starts when no spec is given: x86_64 on q35, firmware only, no disk. SeaBIOS
/// prints to the serial console because of `graphics=off`, tries to boot, and reports that
/// there is no bootable device. The CPU is QEMU's own `qemu64` model, which runs under KVM
/// everywhere, nested KVM included (where `host` and `max` can fail to start).
pub const DEFAULT_SPEC: &str = r#"{
  "name": "qemu-machine-default",
  "arch": "x86_64",
  "machine": {"type": "q35", "props": {"graphics": false}},
  "cpu": "qemu64",
  "memory": "128M"
}"#;

/// What describes the VM: a spec file and flags that override it.
#[derive(Args, Debug, Clone, Default, PartialEq)]
pub struct VmArgs {
    /// A JSON VM description (`-` reads standard input). Without one, the embedded default VM
    /// (x86_64, firmware only, no disk) is the base that the flags change.
    #[arg(value_name = "SPEC.json")]
    pub spec: Option<PathBuf>,

    /// Guest architecture: x86_64, aarch64 or riscv64.
    #[arg(long, value_name = "ARCH", help_heading = "VM")]
    pub arch: Option<String>,
    /// The QEMU binary (default qemu-system-ARCH from PATH).
    #[arg(long, value_name = "PATH", help_heading = "VM")]
    pub qemu: Option<PathBuf>,
    /// Machine type (q35, virt, ...).
    #[arg(long, value_name = "TYPE", help_heading = "VM")]
    pub machine: Option<String>,
    /// CPU model (max, host, ...).
    #[arg(long, value_name = "MODEL", help_heading = "VM")]
    pub cpu: Option<String>,
    /// Number of CPUs.
    #[arg(long, value_name = "N", help_heading = "VM")]
    pub smp: Option<u32>,
    /// RAM size (512M, 2G).
    #[arg(short = 'm', long, value_name = "SIZE", help_heading = "VM")]
    pub memory: Option<String>,
    /// Accelerator: auto (KVM when usable, else TCG), kvm, tcg, or a list tried in order
    /// (kvm,tcg). Without it, the spec's list; with none there either, auto, unless a
    /// --qemu-arg chooses one (-accel, -machine accel=, -enable-kvm).
    #[arg(long, value_name = "ACCEL", help_heading = "VM")]
    pub accel: Option<String>,
    /// The VM's name.
    #[arg(long, value_name = "NAME", help_heading = "VM")]
    pub name: Option<String>,
    /// A kernel to boot directly.
    #[arg(long, value_name = "PATH", help_heading = "Boot")]
    pub kernel: Option<PathBuf>,
    /// An initrd for --kernel.
    #[arg(long, value_name = "PATH", help_heading = "Boot")]
    pub initrd: Option<PathBuf>,
    /// The kernel command line.
    #[arg(
        long,
        value_name = "CMDLINE",
        help_heading = "Boot",
        allow_hyphen_values = true
    )]
    pub append: Option<String>,
    /// A BIOS image.
    #[arg(long, value_name = "PATH", help_heading = "Boot")]
    pub bios: Option<PathBuf>,
    /// Boot UEFI firmware (found in the architecture's usual install locations).
    #[arg(long, help_heading = "Boot")]
    pub uefi: bool,
    /// Exit QEMU instead of rebooting the guest.
    #[arg(long, help_heading = "Boot")]
    pub no_reboot: bool,
    /// A disk: PATH, or key=value pairs like QEMU's (a comma in a value is written ,,):
    /// PATH[,format=qcow2][,size=8G][,flash=IMAGE][,if=virtio|scsi|nvme|ide][,readonly]
    /// [,snapshot][,id=NAME][,cache=MODE][,bootindex=N][,serial=S]. Repeatable.
    // This comment is the --help text, where brackets are option syntax, not rustdoc links.
    #[allow(rustdoc::broken_intra_doc_links)]
    #[arg(long, value_name = "DISK", help_heading = "Storage")]
    pub disk: Vec<String>,
    /// Grow the disk named root to this size at launch (never shrinks).
    #[arg(long, value_name = "SIZE", help_heading = "Storage")]
    pub disk_size: Option<String>,
    /// Add Jumpstarter's default drives: a disk `root` and UEFI firmware.
    #[arg(long, help_heading = "Storage")]
    pub default_partitions: bool,
    /// Forward a host port to the guest (user networking):
    /// [NAME=][tcp:|udp:][HOSTADDR:]HOSTPORT:GUESTPORT. It listens on 127.0.0.1 unless
    /// HOSTADDR is given (0.0.0.0: every address, reachable from the network); host port 0
    /// picks a free port. What listens where is printed. Repeatable.
    // The --help text: brackets are option syntax, not rustdoc links.
    #[allow(rustdoc::broken_intra_doc_links)]
    #[arg(long = "forward", value_name = "FORWARD", help_heading = "Network")]
    pub forwards: Vec<String>,
    /// A VNC server on a unix socket (its path is printed).
    #[arg(long, help_heading = "Display")]
    pub vnc: bool,
    /// cloud-init: create this user (NoCloud seed disk).
    #[arg(long, value_name = "NAME", help_heading = "cloud-init")]
    pub user: Option<String>,
    /// cloud-init: the user's password.
    #[arg(long, value_name = "PASSWORD", help_heading = "cloud-init")]
    pub password: Option<String>,
    /// cloud-init: an SSH public key for the user (repeatable).
    #[arg(long = "ssh-key", value_name = "KEY", help_heading = "cloud-init")]
    pub ssh_keys: Vec<String>,
    /// cloud-init: the guest's host name.
    #[arg(long, value_name = "NAME", help_heading = "cloud-init")]
    pub hostname: Option<String>,
    /// A raw QEMU argument appended to the command line (repeatable: --qemu-arg=-device
    /// --qemu-arg=virtio-rng-pci).
    #[arg(
        long = "qemu-arg",
        value_name = "ARG",
        help_heading = "VM",
        allow_hyphen_values = true
    )]
    pub qemu_args: Vec<String>,
}

/// The accelerator choice of the flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccelFlag {
    /// Not given: the spec's list, or auto when the spec has none.
    Unset,
    /// `auto`: KVM when usable for the guest, else TCG.
    Auto,
    /// An explicit list, tried in order.
    List(Vec<Accel>),
}

impl VmArgs {
    /// The accelerator flag, parsed.
    pub fn accel_choice(&self) -> Result<AccelFlag, Failure> {
        let Some(text) = &self.accel else {
            return Ok(AccelFlag::Unset);
        };
        if text.trim() == "auto" {
            return Ok(AccelFlag::Auto);
        }
        let list = text
            .split(',')
            .map(|a| a.trim().parse::<Accel>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Failure::usage(format!("--accel {text}: {e}")))?;
        if list.is_empty() {
            return Err(Failure::usage("--accel: give auto, kvm, tcg or a list"));
        }
        Ok(AccelFlag::List(list))
    }

    /// The launch description: the VM (the file's, or the default VM) with the flags applied.
    pub fn to_config(&self) -> Result<MachineConfig, Failure> {
        let vm = self.to_launch()?;
        let mut config = MachineConfig::for_vm(vm);
        if self.accel_choice()? == AccelFlag::Auto {
            config.accel(AccelChoice::Auto);
        }
        Ok(config)
    }

    /// The VM: the file's (or the default VM's) with the flags applied.
    pub fn to_launch(&self) -> Result<VmLaunch, Failure> {
        let (text, origin) = match &self.spec {
            None => (DEFAULT_SPEC.to_owned(), "the default VM".to_owned()),
            Some(path) if path.as_os_str() == "-" => {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                    .map_err(|e| Failure::failed(format!("reading the spec from stdin: {e}")))?;
                (text, "the spec on stdin".to_owned())
            }
            Some(path) => (
                std::fs::read_to_string(path)
                    .map_err(|e| Failure::usage(format!("cannot read {}: {e}", path.display())))?,
                path.display().to_string(),
            ),
        };
        // A description is one JSON object; say so plainly for anything else that parses.
        if let Ok(value) = serde_json::from_str::<Value>(&text) {
            let kind = match value {
                Value::Object(_) => None,
                Value::Array(_) => Some("an array"),
                Value::String(_) => Some("a string"),
                Value::Number(_) => Some("a number"),
                Value::Bool(_) => Some("a boolean"),
                Value::Null => Some("null"),
            };
            if let Some(kind) = kind {
                return Err(Failure::usage(format!(
                    "{origin}: a VM description is a JSON object ({{\"memory\": \"1G\", ...}}), \
                     not {kind}"
                )));
            }
        }
        let mut vm =
            VmLaunch::from_json(&text).map_err(|e| Failure::usage(format!("{origin}: {e}")))?;
        self.apply(&mut vm)?;
        Ok(vm)
    }

    fn apply(&self, vm: &mut VmLaunch) -> Result<(), Failure> {
        self.apply_spec(&mut vm.spec)?;
        for d in &self.disk {
            let (disk, launch) = parse_disk(d)?;
            let index = vm.spec.disks.len();
            vm.spec.disks.push(disk);
            if launch != DiskLaunch::default() {
                vm.disks.resize(index + 1, DiskLaunch::default());
                vm.disks[index] = launch;
            }
        }
        for f in &self.forwards {
            vm.spec
                .forward(parse_forward(f)?)
                .map_err(|e| Failure::usage(format!("--forward {f}: {e}")))?;
        }
        if let Some(s) = &self.disk_size {
            vm.disk_size = Some(parse_size("--disk-size", s)?);
        }
        if self.default_partitions {
            vm.default_partitions = true;
        }
        if self.vnc {
            vm.vnc = true;
        }
        if self.user.is_some()
            || self.password.is_some()
            || !self.ssh_keys.is_empty()
            || self.hostname.is_some()
        {
            let ci = vm.cloud_init.get_or_insert_with(CloudInitSpec::default);
            if let Some(u) = &self.user {
                ci.username = Some(u.clone());
            }
            if let Some(p) = &self.password {
                ci.password = Some(p.clone());
            }
            ci.ssh_authorized_keys.extend(self.ssh_keys.iter().cloned());
            if let Some(h) = &self.hostname {
                ci.hostname = Some(h.clone());
            }
        }
        Ok(())
    }

    /// The flags that are the VM's hardware.
    fn apply_spec(&self, spec: &mut VmSpec) -> Result<(), Failure> {
        if let Some(arch) = &self.arch {
            spec.arch =
                serde_json::from_value::<Arch>(Value::String(arch.clone())).map_err(|_| {
                    Failure::usage(format!(
                        "--arch {arch}: unknown architecture (x86_64, aarch64 or riscv64)"
                    ))
                })?;
            if self.machine.is_none() && self.spec.is_none() {
                // The default VM's board and CPU are x86's; another architecture gets its own.
                spec.machine = None;
                spec.cpu = None;
            }
        }
        if let Some(qemu) = &self.qemu {
            spec.binary = Some(qemu.clone());
        }
        if let Some(machine) = &self.machine {
            spec.machine = Some(Machine::new(machine));
            if machine == "none" && self.spec.is_none() && self.cpu.is_none() {
                // `none` has no CPU: the default VM's x86 model would make QEMU refuse.
                spec.cpu = None;
            }
        }
        if let Some(cpu) = &self.cpu {
            spec.cpu = Some(Cpu::new(cpu));
        }
        if let Some(n) = self.smp {
            if n == 0 {
                return Err(Failure::usage("--smp 0: a VM needs at least one CPU"));
            }
            spec.smp = Some(Smp::new(n));
        }
        if let Some(m) = &self.memory {
            spec.memory = Some(parse_size("--memory", m)?);
        }
        match self.accel_choice()? {
            AccelFlag::Unset => {}
            AccelFlag::Auto => spec.accel.clear(),
            AccelFlag::List(list) => spec.accel = list,
        }
        if let Some(name) = &self.name {
            spec.name = Some(name.clone());
        }
        if let Some(k) = &self.kernel {
            spec.kernel = Some(k.clone());
        }
        if let Some(i) = &self.initrd {
            spec.initrd = Some(i.clone());
        }
        if let Some(a) = &self.append {
            spec.append = Some(a.clone());
        }
        if let Some(b) = &self.bios {
            spec.bios = Some(b.clone());
        }
        if self.uefi && spec.uefi.is_none() {
            spec.uefi = Some(Default::default());
        }
        if self.no_reboot {
            spec.no_reboot = true;
        }
        spec.extra_args.extend(self.qemu_args.iter().cloned());
        Ok(())
    }
}

fn parse_size(flag: &str, text: &str) -> Result<Size, Failure> {
    text.parse::<Size>()
        .map_err(|e| Failure::usage(format!("{flag} {text}: {e}")))
}

/// Splits `a=1,b=2` at single commas (`,,` is a literal comma), like QEMU.
fn split_keyval(text: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ',' {
            if chars.peek() == Some(&',') {
                chars.next();
                parts.last_mut().expect("never empty").push(',');
            } else {
                parts.push(String::new());
            }
        } else {
            parts.last_mut().expect("never empty").push(c);
        }
    }
    parts
}

/// `--disk`: a path, or QEMU-style `key=value` pairs whose first item may be the bare path:
/// the disk, and what the launcher does for it (`size`, `flash_from`).
pub fn parse_disk(text: &str) -> Result<(DiskSpec, DiskLaunch), Failure> {
    let bad = |msg: String| Failure::usage(format!("--disk {text}: {msg}"));
    let mut map = Map::new();
    for (i, part) in split_keyval(text).into_iter().enumerate() {
        let (key, value) = match part.split_once('=') {
            Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
            None if i == 0 => ("path".to_owned(), Some(part.clone())),
            None => (part.clone(), None),
        };
        let field = match key.as_str() {
            "path" | "file" => "path",
            "id" | "name" => "id",
            "format" | "fmt" => "format",
            "size" => "size",
            "flash" | "flash_from" | "flash-from" => "flash_from",
            "if" | "interface" => "interface",
            "protocol" => "protocol",
            "scsi_controller" | "scsi-controller" => "scsi_controller",
            "readonly" | "read-only" | "read_only" | "ro" => "read_only",
            "snapshot" => "snapshot",
            "cache" => "cache",
            "discard" => "discard",
            "aio" => "aio",
            "bootindex" => "bootindex",
            "serial" => "serial",
            "" => return Err(bad("an empty item (a literal comma is written ,,)".into())),
            other => return Err(bad(format!("unknown key {other:?}"))),
        };
        let json = match (field, value) {
            ("read_only" | "snapshot", None) => Value::Bool(true),
            ("read_only" | "snapshot", Some(v)) => Value::Bool(
                parse_bool(&v).ok_or_else(|| bad(format!("{key}={v}: expected on or off")))?,
            ),
            ("bootindex", Some(v)) => Value::from(
                v.parse::<u32>()
                    .map_err(|_| bad(format!("bootindex={v}: expected a number")))?,
            ),
            (_, Some(v)) => Value::String(v),
            (_, None) => return Err(bad(format!("{key} needs a value ({key}=...)"))),
        };
        if map.insert(field.to_owned(), json).is_some() {
            return Err(bad(format!("{field} is given twice")));
        }
    }
    let mut launch = Map::new();
    for key in ["size", "flash_from"] {
        if let Some(v) = map.remove(key) {
            launch.insert(key.to_owned(), v);
        }
    }
    let disk = serde_json::from_value(Value::Object(map)).map_err(|e| bad(e.to_string()))?;
    let launch = serde_json::from_value(Value::Object(launch)).map_err(|e| bad(e.to_string()))?;
    Ok((disk, launch))
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "on" | "yes" | "true" | "1" => Some(true),
        "off" | "no" | "false" | "0" => Some(false),
        _ => None,
    }
}

/// `--forward [NAME=][tcp:|udp:][HOSTADDR:]HOSTPORT:GUESTPORT`.
pub fn parse_forward(text: &str) -> Result<PortForward, Failure> {
    let bad = |msg: &str| {
        Failure::usage(format!(
            "--forward {text}: {msg} (expected [NAME=][tcp:|udp:][HOSTADDR:]HOSTPORT:GUESTPORT, \
             e.g. ssh=2222:22 or 0:80)"
        ))
    };
    let (name, rest) = match text.split_once('=') {
        Some((n, r)) if !n.is_empty() => (Some(n), r),
        Some(_) => return Err(bad("an empty name")),
        None => (None, text),
    };
    let mut parts: Vec<&str> = rest.split(':').collect();
    let udp = match parts.first() {
        Some(&"udp") => {
            parts.remove(0);
            true
        }
        Some(&"tcp") => {
            parts.remove(0);
            false
        }
        _ => false,
    };
    let (host_addr, host_port, guest_port) = match parts.as_slice() {
        [h, g] => (None, *h, *g),
        [a, h, g] => (
            Some(
                a.parse::<Ipv4Addr>()
                    .map_err(|_| bad(&format!("{a:?} is not an IPv4 address")))?,
            ),
            *h,
            *g,
        ),
        _ => return Err(bad("wrong number of parts")),
    };
    let host_port: u16 = host_port.parse().map_err(|_| {
        bad(&format!(
            "host port {host_port:?} is not a number 0..=65535"
        ))
    })?;
    let guest_port: u16 = guest_port.parse().ok().filter(|p| *p != 0).ok_or_else(|| {
        bad(&format!(
            "guest port {guest_port:?} is not a number 1..=65535"
        ))
    })?;
    let mut f = if udp {
        PortForward::udp(host_port, guest_port)
    } else {
        PortForward::tcp(host_port, guest_port)
    };
    f.host_addr = host_addr;
    f.name = name.map(str::to_owned);
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use qemu_cmdline::{DiskInterface, Format, Proto};

    #[test]
    fn default_spec_is_firmware_only_q35_with_serial_firmware_output() {
        let spec = VmArgs::default().to_launch().unwrap().spec;
        assert_eq!(spec.arch, Arch::X86_64);
        assert!(spec.disks.is_empty() && spec.kernel.is_none());
        let argv = spec.to_argv().unwrap().to_string();
        assert!(argv.contains("-machine q35,graphics="), "{argv}");
        assert!(
            argv.contains("-m 128M") || argv.contains("-m 134217728"),
            "{argv}"
        );
    }

    #[test]
    fn machine_none_drops_the_default_cpu() {
        let none = VmArgs {
            machine: Some("none".into()),
            ..VmArgs::default()
        };
        let spec = none.to_launch().unwrap().spec;
        assert_eq!(spec.cpu, None);
        let with_cpu = VmArgs {
            machine: Some("none".into()),
            cpu: Some("max".into()),
            ..VmArgs::default()
        };
        assert!(
            with_cpu.to_launch().unwrap().spec.cpu.is_some(),
            "asked for"
        );
        let pc = VmArgs {
            machine: Some("pc".into()),
            ..VmArgs::default()
        };
        assert!(pc.to_launch().unwrap().spec.cpu.is_some());
    }

    #[test]
    fn flags_override_the_base() {
        let args = VmArgs {
            memory: Some("1G".into()),
            smp: Some(2),
            accel: Some("kvm,tcg".into()),
            kernel: Some("/k".into()),
            append: Some("console=ttyS0".into()),
            disk: vec!["/vm/a,,b.qcow2,format=qcow2,if=scsi,readonly".into()],
            forwards: vec!["ssh=127.0.0.1:0:22".into()],
            user: Some("me".into()),
            password: Some("pw".into()),
            qemu_args: vec!["-device".into(), "virtio-rng-pci".into()],
            ..VmArgs::default()
        };
        let vm = args.to_launch().unwrap();
        let spec = &vm.spec;
        assert_eq!(spec.memory, Some(Size::gib(1)));
        assert_eq!(spec.accel, vec![Accel::Kvm, Accel::Tcg]);
        assert_eq!(spec.kernel.as_deref(), Some(std::path::Path::new("/k")));
        let d = &spec.disks[0];
        assert_eq!(
            d.path.as_deref(),
            Some(std::path::Path::new("/vm/a,b.qcow2"))
        );
        assert_eq!(d.format, Some(Format::Qcow2));
        assert_eq!(d.interface, DiskInterface::Scsi);
        assert!(d.read_only);
        assert_eq!(spec.forwards()[0].1.host_port, 0);
        assert_eq!(spec.forwards()[0].1.name.as_deref(), Some("ssh"));
        let ci = vm.cloud_init.as_ref().unwrap();
        assert_eq!(ci.username.as_deref(), Some("me"));
        assert_eq!(spec.extra_args, ["-device", "virtio-rng-pci"]);
    }

    #[test]
    fn accel_auto_and_errors() {
        let auto = VmArgs {
            accel: Some("auto".into()),
            ..VmArgs::default()
        };
        assert_eq!(auto.accel_choice().unwrap(), AccelFlag::Auto);
        let bad = VmArgs {
            accel: Some("kvm,".into()),
            ..VmArgs::default()
        };
        assert_eq!(bad.to_launch().unwrap_err().code, crate::exit::USAGE);
        let arch = VmArgs {
            arch: Some("sparc".into()),
            ..VmArgs::default()
        };
        let e = arch.to_launch().unwrap_err();
        assert!(e.message.contains("--arch sparc"), "{}", e.message);
    }

    #[test]
    fn missing_or_invalid_spec_file() {
        let missing = VmArgs {
            spec: Some("/no/such/spec.json".into()),
            ..VmArgs::default()
        };
        let e = missing.to_launch().unwrap_err();
        assert_eq!(e.code, crate::exit::USAGE);
        assert!(e.message.contains("/no/such/spec.json"), "{}", e.message);
        let dir = std::env::temp_dir().join(format!("qm-cli-spec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bad.json");
        std::fs::write(&file, r#"{"memroy": "1G"}"#).unwrap();
        let bad = VmArgs {
            spec: Some(file.clone()),
            ..VmArgs::default()
        };
        let e = bad.to_launch().unwrap_err();
        assert_eq!(e.code, crate::exit::USAGE);
        assert!(e.message.contains("memroy"), "{}", e.message);
        for (doc, kind) in [
            ("[{\"memory\": \"1G\"}]", "an array"),
            ("\"vm\"", "a string"),
            ("3", "a number"),
        ] {
            std::fs::write(&file, doc).unwrap();
            let e = bad.to_launch().unwrap_err();
            assert_eq!(e.code, crate::exit::USAGE);
            assert!(
                e.message.ends_with(&format!(
                    "a VM description is a JSON object ({{\"memory\": \"1G\", ...}}), not {kind}"
                )),
                "{}",
                e.message
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn disks() {
        let (d, _) = parse_disk("/vm/root.img").unwrap();
        assert_eq!(
            d.path.as_deref(),
            Some(std::path::Path::new("/vm/root.img"))
        );
        assert_eq!(d.format, None);
        let (d, launch) =
            parse_disk("id=root,size=8G,flash=/img/debian.qcow2.xz,bootindex=1").unwrap();
        assert_eq!(d.id.as_deref(), Some("root"));
        assert_eq!(launch.size, Some(Size::gib(8)));
        assert!(launch.flash_from.is_some());
        assert_eq!(d.bootindex, Some(1));
        for (text, needle) in [
            ("a.img,colour=red", "unknown key \"colour\""),
            ("a.img,,", "a.img,,"),
            ("a.img,format", "format needs a value"),
            ("a.img,readonly=maybe", "expected on or off"),
            ("a.img,bootindex=x", "expected a number"),
            ("a.img,path=b.img", "path is given twice"),
            ("a.img,size=lots", "lots"),
            ("a.img,,b,", "empty item"),
        ] {
            match parse_disk(text) {
                Ok((d, _)) if needle == "a.img,," => {
                    assert_eq!(d.path.as_deref(), Some(std::path::Path::new("a.img,")))
                }
                Ok(d) => panic!("{text} parsed: {d:?}"),
                Err(e) => {
                    assert_eq!(e.code, crate::exit::USAGE);
                    assert!(e.message.contains(needle), "{text}: {}", e.message)
                }
            }
        }
    }

    #[test]
    fn forwards() {
        let f = parse_forward("2222:22").unwrap();
        assert_eq!((f.host_port, f.guest_port, f.proto), (2222, 22, Proto::Tcp));
        assert_eq!(f.listen_addr(), Ipv4Addr::LOCALHOST);
        let f = parse_forward("ssh=0.0.0.0:2222:22").unwrap();
        assert_eq!(f.host_addr, Some(Ipv4Addr::UNSPECIFIED));
        let f = parse_forward("dns=udp:127.0.0.1:5353:53").unwrap();
        assert_eq!(f.proto, Proto::Udp);
        assert_eq!(f.host_addr, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(f.name.as_deref(), Some("dns"));
        for (text, needle) in [
            ("22", "wrong number of parts"),
            ("x:22", "host port \"x\""),
            ("0:0", "guest port \"0\""),
            ("=1:2", "empty name"),
            ("localhost:1:2", "not an IPv4 address"),
            ("70000:22", "host port"),
        ] {
            let e = parse_forward(text).unwrap_err();
            assert!(e.message.contains(needle), "{text}: {}", e.message);
        }
    }
}
