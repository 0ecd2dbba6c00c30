//! A minimal FAT12/FAT16 image writer: a volume label and regular files in the root directory,
//! with VFAT long names. It exists so that the cloud-init NoCloud seed (label `CIDATA`) can be
//! made by this project's own code, without mkfs.vfat, mtools or QEMU's vvfat driver.
//!
//! Private to the crate: [`crate::cloudinit`] is its one user.

use std::fmt;

const SECTOR: usize = 512;
const SECTORS_PER_CLUSTER: usize = 4;
const CLUSTER: usize = SECTOR * SECTORS_PER_CLUSTER;
const RESERVED_SECTORS: usize = 1;
const FATS: usize = 2;
const ROOT_ENTRIES: usize = 128;
const DIR_ENTRY: usize = 32;
/// The largest cluster count of a FAT12 volume; one more makes it FAT16 (the rule every FAT
/// driver, Linux's included, uses to tell the two apart).
const FAT12_MAX_CLUSTERS: usize = 4084;
const FAT16_MAX_CLUSTERS: usize = 65524;
/// Clusters left free beyond the files, so the guest can write a little if it mounts read-write.
const SLACK_CLUSTERS: usize = 16;
/// 2000-01-01, 00:00: a fixed time stamp keeps images reproducible.
const FAT_DATE: u16 = (20 << 9) | (1 << 5) | 1;
const FAT_TIME: u16 = 0;

/// Why an image could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FatError {
    /// A file name is empty, too long, has a character FAT does not allow, or is a reserved name.
    InvalidName(String),
    /// Two files have names that are equal when case is ignored (FAT names are case-insensitive).
    DuplicateName(String),
    /// The volume label is longer than 11 bytes or has characters a label cannot hold.
    InvalidLabel(String),
    /// More files than the root directory holds.
    TooManyFiles {
        /// Files asked for.
        files: usize,
        /// Directory entries they would need, against the root directory's capacity.
        entries_needed: usize,
    },
    /// The files do not fit in a FAT16 volume of this layout.
    TooLarge {
        /// Total bytes of the files.
        bytes: u64,
    },
}

impl fmt::Display for FatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FatError::InvalidName(n) => write!(f, "invalid FAT file name {n:?}"),
            FatError::DuplicateName(n) => {
                write!(f, "file name {n:?} is given twice (FAT names ignore case)")
            }
            FatError::InvalidLabel(l) => write!(
                f,
                "invalid FAT volume label {l:?}: at most 11 bytes of A-Z, 0-9, space and !#$%&'()-@^_`{{}}~"
            ),
            FatError::TooManyFiles { files, entries_needed } => write!(
                f,
                "{files} files need {entries_needed} root directory entries, more than the {ROOT_ENTRIES} available"
            ),
            FatError::TooLarge { bytes } => write!(
                f,
                "{bytes} bytes of files do not fit in a FAT16 image of {} clusters of {CLUSTER} bytes",
                FAT16_MAX_CLUSTERS - SLACK_CLUSTERS
            ),
        }
    }
}

impl std::error::Error for FatError {}

fn valid_short_char(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit() || b" !#$%&'()-@^_`{}~".contains(&b)
}

fn check_label(label: &str) -> Result<[u8; 11], FatError> {
    let up = label.to_ascii_uppercase();
    if up.is_empty() || up.len() > 11 || !up.bytes().all(valid_short_char) || up.starts_with(' ') {
        return Err(FatError::InvalidLabel(label.to_string()));
    }
    let mut out = [b' '; 11];
    out[..up.len()].copy_from_slice(up.as_bytes());
    Ok(out)
}

fn check_name(name: &str) -> Result<Vec<u16>, FatError> {
    let bad = name.is_empty()
        || name == "."
        || name == ".."
        || name.ends_with(' ')
        || name.ends_with('.')
        || name
            .chars()
            .any(|c| (c as u32) < 0x20 || "\"*/:<>?\\|\u{7f}".contains(c));
    let units: Vec<u16> = name.encode_utf16().collect();
    if bad || units.len() > 255 {
        return Err(FatError::InvalidName(name.to_string()));
    }
    Ok(units)
}

