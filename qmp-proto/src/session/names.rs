//! Checks on what the caller asks to send: command names and arguments.

use serde_json::Value;

use crate::error::{excerpt, Error, Result, MAX_COMMAND_NAME_LEN};
use crate::wire::kind;

/// Refuses a command name QEMU cannot have, following QAPI's naming rules: an ASCII letter,
/// then ASCII letters, digits, `-` and `_`; a downstream extension puts `__RFQDN_` before that,
/// RFQDN being a reversed domain name of ASCII letters, digits, `-` and `.` (e.g.
/// `__com.redhat_drive-mirror`). Names are also bounded in length, so that a mistake never
/// sends (and has QEMU quote back) megabytes.
pub(super) fn check_command_name(name: &str) -> Result<()> {
    let invalid = |reason: String| {
        let bytes = name.as_bytes();
        let shown = if bytes.len() > 64 {
            format!("{}...", excerpt(bytes, 0, 40))
        } else {
            excerpt(bytes, 0, 64)
        };
        Err(Error::InvalidCommandName {
            name: shown,
            len: bytes.len(),
            reason,
        })
    };
    if name.len() > MAX_COMMAND_NAME_LEN {
        return invalid(format!(
            "longer than the limit of {MAX_COMMAND_NAME_LEN} bytes"
        ));
    }
    let mut rest = name;
    if let Some(extension) = name.strip_prefix("__") {
        let Some((domain, base)) = extension.split_once('_') else {
            return invalid(
                "a name starting with __ is a downstream extension, __RFQDN_NAME, and the `_` \
                 after the domain is missing"
                    .into(),
            );
        };
        if domain.is_empty() {
            return invalid("the downstream prefix __RFQDN_ has an empty domain".into());
        }
        if let Some(bad) = domain
            .bytes()
            .find(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.')))
        {
            return invalid(format!(
                "the domain of the downstream prefix __RFQDN_ may only hold ASCII letters, \
                 digits, `-` and `.`, not {}",
                describe_byte(bad)
            ));
        }
        rest = base;
    }
    match rest.bytes().next() {
        None => return invalid("the name is empty".into()),
        Some(first) if !first.is_ascii_alphabetic() => {
            return invalid(format!(
                "a name must start with an ASCII letter (or a downstream prefix __RFQDN_), not \
                 {}",
                describe_byte(first)
            ))
        }
        Some(_) => {}
    }
    if let Some(bad) = rest
        .bytes()
        .find(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_')))
    {
        return invalid(format!(
            "a name may only hold ASCII letters, digits, `-` and `_`, not {}",
            describe_byte(bad)
        ));
    }
    Ok(())
}

/// A byte for an error message: `'x'` when printable ASCII, else its escape.
fn describe_byte(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("'{}'", b as char)
    } else {
        format!("'{}'", b.escape_ascii())
    }
}

pub(super) fn check_arguments(command: &str, arguments: Option<&Value>) -> Result<()> {
    match arguments {
        None | Some(Value::Object(_)) => Ok(()),
        Some(other) => Err(Error::Arguments {
            command: command.to_owned(),
            message: format!("they are {}, and QMP needs an object", kind(other)),
        }),
    }
}

/// At most 40 characters of `value`'s JSON text, for log lines.
pub(super) fn excerpt_value(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(40) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}
