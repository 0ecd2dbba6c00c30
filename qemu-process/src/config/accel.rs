//! [`AccelChoice`]: which accelerator a launch asks for, and how `auto` is resolved.

use std::ffi::OsStr;
#[cfg(test)]
use std::ffi::OsString;
use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The environment variable that overrides [`AccelChoice::Auto`] (values: `auto`, `kvm`, `tcg`, `none`).
///
/// An explicit choice in the config ([`AccelChoice::Kvm`], [`AccelChoice::Tcg`], [`AccelChoice::None`]) is never
/// overridden, and neither is an accelerator the arguments choose ([`args_choose_accel`]); the
/// variable exists so that a test suite can force TCG (or KVM) on every machine that leaves the
/// choice to the library.
pub const ACCEL_ENV: &str = "QEMU_MACHINE_ACCEL";

/// Which accelerator a launch asks QEMU for: a policy (`auto`, or none at all) or one
/// accelerator. (QEMU's accelerator names themselves are [`qemu_cmdline::Accel`].)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AccelChoice {
    /// KVM when `/dev/kvm` is usable and the guest architecture matches the host's, else TCG.
    /// Overridden by the [`ACCEL_ENV`] environment variable when it is set. Adds nothing when
    /// the arguments choose an accelerator themselves (`-accel`, `-machine accel=`,
    /// `-enable-kvm`; see [`args_choose_accel`]): the caller's choice wins.
    #[default]
    Auto,
    /// `-accel kvm`.
    Kvm,
    /// `-accel tcg`.
    Tcg,
    /// Add no `-accel` argument: the caller's arguments decide.
    None,
}

impl AccelChoice {
    /// Parses `auto`, `kvm`, `tcg` or `none` (case-insensitive).
    pub fn parse(s: &str) -> Option<AccelChoice> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Some(AccelChoice::Auto),
            "kvm" => Some(AccelChoice::Kvm),
            "tcg" => Some(AccelChoice::Tcg),
            "none" => Some(AccelChoice::None),
            _ => None,
        }
    }
}

/// Resolves [`AccelChoice::Auto`] into a concrete choice: the [`ACCEL_ENV`] override first, then KVM
/// when `/dev/kvm` is usable and `binary` emulates the host architecture, else TCG.
pub fn resolve_accel(accel: AccelChoice, binary: &Path) -> AccelChoice {
    if accel != AccelChoice::Auto {
        return accel;
    }
    if let Some(v) = std::env::var_os(ACCEL_ENV) {
        match v.to_str().and_then(AccelChoice::parse) {
            Some(AccelChoice::Auto) | None => {
                if !v.is_empty() {
                    log::warn!("ignoring {ACCEL_ENV}={v:?} (expected auto, kvm, tcg or none)");
                }
            }
            Some(forced) => return forced,
        }
    }
    if guest_matches_host(binary) && crate::sys::kvm_usable() {
        AccelChoice::Kvm
    } else {
        AccelChoice::Tcg
    }
}

/// Whether `args` (QEMU arguments, without the program) choose an accelerator themselves, in
/// which case [`AccelChoice::Auto`] adds none: the caller's choice wins.
///
/// Recognised, as QEMU reads its argv (one or two leading dashes; an option's argument is the
/// next element, whatever it looks like):
/// - `-accel NAME[,PROP=VALUE...]` (any argument, `help` included);
/// - `-enable-kvm` (QEMU's shorthand for `-machine accel=kvm`);
/// - `-machine`/`-M` with an `accel` key: `-machine accel=tcg`, `-M pc,accel=kvm:tcg`,
///   `-machine type=q35,accel=tcg`, values with `,,` (an escaped comma) skipped correctly,
///   and a JSON object (`-machine {"type": "none", "accel": "tcg"}`, for QEMUs that take one).
///
/// Not seen: a choice inside a `-readconfig` file. QEMU 7.2 has no `-no-kvm` (it was removed)
/// and no `-accel=NAME` form (an invalid option).
///
/// ```
/// use qemu_process::args_choose_accel;
/// assert!(args_choose_accel(&["-machine", "none,accel=tcg"]));
/// assert!(!args_choose_accel(&["-machine", "none", "-name", "-accel"]));
/// ```
pub fn args_choose_accel<S: AsRef<OsStr>>(args: &[S]) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_ref().as_bytes();
        i += 1;
        let Some(name) = option_name(arg) else {
            // A positional argument (QEMU takes it as a disk image).
            continue;
        };
        match name {
            b"accel" | b"enable-kvm" => return true,
            b"machine" | b"M" => {
                if let Some(value) = args.get(i) {
                    if machine_opts_choose_accel(value.as_ref().as_bytes()) {
                        return true;
                    }
                }
                i += 1;
            }
            other
                if OPTIONS_WITH_ARGUMENT
                    .split_ascii_whitespace()
                    .any(|o| o.as_bytes() == other) =>
            {
                i += 1
            }
            _ => {}
        }
    }
    false
}