/// The 8.3 alias of the n-th file (1-based `n`): up to 6 valid characters of the base, `~n`, and
/// up to 3 of the extension. Every file gets a long name too, so the alias is never what a
/// VFAT-aware reader shows.
fn short_alias(name: &str, n: usize) -> [u8; 11] {
    let (base, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i + 1..]),
        _ => (name, ""),
    };
    let clean = |s: &str, max: usize| -> Vec<u8> {
        s.bytes()
            .filter(|b| *b != b'.' && *b != b' ')
            .map(|b| b.to_ascii_uppercase())
            .map(|b| if valid_short_char(b) { b } else { b'_' })
            .take(max)
            .collect()
    };
    let tail = format!("~{n}");
    let mut base = clean(base, 8 - tail.len());
    if base.is_empty() {
        base.push(b'_');
    }
    base.extend_from_slice(tail.as_bytes());
    let ext = clean(ext, 3);
    let mut out = [b' '; 11];
    out[..base.len()].copy_from_slice(&base);
    out[8..8 + ext.len()].copy_from_slice(&ext);
    out
}

fn lfn_checksum(short: &[u8; 11]) -> u8 {
    short.iter().fold(0u8, |sum, &b| {
        ((sum & 1) << 7).wrapping_add(sum >> 1).wrapping_add(b)
    })
}

/// The long-name entries for `units`, in on-disk order (last part first).
fn lfn_entries(units: &[u16], checksum: u8) -> Vec<[u8; DIR_ENTRY]> {
    let parts = units.len().div_ceil(13);
    let mut entries = Vec::with_capacity(parts);
    for seq in (1..=parts).rev() {
        let mut chars = [0xFFFFu16; 13];
        let start = (seq - 1) * 13;
        let chunk = &units[start..units.len().min(start + 13)];
        chars[..chunk.len()].copy_from_slice(chunk);
        if chunk.len() < 13 {
            chars[chunk.len()] = 0;
        }
        let mut e = [0u8; DIR_ENTRY];
        e[0] = seq as u8 | if seq == parts { 0x40 } else { 0 };
        e[11] = 0x0F;
        e[13] = checksum;
        let offsets = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];
        for (c, off) in chars.iter().zip(offsets) {
            e[off..off + 2].copy_from_slice(&c.to_le_bytes());
        }
        entries.push(e);
    }
    entries
}

fn short_entry(name: &[u8; 11], attr: u8, cluster: u16, size: u32) -> [u8; DIR_ENTRY] {
    let mut e = [0u8; DIR_ENTRY];
    e[..11].copy_from_slice(name);
    e[11] = attr;
    for off in [14, 22] {
        e[off..off + 2].copy_from_slice(&FAT_TIME.to_le_bytes());
    }
    for off in [16, 18, 24] {
        e[off..off + 2].copy_from_slice(&FAT_DATE.to_le_bytes());
    }
    e[26..28].copy_from_slice(&cluster.to_le_bytes());
    e[28..32].copy_from_slice(&size.to_le_bytes());
    e
}

struct Layout {
    fat16: bool,
    clusters: usize,
    fat_sectors: usize,
    total_sectors: usize,
}

impl Layout {
    fn root_dir_sectors() -> usize {
        ROOT_ENTRIES * DIR_ENTRY / SECTOR
    }

    fn first_data_sector(&self) -> usize {
        RESERVED_SECTORS + FATS * self.fat_sectors + Self::root_dir_sectors()
    }

    fn for_clusters(used: usize, bytes: u64) -> Result<Layout, FatError> {
        let wanted = used + SLACK_CLUSTERS;
        let (fat16, clusters) = if wanted <= FAT12_MAX_CLUSTERS {
            (false, wanted)
        } else if wanted <= FAT16_MAX_CLUSTERS {
            (true, wanted.max(FAT12_MAX_CLUSTERS + 1))
        } else {
            return Err(FatError::TooLarge { bytes });
        };
        let fat_bytes = if fat16 {
            (clusters + 2) * 2
        } else {
            ((clusters + 2) * 3).div_ceil(2)
        };
        let fat_sectors = fat_bytes.div_ceil(SECTOR);
        let total_sectors = RESERVED_SECTORS
            + FATS * fat_sectors
            + Self::root_dir_sectors()
            + clusters * SECTORS_PER_CLUSTER;
        Ok(Layout {
            fat16,
            clusters,
            fat_sectors,
            total_sectors,
        })
    }
}

