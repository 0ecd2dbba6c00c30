//! cloud-init NoCloud seeds: `meta-data`, `user-data` and `network-config` on a small FAT
//! image labelled `CIDATA`, written by this crate (no mkfs, no mtools, no QEMU vvfat).
//!
//! Generated documents are JSON, which is valid YAML, so every value (quotes, colons,
//! newlines, `#`, leading spaces) reaches cloud-init exactly; `user-data` starts with the
//! `#cloud-config` line cloud-init looks for. Documents the caller gives are used as given.
//!
//! ```
//! use qemu_process::cloudinit::{self, CloudInitSpec};
//!
//! let spec = CloudInitSpec {
//!     hostname: Some("board-1".into()),
//!     username: Some("dev".into()),
//!     password: Some("it's: \"secret\"\n".into()),
//!     ..CloudInitSpec::default()
//! };
//! let docs = cloudinit::documents(&spec)?;
//! assert!(docs.user_data.starts_with("#cloud-config\n"));
//! let meta: serde_json::Value = serde_json::from_str(&docs.meta_data).unwrap();
//! assert_eq!(meta["local-hostname"], "board-1");
//! let image = cloudinit::seed_image(&spec)?;
//! assert_eq!(&image[43..54], b"CIDATA     ");
//! # Ok::<(), qemu_process::Error>(())
//! ```

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::error::Error;
use crate::fat;

/// A cloud-init NoCloud seed: the identity of the guest and, when wanted, whole documents.
///
/// From the fields [`documents`] generates `meta-data` (`instance-id`, `local-hostname`) and a
/// `#cloud-config` `user-data` that sets the host name (and has cloud-init write it into
/// `/etc/hosts`, `manage_etc_hosts`, so that it resolves in the guest) and creates the user with the password
/// (unlocked, not expiring, password SSH login allowed) and SSH keys. The documents are written
/// as JSON, which is valid YAML, so any value survives quoting. A document given in `user_data`,
/// `meta_data` or `network_config` is used exactly as given instead.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudInitSpec {
    /// The guest's host name (`local-hostname`, `hostname`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// A user to create (with sudo rights); without it, `password` and `ssh_authorized_keys`
    /// apply to the image's default user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The user's password (plain text; cloud-init hashes it in the guest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// SSH public keys for the user.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh_authorized_keys: Vec<String>,
    /// The instance id; default a hash of this seed's contents (a changed seed is a new
    /// instance, so cloud-init applies it again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// A whole `user-data` document, used as given (exclusive with `username`, `password` and
    /// `ssh_authorized_keys`, which would go into the generated one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
    /// A whole `meta-data` document, used as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta_data: Option<String>,
    /// A `network-config` document (network config version 1 or 2), used as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_config: Option<String>,
}

/// The volume label cloud-init's NoCloud data source looks for.
pub const LABEL: &str = "CIDATA";

/// The documents of a seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedDocuments {
    /// `meta-data`.
    pub meta_data: String,
    /// `user-data`.
    pub user_data: String,
    /// `network-config`, when given.
    pub network_config: Option<String>,
}

/// The seed's documents: generated from the fields, or the caller's own.
pub fn documents(spec: &CloudInitSpec) -> Result<SeedDocuments, Error> {
    let identity =
        spec.username.is_some() || spec.password.is_some() || !spec.ssh_authorized_keys.is_empty();
    if spec.user_data.is_some() && identity {
        return Err(Error::InvalidArgument(
            "cloud_init: user_data is given, so username, password and ssh_authorized_keys \
             would be ignored; put them into the user_data document"
                .into(),
        ));
    }
    if let Some(u) = &spec.username {
        check_username(u)?;
    }
    if let Some(h) = &spec.hostname {
        if h.is_empty() || h.chars().any(char::is_control) {
            return Err(Error::InvalidArgument(format!(
                "cloud_init hostname {h:?}: empty or has control characters"
            )));
        }
    }
    let user_data = match &spec.user_data {
        Some(text) => text.clone(),
        None => generated_user_data(spec),
    };
    let meta_data = match &spec.meta_data {
        Some(text) => text.clone(),
        None => {
            let instance_id = spec.instance_id.clone().unwrap_or_else(|| {
                let mut h = Fnv::new();
                h.write(user_data.as_bytes());
                h.write(&[0]);
                h.write(spec.hostname.as_deref().unwrap_or("").as_bytes());
                h.write(&[0]);
                h.write(spec.network_config.as_deref().unwrap_or("").as_bytes());
                format!("iid-qemu-machine-{:016x}", h.finish())
            });
            let mut m = Map::new();
            m.insert("instance-id".into(), Value::String(instance_id));
            if let Some(h) = &spec.hostname {
                m.insert("local-hostname".into(), Value::String(h.clone()));
            }
            pretty(&Value::Object(m))
        }
    };
    Ok(SeedDocuments {
        meta_data,
        user_data,
        network_config: spec.network_config.clone(),
    })
}

