//! Reads the `.modinfo` section of a Linux kernel module (an ELF64 little-endian relocatable
//! object): NUL-separated `key=value` strings such as `name=vfat`, `depends=fat`,
//! `alias=fs-vfat`. Debian's kernel package ships no `modules.dep` (depmod writes it at install
//! time), so the fixture resolves dependencies from these fields itself.

use std::fmt;

/// The fields of a module's `.modinfo` section that the fixture uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ModInfo {
    /// `name=`: the module name (underscores, as the kernel spells it).
    pub name: Option<String>,
    /// `depends=`: names of the modules that must be loaded first.
    pub depends: Vec<String>,
    /// `alias=`: patterns `modprobe` resolves to this module (`fs-vfat`, `pci:v...`).
    pub aliases: Vec<String>,
}

/// Why a module's `.modinfo` could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ModInfoError(String);

impl fmt::Display for ModInfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ModInfoError {}

fn err(message: &str) -> ModInfoError {
    ModInfoError(message.to_owned())
}

fn slice(data: &[u8], offset: u64, len: u64) -> Result<&[u8], ModInfoError> {
    let start = usize::try_from(offset).map_err(|_| err("offset out of range"))?;
    let len = usize::try_from(len).map_err(|_| err("length out of range"))?;
    let end = start
        .checked_add(len)
        .ok_or_else(|| err("length out of range"))?;
    data.get(start..end)
        .ok_or_else(|| err("truncated ELF file"))
}

fn u16_at(data: &[u8], offset: usize) -> Result<u16, ModInfoError> {
    let bytes = slice(data, offset as u64, 2)?;
    Ok(u16::from_le_bytes([bytes[0], bytes[1]]))
}

fn u32_at(data: &[u8], offset: usize) -> Result<u32, ModInfoError> {
    let bytes = slice(data, offset as u64, 4)?;
    Ok(u32::from_le_bytes(bytes.try_into().expect("4 bytes")))
}

fn u64_at(data: &[u8], offset: usize) -> Result<u64, ModInfoError> {
    let bytes = slice(data, offset as u64, 8)?;
    Ok(u64::from_le_bytes(bytes.try_into().expect("8 bytes")))
}

/// Parses the `.modinfo` section out of the bytes of a `.ko` file.
pub(crate) fn parse(data: &[u8]) -> Result<ModInfo, ModInfoError> {
    if data.get(..4) != Some(b"\x7fELF") {
        return Err(err("not an ELF file (is the module compressed?)"));
    }
    if data.get(4) != Some(&2) || data.get(5) != Some(&1) {
        return Err(err("not a 64-bit little-endian ELF file"));
    }
    let shoff = u64_at(data, 0x28)?;
    let shentsize = u64::from(u16_at(data, 0x3A)?);
    let shnum = u64::from(u16_at(data, 0x3C)?);
    let shstrndx = u64::from(u16_at(data, 0x3E)?);
    if shentsize < 64 {
        return Err(err("ELF section header entries are too small"));
    }
    if shstrndx >= shnum {
        return Err(err("ELF section name table index out of range"));
    }
    // (name offset, file offset, size) of section `i`.
    let section = |i: u64| -> Result<(u32, u64, u64), ModInfoError> {
        let at = shoff
            .checked_add(i * shentsize)
            .ok_or_else(|| err("section header offset out of range"))?;
        let header = slice(data, at, 64)?;
        Ok((u32_at(header, 0)?, u64_at(header, 24)?, u64_at(header, 32)?))
    };
    let (_, names_off, names_len) = section(shstrndx)?;
    let names = slice(data, names_off, names_len)?;
    for i in 0..shnum {
        let (name_off, off, len) = section(i)?;
        let name = names
            .get(name_off as usize..)
            .and_then(|rest| rest.split(|&b| b == 0).next())
            .ok_or_else(|| err("section name out of range"))?;
        if name == b".modinfo" {
            return Ok(fields(slice(data, off, len)?));
        }
    }
    Err(err("no .modinfo section"))
}

