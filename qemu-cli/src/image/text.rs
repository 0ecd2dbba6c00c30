//! How `qemu-machine image` shows what qemu-img reports: sizes, `info` as text and JSON,
//! `check`'s summary, the snapshot table.

use qemu_process::image::{CheckReport, ImageInfo, SnapshotInfo};
use serde_json::{json, Value};

pub(super) fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else if value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

pub(super) fn info_json(info: &ImageInfo) -> Value {
    let mut v = json!({
        "filename": info.filename,
        "format": info.format.name(),
        "virtual-size": info.virtual_size,
        "dirty-flag": info.dirty,
        "encrypted": info.encrypted,
    });
    let map = v.as_object_mut().expect("an object");
    let mut opt = |key: &str, value: Option<Value>| {
        if let Some(value) = value {
            map.insert(key.to_owned(), value);
        }
    };
    opt("actual-size", info.actual_size.map(Value::from));
    opt("cluster-size", info.cluster_size.map(Value::from));
    opt(
        "backing-filename",
        info.backing_filename.clone().map(Value::from),
    );
    opt(
        "full-backing-filename",
        info.full_backing_filename.clone().map(Value::from),
    );
    opt(
        "backing-filename-format",
        info.backing_filename_format.clone().map(Value::from),
    );
    opt("format-specific", info.format_specific.clone());
    if !info.snapshots.is_empty() {
        let snaps: Vec<Value> = info
            .snapshots
            .iter()
            .map(|s| {
                json!({"id": s.id, "name": s.name, "vm-state-size": s.vm_state_size,
                       "date-sec": s.date_sec, "date-nsec": s.date_nsec,
                       "vm-clock-sec": s.vm_clock_sec, "vm-clock-nsec": s.vm_clock_nsec})
            })
            .collect();
        map.insert("snapshots".into(), Value::Array(snaps));
    }
    if !info.backing_chain.is_empty() {
        map.insert(
            "backing-chain".into(),
            Value::Array(info.backing_chain.iter().map(info_json).collect()),
        );
    }
    v
}

pub(super) fn info_text(info: &ImageInfo, indent: &str, out: &mut String) {
    use std::fmt::Write;
    let _ = writeln!(out, "{indent}image: {}", info.filename);
    let _ = writeln!(out, "{indent}format: {}", info.format);
    let _ = writeln!(
        out,
        "{indent}virtual size: {} ({} bytes)",
        human(info.virtual_size),
        info.virtual_size
    );
    if let Some(a) = info.actual_size {
        let _ = writeln!(out, "{indent}disk size: {}", human(a));
    }
    if let Some(c) = info.cluster_size {
        let _ = writeln!(out, "{indent}cluster size: {c}");
    }
    if let Some(b) = &info.backing_filename {
        let fmt = info
            .backing_filename_format
            .as_deref()
            .map_or_else(String::new, |f| format!(" (format {f})"));
        let _ = writeln!(out, "{indent}backing file: {b}{fmt}");
    }
    if info.dirty {
        let _ = writeln!(out, "{indent}dirty: yes (not closed cleanly)");
    }
    if info.encrypted {
        let _ = writeln!(out, "{indent}encrypted: yes");
    }
    if !info.snapshots.is_empty() {
        let _ = writeln!(out, "{indent}snapshots:");
        for s in &info.snapshots {
            let _ = writeln!(
                out,
                "{indent}  {:>3}  {}  (vm state {})",
                s.id,
                s.name,
                human(s.vm_state_size)
            );
        }
    }
    for b in &info.backing_chain {
        let _ = writeln!(out, "{indent}backing image:");
        info_text(b, &format!("{indent}  "), out);
    }
}

pub(super) fn check_text(r: &CheckReport) -> String {
    let mut parts = vec![format!(
        "{}: {}",
        r.filename,
        if r.is_clean() {
            "clean"
        } else {
            "problems found"
        }
    )];
    for (n, what) in [
        (r.corruptions, "corruptions"),
        (r.leaks, "leaked clusters"),
        (r.check_errors, "check errors"),
        (r.corruptions_fixed, "corruptions repaired"),
        (r.leaks_fixed, "leaks repaired"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    if let (Some(a), Some(t)) = (r.allocated_clusters, r.total_clusters) {
        parts.push(format!("{a}/{t} clusters allocated"));
    }
    parts.join("; ")
}

/// A snapshot table like `qemu-img snapshot -l`: id, tag, VM state size, date (local time),
/// guest clock.
pub(super) fn snapshot_table(list: &[SnapshotInfo]) -> String {
    use std::fmt::Write;
    let tag_width = list
        .iter()
        .map(|s| s.name.chars().count())
        .max()
        .unwrap_or(0)
        .max(3);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<4} {:<tag_width$} {:>10} {:<19} {:>12}",
        "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK"
    );
    for s in list {
        let _ = writeln!(
            out,
            "{:<4} {:<tag_width$} {:>10} {:<19} {:>12}",
            s.id,
            s.name,
            human(s.vm_state_size),
            local_time(s.date_sec),
            vm_clock(s.vm_clock_sec, s.vm_clock_nsec)
        );
    }
    out
}

/// `YYYY-MM-DD HH:MM:SS` in the local time zone.
pub(super) fn local_time(secs: u64) -> String {
    let Ok(t) = libc::time_t::try_from(secs) else {
        return secs.to_string();
    };
    // SAFETY: all-zero is a valid `tm`; localtime_r writes into the one it is given and reads
    // only `t`.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return secs.to_string();
        }
        tm
    };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

/// The guest clock as `HH:MM:SS.mmm` (hours may exceed 24).
pub(super) fn vm_clock(secs: u64, nsecs: u64) -> String {
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        nsecs / 1_000_000
    )
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_columns() {
        assert_eq!(vm_clock(3725, 45_000_000), "01:02:05.045");
        assert_eq!(vm_clock(0, 0), "00:00:00.000");
        let table = snapshot_table(&[SnapshotInfo {
            id: "1".into(),
            name: "before-upgrade".into(),
            vm_state_size: 3 << 20,
            date_sec: 0,
            date_nsec: 0,
            vm_clock_sec: 61,
            vm_clock_nsec: 0,
        }]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2, "{table}");
        for column in ["ID", "TAG", "VM SIZE", "DATE", "VM CLOCK"] {
            assert!(lines[0].contains(column), "{table}");
        }
        assert!(
            lines[1].starts_with("1    before-upgrade      3 MiB 19"),
            "{table}"
        );
        assert!(lines[1].ends_with("00:01:01.000"), "{table}");
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(1 << 30), "1 GiB");
        assert_eq!(human(3 << 29), "1.5 GiB");
        assert_eq!(human(196_608), "192 KiB");
    }

    #[test]
    fn check_summary() {
        let clean = CheckReport {
            filename: "a.qcow2".into(),
            total_clusters: Some(16384),
            allocated_clusters: Some(3),
            ..CheckReport::default()
        };
        assert_eq!(
            check_text(&clean),
            "a.qcow2: clean; 3/16384 clusters allocated"
        );
        let bad = CheckReport {
            filename: "b.qcow2".into(),
            leaks: 2,
            ..CheckReport::default()
        };
        assert_eq!(
            check_text(&bad),
            "b.qcow2: problems found; 2 leaked clusters"
        );
    }
}