/// The seed as a FAT image (label [`LABEL`]), ready to attach read-only as a raw disk.
pub fn seed_image(spec: &CloudInitSpec) -> Result<Vec<u8>, Error> {
    let docs = documents(spec)?;
    let mut files: Vec<(&str, &[u8])> = vec![
        ("meta-data", docs.meta_data.as_bytes()),
        ("user-data", docs.user_data.as_bytes()),
    ];
    if let Some(n) = &docs.network_config {
        files.push(("network-config", n.as_bytes()));
    }
    let mut h = Fnv::new();
    for (name, data) in &files {
        h.write(name.as_bytes());
        h.write(data);
    }
    fat::build_image(LABEL, h.finish() as u32, &files)
        .map_err(|e| Error::InvalidArgument(format!("cloud_init seed: {e}")))
}

fn generated_user_data(spec: &CloudInitSpec) -> String {
    let mut doc = Map::new();
    if let Some(h) = &spec.hostname {
        doc.insert("hostname".into(), json!(h));
        doc.insert("preserve_hostname".into(), json!(false));
        // /etc/hosts maps the name to the loopback address, so that it resolves in the guest
        // (sudo looks it up) with or without DNS for it.
        doc.insert("manage_etc_hosts".into(), json!(true));
    }
    let keys: Vec<Value> = spec.ssh_authorized_keys.iter().map(|k| json!(k)).collect();
    match &spec.username {
        Some(name) => {
            let mut user = Map::new();
            user.insert("name".into(), json!(name));
            user.insert("sudo".into(), json!("ALL=(ALL) NOPASSWD:ALL"));
            user.insert("shell".into(), json!("/bin/bash"));
            if let Some(p) = &spec.password {
                user.insert("plain_text_passwd".into(), json!(p));
                user.insert("lock_passwd".into(), json!(false));
            }
            if !keys.is_empty() {
                user.insert("ssh_authorized_keys".into(), Value::Array(keys));
            }
            doc.insert("users".into(), json!([Value::Object(user)]));
        }
        None => {
            if let Some(p) = &spec.password {
                doc.insert("password".into(), json!(p));
            }
            if !keys.is_empty() {
                doc.insert("ssh_authorized_keys".into(), Value::Array(keys));
            }
        }
    }
    if spec.password.is_some() {
        doc.insert("chpasswd".into(), json!({"expire": false}));
        doc.insert("ssh_pwauth".into(), json!(true));
    }
    format!("#cloud-config\n{}", pretty(&Value::Object(doc)))
}

fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).expect("a JSON value always serialises");
    s.push('\n');
    s
}

/// A user name `useradd` accepts: `[a-z_][a-z0-9_-]*` with an optional final `$`, at most 32.
fn check_username(name: &str) -> Result<(), Error> {
    let body = name.strip_suffix('$').unwrap_or(name);
    let ok = !body.is_empty()
        && name.len() <= 32
        && body
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && body
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "cloud_init username {name:?}: a user name is 1 to 32 of a-z, 0-9, _ and -, \
             starting with a letter or _"
        )))
    }
}