fn fields(section: &[u8]) -> ModInfo {
    let mut info = ModInfo {
        name: None,
        depends: Vec::new(),
        aliases: Vec::new(),
    };
    for entry in section.split(|&b| b == 0) {
        let Ok(entry) = std::str::from_utf8(entry) else {
            continue;
        };
        let Some((key, value)) = entry.split_once('=') else {
            continue;
        };
        match key {
            "name" => info.name = Some(value.to_owned()),
            "depends" => info.depends.extend(
                value
                    .split(',')
                    .filter(|d| !d.is_empty())
                    .map(str::to_owned),
            ),
            "alias" => info.aliases.push(value.to_owned()),
            _ => {}
        }
    }
    info
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a minimal ELF64 LE object with a null section, `.modinfo` and `.shstrtab`.
    pub(crate) fn elf_with_modinfo(modinfo: &[u8]) -> Vec<u8> {
        let shstrtab = b"\0.modinfo\0.shstrtab\0";
        let mut out = vec![0u8; 64];
        out[..4].copy_from_slice(b"\x7fELF");
        out[4] = 2; // ELFCLASS64
        out[5] = 1; // little-endian
        out[6] = 1; // version
        let modinfo_off = out.len() as u64;
        out.extend_from_slice(modinfo);
        let strtab_off = out.len() as u64;
        out.extend_from_slice(shstrtab);
        while out.len() % 8 != 0 {
            out.push(0);
        }
        let shoff = out.len() as u64;
        let mut header = |name: u32, off: u64, size: u64| {
            let mut h = [0u8; 64];
            h[0..4].copy_from_slice(&name.to_le_bytes());
            h[24..32].copy_from_slice(&off.to_le_bytes());
            h[32..40].copy_from_slice(&size.to_le_bytes());
            out.extend_from_slice(&h);
        };
        header(0, 0, 0);
        header(1, modinfo_off, modinfo.len() as u64);
        header(10, strtab_off, shstrtab.len() as u64);
        out[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
        out[0x3A..0x3C].copy_from_slice(&64u16.to_le_bytes());
        out[0x3C..0x3E].copy_from_slice(&3u16.to_le_bytes());
        out[0x3E..0x40].copy_from_slice(&2u16.to_le_bytes());
        out
    }

    #[test]
    fn reads_name_depends_and_aliases() {
        let elf = elf_with_modinfo(
            b"license=GPL\0alias=fs-vfat\0depends=fat,nls_base\0alias=fs-msdos\0\0\0name=vfat\0vermagic=6.1.0\0",
        );
        let info = parse(&elf).unwrap();
        assert_eq!(info.name.as_deref(), Some("vfat"));
        assert_eq!(info.depends, ["fat", "nls_base"]);
        assert_eq!(info.aliases, ["fs-vfat", "fs-msdos"]);
    }

    #[test]
    fn empty_depends_is_no_dependency() {
        let info = parse(&elf_with_modinfo(b"depends=\0name=button\0")).unwrap();
        assert!(info.depends.is_empty());
        assert_eq!(info.name.as_deref(), Some("button"));
    }

    #[test]
    fn rejects_bad_input_without_panicking() {
        assert!(parse(b"").unwrap_err().to_string().contains("not an ELF"));
        assert!(parse(b"\xfd7zXZ\0rest")
            .unwrap_err()
            .to_string()
            .contains("compressed"));
        let mut elf32 = elf_with_modinfo(b"name=x\0");
        elf32[4] = 1;
        assert!(parse(&elf32).unwrap_err().to_string().contains("64-bit"));
        let elf = elf_with_modinfo(b"name=x\0");
        // Every truncation is an error, never a panic.
        for len in 0..elf.len() {
            assert!(parse(&elf[..len]).is_err(), "truncated to {len}");
        }
        let mut no_modinfo = elf.clone();
        let at = 64 + 7; // ".modinfo" in .shstrtab follows the 7-byte modinfo blob
        no_modinfo[at + 1] = b'X';
        assert_eq!(
            parse(&no_modinfo).unwrap_err().to_string(),
            "no .modinfo section"
        );
        let mut bad_index = elf;
        bad_index[0x3E] = 9;
        assert!(parse(&bad_index)
            .unwrap_err()
            .to_string()
            .contains("index out of range"));
    }
}