/// The name of an option argument (`-accel` and `--accel` are both `accel`), or `None` for a
/// positional one.
fn option_name(arg: &[u8]) -> Option<&[u8]> {
    let rest = arg.strip_prefix(b"-")?;
    if rest.is_empty() {
        return None;
    }
    Some(rest.strip_prefix(b"-").unwrap_or(rest))
}

/// Whether a `-machine` argument has an `accel` key. QEMU 7.2 parses it as a key-value list
/// whose first element may be the bare type: the type runs to the first `=` or `,`, and a
/// value after `KEY=` runs to the first single comma (`,,` is a literal comma).
fn machine_opts_choose_accel(value: &[u8]) -> bool {
    if value.first() == Some(&b'{') {
        return serde_json::from_slice::<serde_json::Value>(value)
            .ok()
            .and_then(|v| v.as_object().map(|o| o.contains_key("accel")))
            .unwrap_or(false);
    }
    let mut s = value;
    let mut first = true;
    while !s.is_empty() {
        let key_len = s
            .iter()
            .position(|&b| b == b'=' || b == b',')
            .unwrap_or(s.len());
        if s.get(key_len) != Some(&b'=') {
            // A bare element: the implied type (first only) or `help`; anything else is an
            // error QEMU reports.
            if !first && key_len != 0 && !matches!(&s[..key_len], b"help" | b"?") {
                return false;
            }
            s = s.get(key_len + 1..).unwrap_or_default();
            first = false;
            continue;
        }
        if &s[..key_len] == b"accel" {
            return true;
        }
        // Skip the value: up to a single comma.
        let mut j = key_len + 1;
        loop {
            match s.get(j) {
                None => break,
                Some(b',') if s.get(j + 1) == Some(&b',') => j += 2,
                Some(b',') => break,
                Some(_) => j += 1,
            }
        }
        s = s.get(j + 1..).unwrap_or_default();
        first = false;
    }
    false
}

/// QEMU options that take an argument (QEMU 7.2's table, checked against the binary, plus those
/// of older and newer releases), so that an argument is never mistaken for an option.
const OPTIONS_WITH_ARGUMENT: &str = "\
    D L M accel acpitable action add-fd append audio audiodev balloon bios blockdev boot bt \
    cdrom chardev chroot clock compat cpu d debugcon device dfilter display drive dtb \
    dump-vmstate echr fda fdb fsdev fw_cfg g gdb global hda hdb hdc hdd icount incoming \
    initrd iscsi k kernel loadvm m machine mem-path mon monitor msg mtdblock name net \
    netdev nic numa object option-rom overcommit parallel pflash pidfile plugin prom-env \
    qmp qmp-pretty qtest qtest-log readconfig realtime rotate rtc run-with runas sandbox sd \
    seed semihosting-config serial set smbios smp soundhw spice tb-size tpmdev trace \
    usbdevice uuid vga virtfs vnc watchdog watchdog-action writeconfig xen-domid";

/// Whether the binary's name says it emulates this host's architecture (`qemu-system-<arch>`,
/// or `qemu-kvm`).
pub(crate) fn guest_matches_host(binary: &Path) -> bool {
    let Some(name) = binary.file_name().and_then(OsStr::to_str) else {
        return false;
    };
    if name == "qemu-kvm" {
        return true;
    }
    let Some(arch) = name.strip_prefix("qemu-system-") else {
        return false;
    };
    let host = std::env::consts::ARCH;
    match host {
        "x86_64" => arch == "x86_64" || arch == "i386",
        "aarch64" => arch == "aarch64" || arch == "arm",
        "powerpc64" => arch == "ppc64",
        "riscv64" => arch == "riscv64",
        "s390x" => arch == "s390x",
        other => arch == other,
    }
}

impl AccelChoice {
    /// The name: `auto`, `kvm`, `tcg` or `none`.
    pub fn name(self) -> &'static str {
        match self {
            AccelChoice::Auto => "auto",
            AccelChoice::Kvm => "kvm",
            AccelChoice::Tcg => "tcg",
            AccelChoice::None => "none",
        }
    }

    /// The QEMU accelerator this choice stands for, if it names one.
    pub fn qemu_accel(self) -> Option<qemu_cmdline::Accel> {
        match self {
            AccelChoice::Kvm => Some(qemu_cmdline::Accel::Kvm),
            AccelChoice::Tcg => Some(qemu_cmdline::Accel::Tcg),
            AccelChoice::Auto | AccelChoice::None => None,
        }
    }
}