fn boot_sector(layout: &Layout, label: &[u8; 11], volume_id: u32) -> [u8; SECTOR] {
    let mut b = [0u8; SECTOR];
    b[..3].copy_from_slice(&[0xEB, 0x3C, 0x90]);
    b[3..11].copy_from_slice(b"QEMUMACH");
    b[11..13].copy_from_slice(&(SECTOR as u16).to_le_bytes());
    b[13] = SECTORS_PER_CLUSTER as u8;
    b[14..16].copy_from_slice(&(RESERVED_SECTORS as u16).to_le_bytes());
    b[16] = FATS as u8;
    b[17..19].copy_from_slice(&(ROOT_ENTRIES as u16).to_le_bytes());
    match u16::try_from(layout.total_sectors) {
        Ok(n) => b[19..21].copy_from_slice(&n.to_le_bytes()),
        Err(_) => b[32..36].copy_from_slice(&(layout.total_sectors as u32).to_le_bytes()),
    }
    b[21] = 0xF8;
    b[22..24].copy_from_slice(&(layout.fat_sectors as u16).to_le_bytes());
    b[24..26].copy_from_slice(&32u16.to_le_bytes());
    b[26..28].copy_from_slice(&64u16.to_le_bytes());
    b[36] = 0x80;
    b[38] = 0x29;
    b[39..43].copy_from_slice(&volume_id.to_le_bytes());
    b[43..54].copy_from_slice(label);
    b[54..62].copy_from_slice(if layout.fat16 {
        b"FAT16   "
    } else {
        b"FAT12   "
    });
    b[510] = 0x55;
    b[511] = 0xAA;
    b
}

fn set_fat_entry(fat: &mut [u8], fat16: bool, n: usize, value: u16) {
    if fat16 {
        fat[n * 2..n * 2 + 2].copy_from_slice(&value.to_le_bytes());
    } else {
        let off = n * 3 / 2;
        let v = value & 0x0FFF;
        if n % 2 == 0 {
            fat[off] = v as u8;
            fat[off + 1] = (fat[off + 1] & 0xF0) | (v >> 8) as u8;
        } else {
            fat[off] = (fat[off] & 0x0F) | ((v & 0x0F) << 4) as u8;
            fat[off + 1] = (v >> 4) as u8;
        }
    }
}

