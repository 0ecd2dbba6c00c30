//! Jumpstarter's default partitions: the named drives a flasher writes (`root`, `bios`, the UEFI
//! code and variables), and the files they start from when a VM description names them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A default partition, by the drive name [`Machine::flash`](crate::Machine::flash) and
/// [`Machine::dump`](crate::Machine::dump) know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Partition {
    /// The root disk (drive `root`).
    Root,
    /// A BIOS image (drive `bios`); exclusive with UEFI.
    Bios,
    /// The UEFI code (drive `uefi_code`; Jumpstarter's `OVMF_CODE.fd`).
    UefiCode,
    /// The UEFI variable store (drive `uefi_vars`; Jumpstarter's `OVMF_VARS.fd`).
    UefiVars,
}

impl Partition {
    /// All of them.
    pub const ALL: [Partition; 4] = [
        Partition::Root,
        Partition::Bios,
        Partition::UefiCode,
        Partition::UefiVars,
    ];

    /// The drive name (`root`, `bios`, `uefi_code`, `uefi_vars`).
    pub fn drive_name(self) -> &'static str {
        match self {
            Partition::Root => "root",
            Partition::Bios => "bios",
            Partition::UefiCode => "uefi_code",
            Partition::UefiVars => "uefi_vars",
        }
    }

    /// The name Jumpstarter's QEMU driver uses (`root`, `bios`, `OVMF_CODE.fd`,
    /// `OVMF_VARS.fd`).
    pub fn jumpstarter_name(self) -> &'static str {
        match self {
            Partition::Root => "root",
            Partition::Bios => "bios",
            Partition::UefiCode => "OVMF_CODE.fd",
            Partition::UefiVars => "OVMF_VARS.fd",
        }
    }

    /// The partition called `name`: a drive name or Jumpstarter's name.
    pub fn from_name(name: &str) -> Option<Partition> {
        Partition::ALL
            .into_iter()
            .find(|p| p.drive_name() == name || p.jumpstarter_name() == name)
    }

    /// Every accepted name, for error messages.
    pub(crate) fn names() -> String {
        Partition::ALL
            .iter()
            .map(|p| {
                if p.drive_name() == p.jumpstarter_name() {
                    p.drive_name().to_owned()
                } else {
                    format!("{} ({})", p.drive_name(), p.jumpstarter_name())
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The files default partitions start from, by partition: the JSON map form of
/// `default_partitions` (`{"root": PATH, "bios": PATH, "OVMF_CODE.fd": PATH,
/// "OVMF_VARS.fd": PATH}`; the drive names `uefi_code` and `uefi_vars` are accepted too).
///
/// At launch, `root` becomes the VM's own qcow2 overlay on the file (in the VM's temp dir: the
/// file is never written; a compressed file is flashed into a new disk instead), `bios` and the
/// UEFI code are used read-only, and the variables are copied into the temp dir, like a UEFI
/// variable template.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PartitionFiles(pub BTreeMap<Partition, PathBuf>);

impl PartitionFiles {
    /// Whether no file is given.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The file of `partition`, if given.
    pub fn get(&self, partition: Partition) -> Option<&PathBuf> {
        self.0.get(&partition)
    }
}

impl Serialize for PartitionFiles {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let map: BTreeMap<&str, &PathBuf> =
            self.0.iter().map(|(p, f)| (p.drive_name(), f)).collect();
        map.serialize(s)
    }
}

impl<'de> Deserialize<'de> for PartitionFiles {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<PartitionFiles, D::Error> {
        let raw = BTreeMap::<String, PathBuf>::deserialize(d)?;
        let mut out = BTreeMap::new();
        for (name, path) in raw {
            let Some(p) = Partition::from_name(&name) else {
                return Err(D::Error::custom(format!(
                    "unknown partition {name:?} (partitions: {})",
                    Partition::names()
                )));
            };
            if out.insert(p, path).is_some() {
                return Err(D::Error::custom(format!(
                    "partition {} is given twice (as {} and {})",
                    p.drive_name(),
                    p.drive_name(),
                    p.jumpstarter_name()
                )));
            }
        }
        Ok(PartitionFiles(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_drives_and_jumpstarters() {
        for p in Partition::ALL {
            assert_eq!(Partition::from_name(p.drive_name()), Some(p));
            assert_eq!(Partition::from_name(p.jumpstarter_name()), Some(p));
        }
        assert_eq!(Partition::from_name("OVMF_CODE"), None);
        let files: PartitionFiles = serde_json::from_str(
            r#"{"root": "/r.qcow2", "OVMF_CODE.fd": "/c.fd", "uefi_vars": "/v.fd"}"#,
        )
        .unwrap();
        assert_eq!(
            files.get(Partition::UefiCode),
            Some(&PathBuf::from("/c.fd"))
        );
        assert_eq!(
            serde_json::to_string(&files).unwrap(),
            r#"{"root":"/r.qcow2","uefi_code":"/c.fd","uefi_vars":"/v.fd"}"#
        );
        let err = serde_json::from_str::<PartitionFiles>(r#"{"boot": "/b"}"#).unwrap_err();
        assert!(
            err.to_string().contains(
                "unknown partition \"boot\" (partitions: root, bios, uefi_code (OVMF_CODE.fd), \
                 uefi_vars (OVMF_VARS.fd))"
            ),
            "{err}"
        );
        let err =
            serde_json::from_str::<PartitionFiles>(r#"{"uefi_vars": "/a", "OVMF_VARS.fd": "/b"}"#)
                .unwrap_err();
        assert!(err.to_string().contains("given twice"), "{err}");
    }
}
