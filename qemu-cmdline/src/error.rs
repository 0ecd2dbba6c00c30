//! The error type of the crate.

use std::fmt;

/// The namespaces in which QEMU looks up ids. Two items may share an id only when they live in
/// different namespaces (a block node and a device may both be called `disk0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum IdKind {
    /// `-device ...,id=ID`.
    Device,
    /// `-blockdev ...,node-name=ID`.
    Node,
    /// `-netdev ...,id=ID`.
    Netdev,
    /// `-chardev ...,id=ID`.
    Chardev,
    /// `-object ...,id=ID`.
    Object,
    /// A bus a device plugs into (`bus=ID`): provided by the machine or by a device.
    Bus,
    /// A file descriptor in an fd set (`-add-fd fd=N,set=S`), written `S/N`.
    FdSet,
}

impl IdKind {
    /// How the kind is named in error messages.
    pub fn describe(self) -> &'static str {
        match self {
            IdKind::Device => "device id",
            IdKind::Node => "block node name",
            IdKind::Netdev => "netdev id",
            IdKind::Chardev => "chardev id",
            IdKind::Object => "object id",
            IdKind::Bus => "bus",
            IdKind::FdSet => "fd set entry",
        }
    }
}

impl fmt::Display for IdKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// Everything that can be wrong with a command line. Every variant names the option (`what`)
/// and the field that is wrong, so that a message can be acted upon without reading the argv.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A property key is not a valid QAPI name (`[A-Za-z][A-Za-z0-9_-]*`, dotted for nesting).
    InvalidKey {
        /// The option the key belongs to, for example `-device virtio-blk-pci (id=disk0)`.
        what: String,
        /// The offending key.
        key: String,
    },
    /// An id or node name is not well formed: QEMU wants `[A-Za-z][A-Za-z0-9._-]*`, and block
    /// node names are at most 31 bytes long.
    InvalidId {
        /// The option the id belongs to.
        what: String,
        /// The field that holds the id (`id`, `node-name`, `chardev`, ...).
        field: String,
        /// The offending id.
        id: String,
        /// Why it is rejected.
        reason: String,
    },
    /// A value contains a NUL byte, which no argv element can carry.
    NulByte {
        /// The option the value belongs to.
        what: String,
        /// The field that holds the value.
        field: String,
    },
    /// A value is not valid UTF-8 and the option is written in JSON syntax, which cannot carry it.
    NotUtf8 {
        /// The option the value belongs to.
        what: String,
        /// The field that holds the value.
        field: String,
    },
    /// Two items use the same id in the same namespace.
    DuplicateId {
        /// The namespace.
        kind: IdKind,
        /// The id both use.
        id: String,
        /// The first item that defines it.
        first: String,
        /// The second item that defines it.
        second: String,
    },
    /// An item refers to an id that nothing on the command line defines.
    MissingId {
        /// The namespace the id is looked up in.
        kind: IdKind,
        /// The id that is missing.
        id: String,
        /// The item that refers to it.
        what: String,
        /// The field of that item that holds the reference.
        field: String,
    },
    /// A backend (block node, netdev, chardev) is attached to two frontends.
    AlreadyInUse {
        /// The namespace of the backend.
        kind: IdKind,
        /// The backend's id.
        id: String,
        /// The first user.
        first: String,
        /// The second user.
        second: String,
    },
    /// A port number is zero or above 65535.
    InvalidPort {
        /// The field that holds the port, for example `nic net0 forward "ssh" host_port`.
        field: String,
        /// The value given.
        value: u64,
    },
    /// Two port forwards listen on the same host protocol, address and port.
    PortClash {
        /// The first forward.
        first: String,
        /// The second forward.
        second: String,
    },
    /// A size could not be parsed or is out of range.
    InvalidSize {
        /// The text or value given.
        input: String,
        /// Why it is rejected.
        reason: String,
    },
    /// Any other value that QEMU would reject or misread.
    InvalidValue {
        /// The field that holds the value, for example `disk "root" aio`.
        field: String,
        /// Why it is rejected.
        reason: String,
    },
    /// A JSON VM description could not be read (syntax, unknown field, wrong type).
    Spec {
        /// serde_json's message, which names the field and the position.
        message: String,
    },
    /// Several of the errors above, in the order they were found.
    Multiple(Vec<Error>),
}

impl Error {
    /// Builds an [`Error::InvalidValue`].
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::InvalidValue {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Combines collected errors: none is `Ok`, one is itself, more are [`Error::Multiple`].
    pub(crate) fn collect(mut errors: Vec<Error>) -> Result<(), Error> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(Error::Multiple(errors)),
        }
    }

    /// The individual errors: itself, or the members of [`Error::Multiple`].
    pub fn iter(&self) -> impl Iterator<Item = &Error> {
        let slice: &[Error] = match self {
            Error::Multiple(v) => v,
            other => std::slice::from_ref(other),
        };
        slice.iter()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidKey { what, key } => write!(
                f,
                "{what}: key {key:?} is not a valid QAPI name (letters, digits, '-' and '_', \
                 starting with a letter)"
            ),
            Error::InvalidId {
                what,
                field,
                id,
                reason,
            } => write!(f, "{what}: {field} {id:?} is not a valid id: {reason}"),
            Error::NulByte { what, field } => {
                write!(f, "{what}: {field} contains a NUL byte")
            }
            Error::NotUtf8 { what, field } => write!(
                f,
                "{what}: {field} is not valid UTF-8, which JSON syntax cannot carry \
                 (use keyval syntax for this command line)"
            ),
            Error::DuplicateId {
                kind,
                id,
                first,
                second,
            } => write!(
                f,
                "{kind} {id:?} is defined twice: by {first} and by {second}"
            ),
            Error::MissingId {
                kind,
                id,
                what,
                field,
            } => write!(
                f,
                "{what}: {field} refers to {kind} {id:?}, which nothing on the command line defines"
            ),
            Error::AlreadyInUse {
                kind,
                id,
                first,
                second,
            } => write!(f, "{kind} {id:?} is used by both {first} and {second}"),
            Error::InvalidPort { field, value } => {
                write!(f, "{field}: port {value} is out of range (1..=65535)")
            }
            Error::PortClash { first, second } => write!(
                f,
                "port forwards {first} and {second} listen on the same host protocol, address \
                 and port"
            ),
            Error::InvalidSize { input, reason } => write!(f, "invalid size {input:?}: {reason}"),
            Error::InvalidValue { field, reason } => write!(f, "{field}: {reason}"),
            Error::Spec { message } => write!(f, "invalid VM description: {message}"),
            Error::Multiple(errors) => {
                write!(f, "{} errors: ", errors.len())?;
                for (i, e) in errors.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{e}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collect_flattens_counts() {
        assert_eq!(Error::collect(vec![]), Ok(()));
        let one = Error::invalid("a", "b");
        assert_eq!(Error::collect(vec![one.clone()]), Err(one.clone()));
        let two = Error::collect(vec![one.clone(), one.clone()]).unwrap_err();
        assert_eq!(two.iter().count(), 2);
        assert_eq!(two.to_string(), "2 errors: a: b; a: b");
    }
}
