//! The command line builder and the argv it produces.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::OsStrExt;

use crate::chardev::render_serial;
use crate::net::check_forwards;
use crate::render::{check_graph, check_values, push_args, Env, Grammar, Opt, Opts};
use crate::{
    shell_quote, Accel, AddFd, Blockdev, Chardev, Cpu, Device, Disk, DiskInterface, Display, Error,
    Firmware, FwCfg, IdKind, Machine, Monitor, Netdev, Nic, Object, Props, Sandbox, Size, Smbios,
    Smp, Vga, VirtioTransport,
};

/// A finished argv: the program and its arguments.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Argv {
    /// The program (`qemu-system-x86_64`, or a path).
    pub program: OsString,
    /// The arguments, without the program.
    pub args: Vec<OsString>,
}

impl Argv {
    /// The program followed by the arguments.
    pub fn to_vec(&self) -> Vec<OsString> {
        let mut v = Vec::with_capacity(self.args.len() + 1);
        v.push(self.program.clone());
        v.extend(self.args.iter().cloned());
        v
    }
}

impl fmt::Display for Argv {
    /// The argv quoted for a POSIX shell, for logs and error messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&shell_quote(&self.to_vec()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Disk(Disk),
    Blockdev(Blockdev),
    Device(Device),
    Object(Object),
    Nic(Nic),
    Netdev(Netdev),
    Chardev(Chardev),
    Serial(String),
    Monitor(Monitor),
    AddFd(AddFd),
    FwCfg(FwCfg),
    Smbios(Smbios),
    Raw(OsString),
}

/// A QEMU command line, built in the style of [`std::process::Command`] and checked as a whole
/// by [`CommandLine::build`].
///
/// Settings that QEMU takes once (machine, CPU, memory, firmware, kernel, ...) are written
/// first in a fixed order, whichever order they were set in; a second call replaces the first.
/// Everything else (disks, NICs, devices, chardevs, raw arguments, ...) is written in the order
/// it was added.
///
/// Nothing is checked until `build`, which reports every problem it finds: invalid keys, NUL
/// bytes, ids defined twice, references to ids nothing defines, backends used by two devices,
/// port forwards that clash, and settings QEMU would reject.
///
/// ```
/// use qemu_cmdline::{Accel, CommandLine, Disk, Format, Machine, Size};
/// let mut cmd = CommandLine::new("qemu-system-x86_64");
/// cmd.machine(Machine::new("q35"))
///     .accel(Accel::Tcg)
///     .memory(Size::mib(512))
///     .nodefaults()
///     .disk(Disk::new("root", "/var/lib/vm/my disk,1.qcow2").format(Format::Qcow2));
/// let argv = cmd.build().unwrap();
/// assert_eq!(
///     argv.to_string(),
///     "qemu-system-x86_64 -machine q35 -accel tcg -m 512M -nodefaults \
///      -blockdev 'driver=file,node-name=root-file,filename=/var/lib/vm/my disk,,1.qcow2' \
///      -blockdev driver=qcow2,node-name=root,file=root-file \
///      -device virtio-blk-pci,id=root,drive=root"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    program: OsString,
    json: bool,
    transport: VirtioTransport,
    machine: Option<Machine>,
    accel: Vec<Accel>,
    cpu: Option<Cpu>,
    smp: Option<Smp>,
    memory: Option<Size>,
    name: Option<String>,
    uuid: Option<String>,
    nodefaults: bool,
    no_reboot: bool,
    no_shutdown: bool,
    paused: bool,
    msg_timestamp: bool,
    sandbox: Option<Sandbox>,
    firmware: Option<Firmware>,
    kernel: Option<OsString>,
    initrd: Option<OsString>,
    append: Option<OsString>,
    dtb: Option<OsString>,
    display: Option<Display>,
    vga: Option<Vga>,
    items: Vec<Item>,
    external: Vec<(IdKind, String)>,
}