/// FNV-1a, 64 bits: a stable hash for default instance ids and volume serials.
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> CloudInitSpec {
        CloudInitSpec {
            hostname: Some("vm-1".into()),
            username: Some("jumpstarter".into()),
            password: Some("p: \"q\" 'r'\n# not a comment\n  - x".into()),
            ssh_authorized_keys: vec!["ssh-ed25519 AAAAC3Nza k@h".into()],
            ..CloudInitSpec::default()
        }
    }

    fn parse_user_data(text: &str) -> Value {
        let body = text.strip_prefix("#cloud-config\n").expect("header line");
        serde_json::from_str(body).unwrap()
    }

    #[test]
    fn generated_documents_carry_every_value_exactly() {
        let s = spec();
        let d = documents(&s).unwrap();
        let meta: Value = serde_json::from_str(&d.meta_data).unwrap();
        assert_eq!(meta["local-hostname"], "vm-1");
        assert!(meta["instance-id"]
            .as_str()
            .unwrap()
            .starts_with("iid-qemu-machine-"));
        let user = parse_user_data(&d.user_data);
        assert_eq!(user["hostname"], "vm-1");
        assert_eq!(user["manage_etc_hosts"], true);
        let u = &user["users"][0];
        assert_eq!(u["name"], "jumpstarter");
        assert_eq!(u["plain_text_passwd"], s.password.as_deref().unwrap());
        assert_eq!(u["lock_passwd"], false);
        assert_eq!(u["ssh_authorized_keys"][0], "ssh-ed25519 AAAAC3Nza k@h");
        assert_eq!(user["ssh_pwauth"], true);
        assert_eq!(d.network_config, None);
        // The same input gives the same instance id; another one a different id.
        assert_eq!(documents(&s).unwrap(), d);
        let mut other = s.clone();
        other.hostname = Some("vm-2".into());
        assert_ne!(documents(&other).unwrap().meta_data, d.meta_data);
    }

    #[test]
    fn without_a_user_the_default_user_gets_the_password_and_keys() {
        let s = CloudInitSpec {
            password: Some("pw".into()),
            ssh_authorized_keys: vec!["k".into()],
            instance_id: Some("fixed".into()),
            ..CloudInitSpec::default()
        };
        let d = documents(&s).unwrap();
        let user = parse_user_data(&d.user_data);
        assert_eq!(user["password"], "pw");
        assert_eq!(user["ssh_authorized_keys"][0], "k");
        assert!(user.get("users").is_none() && user.get("hostname").is_none());
        assert!(
            user.get("manage_etc_hosts").is_none(),
            "no host name, no hosts entry"
        );
        let meta: Value = serde_json::from_str(&d.meta_data).unwrap();
        assert_eq!(meta, json!({"instance-id": "fixed"}));
    }

    #[test]
    fn given_documents_are_used_as_given() {
        let s = CloudInitSpec {
            user_data: Some("#!/bin/sh\necho hi\n".into()),
            meta_data: Some("instance-id: mine\n".into()),
            network_config: Some("version: 2\nethernets: {}\n".into()),
            ..CloudInitSpec::default()
        };
        let d = documents(&s).unwrap();
        assert_eq!(d.user_data, "#!/bin/sh\necho hi\n");
        assert_eq!(d.meta_data, "instance-id: mine\n");
        assert_eq!(
            d.network_config.as_deref(),
            Some("version: 2\nethernets: {}\n")
        );
        let image = seed_image(&s).unwrap();
        assert_eq!(&image[43..54], b"CIDATA     ");
        let mut both = s.clone();
        both.username = Some("u".into());
        assert!(documents(&both)
            .unwrap_err()
            .to_string()
            .contains("user_data is given"));
    }

    #[test]
    fn bad_identities_are_named() {
        for bad in ["", "Root", "a b", "x:y", "1abc", &"a".repeat(33)] {
            let s = CloudInitSpec {
                username: Some(bad.into()),
                ..CloudInitSpec::default()
            };
            let e = documents(&s).unwrap_err().to_string();
            assert!(e.contains("cloud_init username"), "{bad}: {e}");
        }
        for good in ["a", "_svc", "dev-1", "machine$"] {
            let s = CloudInitSpec {
                username: Some(good.into()),
                ..CloudInitSpec::default()
            };
            documents(&s).unwrap();
        }
        let s = CloudInitSpec {
            hostname: Some("a\nb".into()),
            ..CloudInitSpec::default()
        };
        assert!(documents(&s).unwrap_err().to_string().contains("hostname"));
    }
}