/// Builds a FAT12 (or, for more than about 8 MiB of files, FAT16) image holding `files` in its
/// root directory under their long names, with the volume label `label`. The image is
/// deterministic: the same input gives the same bytes (`volume_id` is the only varying field).
pub(crate) fn build_image(
    label: &str,
    volume_id: u32,
    files: &[(&str, &[u8])],
) -> Result<Vec<u8>, FatError> {
    let label = check_label(label)?;
    let mut names = Vec::with_capacity(files.len());
    let mut seen = std::collections::BTreeSet::new();
    for (name, _) in files {
        names.push(check_name(name)?);
        if !seen.insert(name.to_lowercase()) {
            return Err(FatError::DuplicateName(name.to_string()));
        }
    }
    let entries_needed = 1 + names
        .iter()
        .map(|u| 1 + u.len().div_ceil(13))
        .sum::<usize>();
    if entries_needed > ROOT_ENTRIES {
        return Err(FatError::TooManyFiles {
            files: files.len(),
            entries_needed,
        });
    }
    let bytes: u64 = files.iter().map(|(_, d)| d.len() as u64).sum();
    let used: usize = files.iter().map(|(_, d)| d.len().div_ceil(CLUSTER)).sum();
    let layout = Layout::for_clusters(used, bytes)?;

    let mut image = vec![0u8; layout.total_sectors * SECTOR];
    image[..SECTOR].copy_from_slice(&boot_sector(&layout, &label, volume_id));

    let mut fat = vec![0u8; layout.fat_sectors * SECTOR];
    let (media, eoc) = if layout.fat16 {
        (0xFFF8, 0xFFFF)
    } else {
        (0x0FF8, 0x0FFF)
    };
    set_fat_entry(&mut fat, layout.fat16, 0, media);
    set_fat_entry(&mut fat, layout.fat16, 1, eoc);

    let root_start = (RESERVED_SECTORS + FATS * layout.fat_sectors) * SECTOR;
    let data_start = layout.first_data_sector() * SECTOR;
    let mut dir = Vec::with_capacity(entries_needed * DIR_ENTRY);
    dir.extend_from_slice(&short_entry(&label, 0x08, 0, 0));

    let mut next_cluster = 2usize;
    for (i, ((name, data), units)) in files.iter().zip(&names).enumerate() {
        let count = data.len().div_ceil(CLUSTER);
        let first = if count == 0 { 0 } else { next_cluster };
        for k in 0..count {
            let c = next_cluster + k;
            let value = if k + 1 == count { eoc } else { (c + 1) as u16 };
            set_fat_entry(&mut fat, layout.fat16, c, value);
        }
        let at = data_start + (next_cluster - 2) * CLUSTER;
        image[at..at + data.len()].copy_from_slice(data);
        next_cluster += count;

        let alias = short_alias(name, i + 1);
        for e in lfn_entries(units, lfn_checksum(&alias)) {
            dir.extend_from_slice(&e);
        }
        dir.extend_from_slice(&short_entry(&alias, 0x20, first as u16, data.len() as u32));
    }
    debug_assert!(next_cluster - 2 <= layout.clusters);

    for copy in 0..FATS {
        let at = (RESERVED_SECTORS + copy * layout.fat_sectors) * SECTOR;
        image[at..at + fat.len()].copy_from_slice(&fat);
    }
    image[root_start..root_start + dir.len()].copy_from_slice(&dir);
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An independent reader: follows the boot sector, the FAT chain and the long names.
    fn read_back(image: &[u8]) -> (String, Vec<(String, Vec<u8>)>) {
        let u16_at = |o: usize| u16::from_le_bytes([image[o], image[o + 1]]) as usize;
        let bps = u16_at(11);
        let spc = image[13] as usize;
        let reserved = u16_at(14);
        let fats = image[16] as usize;
        let root_entries = u16_at(17);
        let total = match u16_at(19) {
            0 => u32::from_le_bytes(image[32..36].try_into().unwrap()) as usize,
            n => n,
        };
        let fat_sectors = u16_at(22);
        let root_sectors = root_entries * 32 / bps;
        let first_data = reserved + fats * fat_sectors + root_sectors;
        let clusters = (total - first_data) / spc;
        let fat16 = clusters > FAT12_MAX_CLUSTERS;
        assert_eq!(
            &image[54..62],
            if fat16 { b"FAT16   " } else { b"FAT12   " }
        );
        let fat = &image[reserved * bps..(reserved + fat_sectors) * bps];
        let second = &image[(reserved + fat_sectors) * bps..(reserved + 2 * fat_sectors) * bps];
        assert_eq!(fat, second, "FAT copies differ");
        let entry = |n: usize| -> usize {
            if fat16 {
                u16::from_le_bytes([fat[2 * n], fat[2 * n + 1]]) as usize
            } else {
                let off = n * 3 / 2;
                let v = u16::from_le_bytes([fat[off], fat[off + 1]]) as usize;
                if n % 2 == 0 {
                    v & 0xFFF
                } else {
                    v >> 4
                }
            }
        };
        let eoc = if fat16 { 0xFFF8 } else { 0xFF8 };
        let root = (reserved + fats * fat_sectors) * bps;
        let mut label = String::new();
        let mut files = Vec::new();
        let mut long: Vec<(u8, Vec<u16>)> = Vec::new();
        for i in 0..root_entries {
            let e = &image[root + i * 32..root + i * 32 + 32];
            if e[0] == 0 {
                break;
            }
            match e[11] {
                0x08 => label = String::from_utf8_lossy(&e[..11]).trim_end().to_string(),
                0x0F => {
                    let mut units = Vec::new();
                    for off in [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30] {
                        units.push(u16::from_le_bytes([e[off], e[off + 1]]));
                    }
                    long.push((e[0] & 0x1F, units));
                }
                _ => {
                    let alias: [u8; 11] = e[..11].try_into().unwrap();
                    long.sort_by_key(|(seq, _)| *seq);
                    let mut units: Vec<u16> = long.iter().flat_map(|(_, u)| u.clone()).collect();
                    if let Some(end) = units.iter().position(|&u| u == 0) {
                        units.truncate(end);
                    }
                    assert!(!long.is_empty(), "file without a long name");
                    let e13 = image[root + (i - 1) * 32 + 13];
                    assert_eq!(e13, lfn_checksum(&alias), "long-name checksum");
                    long.clear();
                    let size = u32::from_le_bytes(e[28..32].try_into().unwrap()) as usize;
                    let mut c = u16::from_le_bytes([e[26], e[27]]) as usize;
                    let mut data = Vec::new();
                    while c >= 2 && c < eoc {
                        let at = (first_data + (c - 2) * spc) * bps;
                        data.extend_from_slice(&image[at..at + spc * bps]);
                        c = entry(c);
                    }
                    data.truncate(size);
                    files.push((String::from_utf16(&units).unwrap(), data));
                }
            }
        }
        (label, files)
    }

    #[test]
    fn small_files_round_trip_as_fat12() {
        let meta = b"instance-id: iid-1\nlocal-hostname: vm-1\n".to_vec();
        let user = vec![b'x'; 5000];
        let files: [(&str, &[u8]); 4] = [
            ("meta-data", &meta),
            ("user-data", &user),
            ("network-config", b""),
            ("a very long file name with \u{e9}.yaml", b"ok"),
        ];
        let img = build_image("cidata", 0x1234_5678, &files).unwrap();
        assert_eq!(img.len() % SECTOR, 0);
        assert_eq!(&img[510..512], &[0x55, 0xAA]);
        let (label, back) = read_back(&img);
        assert_eq!(label, "CIDATA");
        assert_eq!(&img[43..54], b"CIDATA     ");
        let expected: Vec<(String, Vec<u8>)> = files
            .iter()
            .map(|(n, d)| (n.to_string(), d.to_vec()))
            .collect();
        assert_eq!(back, expected);
    }

    #[test]
    fn large_content_switches_to_fat16() {
        let big = vec![7u8; 9 * 1024 * 1024];
        let img = build_image("CIDATA", 1, &[("user-data", &big)]).unwrap();
        assert_eq!(&img[54..62], b"FAT16   ");
        let (_, back) = read_back(&img);
        assert_eq!(back[0].1.len(), big.len());
        assert!(back[0].1 == big);
    }

    #[test]
    fn same_input_same_bytes() {
        let f: [(&str, &[u8]); 1] = [("meta-data", b"x")];
        assert_eq!(
            build_image("CIDATA", 9, &f).unwrap(),
            build_image("CIDATA", 9, &f).unwrap()
        );
    }

    #[test]
    fn bad_input_is_named() {
        assert_eq!(
            build_image("CIDATA", 1, &[("a/b", b"")]),
            Err(FatError::InvalidName("a/b".into()))
        );
        assert_eq!(
            build_image("CIDATA", 1, &[("Meta", b""), ("meta", b"")]),
            Err(FatError::DuplicateName("meta".into()))
        );
        assert!(matches!(
            build_image("much-too-long-label", 1, &[]),
            Err(FatError::InvalidLabel(_))
        ));
        assert!(matches!(
            build_image("a.b", 1, &[]),
            Err(FatError::InvalidLabel(_))
        ));
        let many: Vec<(String, Vec<u8>)> =
            (0..100).map(|i| (format!("file-{i}"), vec![])).collect();
        let refs: Vec<(&str, &[u8])> = many
            .iter()
            .map(|(n, d)| (n.as_str(), d.as_slice()))
            .collect();
        assert!(matches!(
            build_image("CIDATA", 1, &refs),
            Err(FatError::TooManyFiles { .. })
        ));
        let err = build_image("CIDATA", 1, &[("", b"")]).unwrap_err();
        assert!(err.to_string().contains("invalid FAT file name"));
    }

    #[test]
    fn fsck_and_mtools_accept_the_image() {
        let dir = std::env::temp_dir().join(format!("fat-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("seed.img");
        let meta = b"instance-id: x\n";
        let img = build_image(
            "CIDATA",
            42,
            &[("meta-data", meta), ("user-data", b"#cloud-config\n")],
        )
        .unwrap();
        std::fs::write(&path, &img).unwrap();
        let fsck = std::process::Command::new("fsck.fat")
            .arg("-n")
            .arg(&path)
            .output()
            .expect("fsck.fat missing: apt-get install -y dosfstools");
        let out = std::process::Command::new("mtype")
            .arg("-i")
            .arg(&path)
            .arg("::meta-data")
            .output()
            .expect("mtype missing: apt-get install -y mtools");
        let label = std::process::Command::new("mlabel")
            .args(["-s", "-i"])
            .arg(&path)
            .arg("::")
            .output()
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            fsck.status.success(),
            "fsck.fat: {}{}",
            String::from_utf8_lossy(&fsck.stdout),
            String::from_utf8_lossy(&fsck.stderr)
        );
        assert_eq!(out.stdout, meta, "{}", String::from_utf8_lossy(&out.stderr));
        assert!(
            String::from_utf8_lossy(&label.stdout).contains("CIDATA"),
            "{:?}",
            label
        );
    }
}