impl CommandLine {
    /// A command line for `program` with no arguments.
    pub fn new(program: impl AsRef<OsStr>) -> CommandLine {
        CommandLine {
            program: program.as_ref().to_os_string(),
            json: false,
            transport: VirtioTransport::Pci,
            machine: None,
            accel: Vec::new(),
            cpu: None,
            smp: None,
            memory: None,
            name: None,
            uuid: None,
            nodefaults: false,
            no_reboot: false,
            no_shutdown: false,
            paused: false,
            msg_timestamp: false,
            sandbox: None,
            firmware: None,
            kernel: None,
            initrd: None,
            append: None,
            dtb: None,
            display: None,
            vga: None,
            items: Vec::new(),
            external: Vec::new(),
        }
    }

    /// The program.
    pub fn get_program(&self) -> &OsStr {
        &self.program
    }

    /// Writes `-blockdev`, `-object`, `-netdev` and `-device` in JSON syntax (QEMU 6.2 and
    /// later), which needs no escaping. Values must then be valid UTF-8.
    pub fn json_syntax(&mut self, json: bool) -> &mut Self {
        self.json = json;
        self
    }
    /// How virtio disks and NICs are attached (default PCI).
    pub fn virtio_transport(&mut self, transport: VirtioTransport) -> &mut Self {
        self.transport = transport;
        self
    }
    /// The board: `-machine`.
    pub fn machine(&mut self, machine: Machine) -> &mut Self {
        self.machine = Some(machine);
        self
    }
    /// One accelerator: `-accel NAME`. Replaces earlier settings.
    pub fn accel(&mut self, accel: Accel) -> &mut Self {
        self.accel = vec![accel];
        self
    }
    /// Accelerators QEMU tries in order: `-accel kvm -accel tcg`. Replaces earlier settings.
    pub fn accel_fallback(&mut self, accels: impl IntoIterator<Item = Accel>) -> &mut Self {
        self.accel = accels.into_iter().collect();
        self
    }
    /// The CPU model: `-cpu`.
    pub fn cpu(&mut self, cpu: Cpu) -> &mut Self {
        self.cpu = Some(cpu);
        self
    }
    /// The CPU topology: `-smp`.
    pub fn smp(&mut self, smp: Smp) -> &mut Self {
        self.smp = Some(smp);
        self
    }
    /// The guest RAM: `-m`. At least 1 MiB.
    pub fn memory(&mut self, size: Size) -> &mut Self {
        self.memory = Some(size);
        self
    }
    /// The VM's name (window title, process name in logs): `-name guest=NAME`.
    pub fn name(&mut self, name: impl Into<String>) -> &mut Self {
        self.name = Some(name.into());
        self
    }
    /// The system UUID: `-uuid`, written `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
    pub fn uuid(&mut self, uuid: impl Into<String>) -> &mut Self {
        self.uuid = Some(uuid.into());
        self
    }
    /// `-nodefaults`: no default devices (VGA, NIC, serial, monitor, CD-ROM, ...).
    pub fn nodefaults(&mut self) -> &mut Self {
        self.nodefaults = true;
        self
    }
    /// `-no-reboot`: a guest reboot exits QEMU.
    pub fn no_reboot(&mut self) -> &mut Self {
        self.no_reboot = true;
        self
    }
    /// `-no-shutdown`: a guest power-off stops the VM instead of exiting QEMU.
    pub fn no_shutdown(&mut self) -> &mut Self {
        self.no_shutdown = true;
        self
    }
    /// `-S`: the CPUs start paused until QMP `cont`.
    pub fn paused(&mut self) -> &mut Self {
        self.paused = true;
        self
    }
    /// `-msg timestamp=on`: QEMU's own messages carry timestamps.
    pub fn msg_timestamp(&mut self) -> &mut Self {
        self.msg_timestamp = true;
        self
    }
    /// The seccomp sandbox: `-sandbox`.
    pub fn sandbox(&mut self, sandbox: Sandbox) -> &mut Self {
        self.sandbox = Some(sandbox);
        self
    }
    /// The firmware: `-bios` or UEFI pflash.
    pub fn firmware(&mut self, firmware: Firmware) -> &mut Self {
        self.firmware = Some(firmware);
        self
    }
    /// A BIOS image: `-bios PATH`.
    pub fn bios(&mut self, path: impl AsRef<OsStr>) -> &mut Self {
        self.firmware(Firmware::Bios(path.as_ref().into()))
    }
    /// UEFI from a code image and this VM's variable store. Needs a machine type.
    pub fn uefi(&mut self, code: impl AsRef<OsStr>, vars: impl AsRef<OsStr>) -> &mut Self {
        self.firmware(Firmware::Uefi {
            code: code.as_ref().into(),
            vars: vars.as_ref().into(),
        })
    }
    /// Direct kernel boot: `-kernel PATH`.
    pub fn kernel(&mut self, path: impl AsRef<OsStr>) -> &mut Self {
        self.kernel = Some(path.as_ref().into());
        self
    }
    /// The initial ramdisk for direct kernel boot: `-initrd PATH`.
    pub fn initrd(&mut self, path: impl AsRef<OsStr>) -> &mut Self {
        self.initrd = Some(path.as_ref().into());
        self
    }
    /// The kernel command line for direct kernel boot: `-append TEXT`.
    pub fn append(&mut self, cmdline: impl AsRef<OsStr>) -> &mut Self {
        self.append = Some(cmdline.as_ref().into());
        self
    }
    /// The device tree for direct kernel boot: `-dtb PATH`.
    pub fn dtb(&mut self, path: impl AsRef<OsStr>) -> &mut Self {
        self.dtb = Some(path.as_ref().into());
        self
    }
    /// The display: `-display none` or a VNC server.
    pub fn display(&mut self, display: Display) -> &mut Self {
        self.display = Some(display);
        self
    }
    /// The VGA card: `-vga`.
    pub fn vga(&mut self, vga: Vga) -> &mut Self {
        self.vga = Some(vga);
        self
    }
    /// A disk: its `-blockdev` graph and `-device`.
    pub fn disk(&mut self, disk: Disk) -> &mut Self {
        self.items.push(Item::Disk(disk));
        self
    }
    /// A hand-written block node.
    pub fn blockdev(&mut self, blockdev: Blockdev) -> &mut Self {
        self.items.push(Item::Blockdev(blockdev));
        self
    }
    /// A device.
    pub fn device(&mut self, device: Device) -> &mut Self {
        self.items.push(Item::Device(device));
        self
    }
    /// A QOM object.
    pub fn object(&mut self, object: Object) -> &mut Self {
        self.items.push(Item::Object(object));
        self
    }
    /// A NIC and its backend.
    pub fn nic(&mut self, nic: Nic) -> &mut Self {
        self.items.push(Item::Nic(nic));
        self
    }
    /// A network backend without a NIC.
    pub fn netdev(&mut self, netdev: Netdev) -> &mut Self {
        self.items.push(Item::Netdev(netdev));
        self
    }
    /// A character device.
    pub fn chardev(&mut self, chardev: Chardev) -> &mut Self {
        self.items.push(Item::Chardev(chardev));
        self
    }
    /// A serial port on chardev `chardev`: `-serial chardev:ID`. The first one is the
    /// guest's first UART (ttyS0, ttyAMA0).
    pub fn serial(&mut self, chardev: impl Into<String>) -> &mut Self {
        self.items.push(Item::Serial(chardev.into()));
        self
    }
    /// A monitor: `-mon chardev=ID,mode=control`.
    pub fn monitor(&mut self, monitor: Monitor) -> &mut Self {
        self.items.push(Item::Monitor(monitor));
        self
    }
    /// A descriptor in an fd set: `-add-fd`.
    pub fn add_fd(&mut self, add_fd: AddFd) -> &mut Self {
        self.items.push(Item::AddFd(add_fd));
        self
    }
    /// A fw_cfg entry: `-fw_cfg`.
    pub fn fw_cfg(&mut self, fw_cfg: FwCfg) -> &mut Self {
        self.items.push(Item::FwCfg(fw_cfg));
        self
    }
    /// An SMBIOS table: `-smbios`.
    pub fn smbios(&mut self, smbios: Smbios) -> &mut Self {
        self.items.push(Item::Smbios(smbios));
        self
    }
    /// A raw argument, passed as it is, in order with the other items. Ids it defines are not
    /// known to the checks: declare them with [`CommandLine::external_id`].
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.items.push(Item::Raw(arg.as_ref().into()));
        self
    }
    /// Raw arguments; see [`CommandLine::arg`].
    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for a in args {
            self.arg(a);
        }
        self
    }
    /// Declares an id that exists without this command line defining it (a bus of an unknown
    /// machine type, an id defined in raw arguments), so that references to it are accepted.
    pub fn external_id(&mut self, kind: IdKind, id: impl Into<String>) -> &mut Self {
        self.external.push((kind, id.into()));
        self
    }

    /// Checks everything and writes the argv.
    pub fn build(&self) -> Result<Argv, Error> {
        let env = Env {
            json: self.json,
            transport: self.transport,
        };
        let mut errors = Vec::new();
        let mut opts: Vec<Opt> = Vec::new();
        let mut fw_opts: Vec<Opt> = Vec::new();
        let machine_extra = match &self.firmware {
            Some(fw) => fw.render(&mut fw_opts),
            None => Props::new(),
        };

        if let Some(m) = &self.machine {
            if m.props().get("accel").is_some() && !self.accel.is_empty() {
                errors.push(Error::invalid(
                    "-machine accel",
                    "QEMU rejects -machine accel= together with -accel: use one of them",
                ));
            }
            let mut opt = m.render(&machine_extra);
            for (k, v) in machine_extra.iter() {
                if let Some(node) = v.as_os_str() {
                    opt = opt.uses(IdKind::Node, node.to_string_lossy(), k);
                }
            }
            opts.push(opt);
        } else if !machine_extra.is_empty() {
            errors.push(Error::invalid(
                "firmware",
                "UEFI pflash needs a machine type (q35, virt) to attach to",
            ));
        }
        for a in &self.accel {
            opts.push(a.render());
        }
        if let Some(cpu) = &self.cpu {
            push_result(cpu.render(), &mut opts, &mut errors);
        }
        if let Some(smp) = &self.smp {
            push_result(smp.render(), &mut opts, &mut errors);
        }
        if let Some(m) = self.memory {
            if m.bytes() < 1 << 20 {
                errors.push(Error::invalid(
                    "-m",
                    format!(
                        "{} bytes is too little memory: a plain number is bytes, write \"{}M\" for MiB",
                        m.bytes(),
                        m.bytes()
                    ),
                ));
            }
            opts.push(Opt::literal("-m", "-m", "size", m.to_qemu_memory()));
        }
        if let Some(name) = &self.name {
            opts.push(Opt::opts(
                "-name",
                "-name",
                Opts::new(Grammar::QemuOpts, false).implied("guest", name.as_str()),
            ));
        }
        if let Some(uuid) = &self.uuid {
            if !is_uuid(uuid) {
                errors.push(Error::invalid(
                    "-uuid",
                    format!("{uuid:?} is not a UUID like 12345678-9abc-def0-1234-56789abcdef0"),
                ));
            }
            opts.push(Opt::literal("-uuid", "-uuid", "uuid", uuid.as_str()));
        }
        for (on, flag) in [
            (self.nodefaults, "-nodefaults"),
            (self.no_reboot, "-no-reboot"),
            (self.no_shutdown, "-no-shutdown"),
            (self.paused, "-S"),
        ] {
            if on {
                opts.push(Opt::flag(flag, flag));
            }
        }
        if self.msg_timestamp {
            opts.push(Opt::opts(
                "-msg",
                "-msg",
                Opts::new(Grammar::QemuOpts, false).props(Props::new().with("timestamp", true)),
            ));
        }
        if let Some(s) = &self.sandbox {
            opts.push(s.render());
        }
        opts.append(&mut fw_opts);
        if let Some(k) = &self.kernel {
            opts.push(Opt::literal("-kernel", "-kernel", "path", k.clone()));
        }
        for (value, flag) in [
            (&self.initrd, "-initrd"),
            (&self.append, "-append"),
            (&self.dtb, "-dtb"),
        ] {
            if let Some(v) = value {
                if self.kernel.is_none() {
                    errors.push(Error::invalid(
                        flag,
                        "only allowed with direct kernel boot: set a kernel",
                    ));
                }
                opts.push(Opt::literal(flag, flag, "value", v.clone()));
            }
        }
        if let Some(d) = &self.display {
            push_result(d.render(), &mut opts, &mut errors);
        }
        if let Some(v) = self.vga {
            opts.push(v.render());
        }

        // SCSI disks need a controller; add the ones no -device defines, before the items.
        let device_ids: BTreeSet<String> = self
            .items
            .iter()
            .filter_map(|i| match i {
                Item::Device(d) => d.effective_id(),
                _ => None,
            })
            .collect();
        let mut controllers = BTreeSet::new();
        for item in &self.items {
            if let Item::Disk(d) = item {
                let c = d.scsi_controller_id();
                if d.disk_interface() == DiskInterface::Scsi
                    && !device_ids.contains(c)
                    && controllers.insert(c.to_string())
                {
                    opts.push(
                        Device::new(self.transport.device("virtio-scsi"))
                            .id(c)
                            .render(),
                    );
                }
            }
        }

        let mut raw: Vec<(usize, &OsString)> = Vec::new();
        let mut forwards = Vec::new();
        for (i, item) in self.items.iter().enumerate() {
            match item {
                Item::Disk(d) => {
                    if let Err(e) = d.render(&env, &mut opts) {
                        errors.push(e);
                    }
                }
                Item::Blockdev(b) => opts.push(b.render()),
                Item::Device(d) => opts.push(d.render()),
                Item::Object(o) => opts.push(o.render()),
                Item::Nic(n) => {
                    forwards.extend(n.netdev().forwards());
                    if let Err(e) = n.render(&env, &mut opts) {
                        errors.push(e);
                    }
                }
                Item::Netdev(n) => {
                    forwards.extend(n.forwards());
                    opts.push(n.render(&env));
                }
                Item::Chardev(c) => push_result(c.render(), &mut opts, &mut errors),
                Item::Serial(c) => opts.push(render_serial(c)),
                Item::Monitor(m) => opts.push(m.render()),
                Item::AddFd(a) => push_result(a.render(), &mut opts, &mut errors),
                Item::FwCfg(f) => push_result(f.render(), &mut opts, &mut errors),
                Item::Smbios(s) => opts.push(s.render()),
                Item::Raw(a) => {
                    // Keep the position: a placeholder flag is replaced when writing.
                    raw.push((opts.len(), a));
                    if a.as_bytes().contains(&0) {
                        errors.push(Error::NulByte {
                            what: format!("raw argument #{i}"),
                            field: "argument".into(),
                        });
                    }
                }
            }
        }
        if self.program.as_bytes().contains(&0) {
            errors.push(Error::NulByte {
                what: "the program".into(),
                field: "path".into(),
            });
        }
        for opt in &opts {
            check_values(opt, self.json, &mut errors);
        }
        check_graph(
            &opts,
            self.machine.as_ref().map(Machine::machine_type),
            &self.external,
            &mut errors,
        );
        check_forwards(&forwards, &mut errors);
        Error::collect(errors)?;

        let mut args = Vec::new();
        let mut raw = raw.into_iter().peekable();
        for (i, opt) in opts.iter().enumerate() {
            while let Some((_, a)) = raw.next_if(|(at, _)| *at == i) {
                args.push(a.clone());
            }
            push_args(opt, self.json, &mut args);
        }
        args.extend(raw.map(|(_, a)| a.clone()));
        Ok(Argv {
            program: self.program.clone(),
            args,
        })
    }
}

impl fmt::Display for CommandLine {
    /// The shell-quoted argv, or why it cannot be built.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.build() {
            Ok(argv) => write!(f, "{argv}"),
            Err(e) => write!(f, "<invalid command line: {e}>"),
        }
    }
}

fn push_result(r: Result<Opt, Error>, opts: &mut Vec<Opt>, errors: &mut Vec<Error>) {
    match r {
        Ok(o) => opts.push(o),
        Err(e) => errors.push(e),
    }
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}
