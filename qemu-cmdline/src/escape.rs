//! Escaping for QEMU's option syntaxes and for the shell, and the name rules QEMU applies.
//!
//! QEMU reads most options as comma-separated `key=value` lists (QemuOpts, and its successor
//! keyval). Inside a value a literal comma is written as two commas; nothing else is special
//! in a value. Keys cannot be escaped at all, so they are validated instead.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// Escapes a value for QemuOpts/keyval: every `,` becomes `,,`. The result is only correct as
/// the *value* part of `key=value` (or an implied value), never as a key.
///
/// ```
/// use std::ffi::OsStr;
/// assert_eq!(qemu_cmdline::escape_value(OsStr::new("/a,b/c")), "/a,,b/c");
/// ```
pub fn escape_value(value: &OsStr) -> OsString {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len() + 4);
    for &b in bytes {
        out.push(b);
        if b == b',' {
            out.push(b',');
        }
    }
    OsString::from_vec(out)
}

/// Whether `name` is a QAPI name: an ASCII letter, then letters, digits, `-` and `_`,
/// optionally preceded by a downstream-extension prefix `__RFQDN_` (`__com.redhat_`).
pub fn is_qapi_name(name: &str) -> bool {
    let rest = match name.strip_prefix("__") {
        Some(ext) => match ext.find('_') {
            Some(i) if i > 0 => {
                let domain = &ext[..i];
                if !domain
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
                {
                    return false;
                }
                &ext[i + 1..]
            }
            _ => return false,
        },
        None => name,
    };
    let mut bytes = rest.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphabetic() => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Why `id` is not a well-formed QEMU id, or `None` when it is. QEMU's rule (`id_wellformed`)
/// is an ASCII letter followed by letters, digits, `-`, `.` and `_`.
pub fn id_problem(id: &str) -> Option<&'static str> {
    let mut bytes = id.bytes();
    match bytes.next() {
        None => return Some("it is empty"),
        Some(b) if !b.is_ascii_alphabetic() => return Some("it must start with an ASCII letter"),
        Some(_) => {}
    }
    if bytes.all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_') {
        None
    } else {
        Some("only ASCII letters, digits, '-', '.' and '_' are allowed")
    }
}

/// Whether an argv element can be written without quotes.
fn shell_safe(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"_@%+=:,./-".contains(&b)
}

/// Quotes one argv element for a POSIX shell (bash for non-printable bytes).
///
/// Plain words stay bare, anything else is single-quoted; control characters and bytes that are
/// not UTF-8 are written in bash's `$'...'` form so that logs stay printable and pasteable.
pub fn shell_quote_arg(arg: &OsStr) -> String {
    let bytes = arg.as_bytes();
    if !bytes.is_empty() && bytes.iter().all(|&b| shell_safe(b)) {
        // All bytes are ASCII here.
        return String::from_utf8_lossy(bytes).into_owned();
    }
    match std::str::from_utf8(bytes) {
        Ok(s) if !s.chars().any(char::is_control) => {
            let mut out = String::with_capacity(s.len() + 2);
            out.push('\'');
            for c in s.chars() {
                if c == '\'' {
                    out.push_str("'\\''");
                } else {
                    out.push(c);
                }
            }
            out.push('\'');
            out
        }
        _ => ansi_c_quote(bytes),
    }
}

/// bash's `$'...'` quoting: printable UTF-8 stays, everything else is escaped.
fn ansi_c_quote(bytes: &[u8]) -> String {
    let mut out = String::from("$'");
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\'' => out.push_str("\\'"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if c.is_control() => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        out.push_str(&format!("\\x{b:02x}"));
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out.push('\'');
    out
}

/// Quotes a whole argv (program first) for a POSIX shell, elements separated by one space.
/// Meant for logs and error messages: pasting the result into bash runs the same command.
///
/// ```
/// use std::ffi::OsString;
/// let argv = [OsString::from("qemu-img"), OsString::from("info"), OsString::from("my disk.img")];
/// assert_eq!(qemu_cmdline::shell_quote(&argv), "qemu-img info 'my disk.img'");
/// ```
pub fn shell_quote(argv: &[OsString]) -> String {
    let mut out = String::new();
    for (i, arg) in argv.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        // A first word with '=' would be read as a variable assignment.
        if i == 0 && arg.as_bytes().contains(&b'=') && !arg.is_empty() {
            let quoted = shell_quote_arg(arg);
            if quoted.starts_with('\'') || quoted.starts_with("$'") {
                out.push_str(&quoted);
            } else {
                out.push('\'');
                out.push_str(&quoted);
                out.push('\'');
            }
        } else {
            out.push_str(&shell_quote_arg(arg));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commas_are_doubled_and_nothing_else_changes() {
        assert_eq!(escape_value(OsStr::new("")), "");
        assert_eq!(escape_value(OsStr::new(",")), ",,");
        assert_eq!(escape_value(OsStr::new("a,,b")), "a,,,,b");
        assert_eq!(escape_value(OsStr::new("k=v x'\"é")), "k=v x'\"é");
        let raw = OsString::from_vec(vec![0xff, b',', 0xfe]);
        assert_eq!(escape_value(&raw).as_bytes(), &[0xff, b',', b',', 0xfe]);
    }

    #[test]
    fn qapi_names() {
        for ok in [
            "a",
            "node-name",
            "read_only",
            "x-speed",
            "A1",
            "__com.redhat_drive-add",
        ] {
            assert!(is_qapi_name(ok), "{ok}");
        }
        for bad in [
            "", "1a", "-a", "a b", "a=b", "a,b", "a.b", "é", "__", "___x", "__com_", "_a",
        ] {
            assert!(!is_qapi_name(bad), "{bad}");
        }
    }

    #[test]
    fn ids() {
        assert_eq!(id_problem("disk0"), None);
        assert_eq!(id_problem("a.b-c_d"), None);
        assert_eq!(id_problem(""), Some("it is empty"));
        assert!(id_problem("0disk").is_some());
        assert!(id_problem("a,b").is_some());
        assert!(id_problem("a b").is_some());
    }

    #[test]
    fn shell_quoting() {
        let q = |s: &str| shell_quote_arg(OsStr::new(s));
        assert_eq!(q("-machine"), "-machine");
        assert_eq!(q("q35,accel=kvm"), "q35,accel=kvm");
        assert_eq!(q(""), "''");
        assert_eq!(q("a b"), "'a b'");
        assert_eq!(q("it's"), "'it'\\''s'");
        assert_eq!(q("é"), "'é'");
        assert_eq!(q("$HOME"), "'$HOME'");
        assert_eq!(q("a\nb"), "$'a\\nb'");
        assert_eq!(q("a'\\\x1b"), "$'a\\'\\\\\\x1b'");
        let raw = OsString::from_vec(vec![b'a', 0xff]);
        assert_eq!(shell_quote_arg(&raw), "$'a\\xff'");
        let argv = [OsString::from("A=b"), OsString::from("x")];
        assert_eq!(shell_quote(&argv), "'A=b' x");
    }
}