impl Serialize for AccelChoice {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for AccelChoice {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<AccelChoice, D::Error> {
        let text = String::deserialize(d)?;
        AccelChoice::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!("accel {text:?}: expected auto, kvm, tcg or none"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_accel_names() {
        assert_eq!(AccelChoice::parse("KVM"), Some(AccelChoice::Kvm));
        assert_eq!(AccelChoice::parse(" tcg "), Some(AccelChoice::Tcg));
        assert_eq!(AccelChoice::parse("none"), Some(AccelChoice::None));
        assert_eq!(AccelChoice::parse("auto"), Some(AccelChoice::Auto));
        assert_eq!(AccelChoice::parse("hvf"), None);
    }

    #[test]
    fn explicit_choice_is_never_overridden() {
        let bin = Path::new("/usr/bin/qemu-system-x86_64");
        assert_eq!(resolve_accel(AccelChoice::Tcg, bin), AccelChoice::Tcg);
        assert_eq!(resolve_accel(AccelChoice::Kvm, bin), AccelChoice::Kvm);
        assert_eq!(resolve_accel(AccelChoice::None, bin), AccelChoice::None);
    }

    #[test]
    fn auto_never_picks_kvm_for_a_foreign_guest() {
        // Unless the environment forces a choice, a foreign architecture gets TCG.
        if std::env::var_os(ACCEL_ENV).is_none() {
            let foreign = if std::env::consts::ARCH == "aarch64" {
                "qemu-system-x86_64"
            } else {
                "qemu-system-aarch64"
            };
            assert_eq!(
                resolve_accel(AccelChoice::Auto, Path::new(foreign)),
                AccelChoice::Tcg
            );
        }
    }

    #[test]
    fn accel_options_are_recognised_in_every_spelling() {
        let chooses: &[&[&str]] = &[
            &["-accel", "tcg"],
            &["--accel", "tcg"],
            &["-accel", "kvm,kernel-irqchip=split"],
            &["-accel", "help"],
            &["-S", "-accel", "tcg"],
            &["-enable-kvm"],
            &["--enable-kvm"],
            &["-machine", "accel=tcg"],
            &["-machine", "none,accel=tcg"],
            &["--machine", "none,accel=tcg"],
            &["-M", "pc,accel=kvm:tcg"],
            &["--M", "pc,accel=kvm:tcg"],
            &["-machine", "type=q35,accel=tcg"],
            &["-machine", "accel=tcg,type=none"],
            &["-machine", "q35,smm=on,accel=tcg"],
            &["-machine", "q35,memory-backend=a,,b,accel=tcg"],
            &["-machine", "none,help,accel=tcg"],
            &["-machine", "q35", "-machine", "accel=tcg"],
            &["-machine", r#"{"type": "none", "accel": "tcg"}"#],
            // Positional arguments (disk images) take nothing with them.
            &["disk.img", "-accel", "tcg"],
        ];
        for args in chooses {
            assert!(args_choose_accel(args), "{args:?}");
        }
        let os: Vec<OsString> = ["-M", "none,accel=tcg"]
            .iter()
            .map(OsString::from)
            .collect();
        assert!(args_choose_accel(&os));
    }

    #[test]
    fn arguments_that_only_look_like_accel_choices_are_not() {
        let leaves: &[&[&str]] = &[
            &[],
            &["-machine", "none", "-nodefaults"],
            &["-machine", "q35,smm=on"],
            // `,,` escapes the comma: the value is `a,accel=tcg`, no accel key.
            &["-machine", "q35,memory-backend=a,,accel=tcg"],
            &["-machine", "type=none,,accel=tcg"],
            // A key that only ends in accel, and a value that says accel.
            &["-machine", "q35,xaccel=tcg"],
            &["-machine", "q35,dumpdir=accel=tcg"],
            &["-machine", r#"{"type": "none"}"#],
            // Arguments of other options, whatever they look like.
            &["-name", "-accel"],
            &["-append", "-enable-kvm"],
            &["-device", "virtio-rng-pci,id=accel"],
            &["-append", "accel=kvm"],
            &["-object", "accel=tcg"],
            // Not options in QEMU 7.2.
            &["-accel=tcg"],
            &["-no-kvm"],
            &["---accel", "tcg"],
            &["accel", "tcg"],
            // -machine without its argument.
            &["-machine"],
        ];
        for args in leaves {
            assert!(!args_choose_accel(args), "{args:?}");
        }
    }

    #[test]
    fn host_architecture_matching() {
        let native = format!("qemu-system-{}", std::env::consts::ARCH);
        assert!(guest_matches_host(Path::new(&native)));
        assert!(guest_matches_host(Path::new("/usr/libexec/qemu-kvm")));
        assert!(!guest_matches_host(Path::new("qemu-system-s390x-not")));
        assert!(!guest_matches_host(Path::new("/usr/bin/qemu-img")));
    }
}
