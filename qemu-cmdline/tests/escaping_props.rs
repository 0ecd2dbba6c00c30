//! Property tests: any value survives escaping. The argv the builder writes is parsed back with
//! a small re-implementation of QEMU's two option grammars (QemuOpts in util/qemu-option.c and
//! keyval in util/keyval.c, QEMU 7.2) and must give the original keys and values.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use proptest::prelude::*;
use qemu_cmdline::*;

/// QemuOpts' `get_opt_value`: up to a single comma; `,,` is a literal comma. Returns the value
/// and the rest after the separating comma.
fn qemuopts_value(s: &[u8]) -> (Vec<u8>, &[u8]) {
    let mut value = Vec::new();
    let mut i = 0;
    while i < s.len() {
        if s[i] == b',' {
            if s.get(i + 1) == Some(&b',') {
                value.push(b',');
                i += 2;
                continue;
            }
            return (value, &s[i + 1..]);
        }
        value.push(s[i]);
        i += 1;
    }
    (value, &[])
}

/// QemuOpts' `opts_do_parse`: `name=value` items; the first item may be an implied value when
/// no `=` comes before the first `,`; items without `=` after that are flags (`on`/`off`).
fn parse_qemuopts(mut s: &[u8], implied: Option<&str>) -> Items {
    let mut out = Vec::new();
    let mut first = implied;
    while !s.is_empty() {
        let len = s
            .iter()
            .position(|&b| b == b'=' || b == b',')
            .unwrap_or(s.len());
        if s.get(len) != Some(&b'=') {
            if let Some(name) = first {
                let (v, rest) = qemuopts_value(s);
                out.push((name.as_bytes().to_vec(), v));
                s = rest;
            } else {
                let name = s[..len].to_vec();
                let (name, value) = match name.strip_prefix(b"no") {
                    Some(n) => (n.to_vec(), b"off".to_vec()),
                    None => (name, b"on".to_vec()),
                };
                out.push((name, value));
                s = s.get(len + 1..).unwrap_or(&[]);
            }
        } else {
            let name = s[..len].to_vec();
            let (v, rest) = qemuopts_value(&s[len + 1..]);
            out.push((name, v));
            s = rest;
        }
        first = None;
    }
    out
}

/// keyval's `keyval_parse_one`, flattened: keys are dotted QAPI-name fragments; an implied
/// value runs to the first `,` or `=` with no unescaping; other values unescape `,,`.
/// Parsed `(key, value)` items in order.
type Items = Vec<(Vec<u8>, Vec<u8>)>;

fn parse_keyval(mut s: &[u8], implied: Option<&str>) -> Result<Items, String> {
    let mut out = Vec::new();
    let mut first = true;
    while !s.is_empty() {
        let len = s
            .iter()
            .position(|&b| b == b'=' || b == b',')
            .unwrap_or(s.len());
        if let Some(implied) = implied.filter(|_| first && len > 0 && s.get(len) != Some(&b'=')) {
            if &s[..len] == b"help" || &s[..len] == b"?" {
                return Err("help".into());
            }
            out.push((implied.as_bytes().to_vec(), s[..len].to_vec()));
            s = s.get(len + 1..).unwrap_or(&[]);
            first = false;
            continue;
        }
        first = false;
        // Key fragments.
        let key_end = s.iter().position(|&b| b == b'=').ok_or("Expected '='")?;
        let key = &s[..key_end];
        for (i, frag) in key.split(|&b| b == b'.').enumerate() {
            let frag = std::str::from_utf8(frag).map_err(|_| "key not UTF-8")?;
            let index = i > 0 && !frag.is_empty() && frag.bytes().all(|b| b.is_ascii_digit());
            if !index && !is_qapi_name(frag) {
                return Err(format!("Invalid parameter '{frag}'"));
            }
        }
        // The value.
        let mut value = Vec::new();
        let mut i = key_end + 1;
        loop {
            if i >= s.len() {
                break;
            } else if s[i] == b',' {
                i += 1;
                if s.get(i) != Some(&b',') {
                    break;
                }
            }
            value.push(s[i]);
            i += 1;
        }
        out.push((key.to_vec(), value));
        s = s.get(i..).unwrap_or(&[]);
    }
    Ok(out)
}

/// Splits a line into words the way a POSIX shell (bash for `$'...'`) reads the forms
/// `shell_quote` writes: bare words, `'...'`, `\'` between them, and `$'...'` with escapes.
fn shell_split(line: &str) -> Vec<Vec<u8>> {
    let b = line.as_bytes();
    let mut words = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let mut word = Vec::new();
        while i < b.len() && b[i] != b' ' {
            if b[i..].starts_with(b"$'") {
                i += 2;
                while b[i] != b'\'' {
                    if b[i] == b'\\' {
                        match b[i + 1] {
                            b'n' => word.push(b'\n'),
                            b't' => word.push(b'\t'),
                            b'r' => word.push(b'\r'),
                            b'\\' => word.push(b'\\'),
                            b'\'' => word.push(b'\''),
                            b'x' => {
                                let hex = std::str::from_utf8(&b[i + 2..i + 4]).unwrap();
                                word.push(u8::from_str_radix(hex, 16).unwrap());
                                i += 2;
                            }
                            other => panic!("unexpected escape {other}"),
                        }
                        i += 2;
                    } else {
                        word.push(b[i]);
                        i += 1;
                    }
                }
                i += 1;
            } else if b[i] == b'\'' {
                i += 1;
                while b[i] != b'\'' {
                    word.push(b[i]);
                    i += 1;
                }
                i += 1;
            } else if b[i..].starts_with(b"\\'") {
                word.push(b'\'');
                i += 2;
            } else {
                assert!(
                    b[i].is_ascii_alphanumeric() || b"_@%+=:,./-".contains(&b[i]),
                    "unsafe bare byte {:?} in {line:?}",
                    b[i] as char
                );
                word.push(b[i]);
                i += 1;
            }
        }
        words.push(word);
        i += 1;
    }
    words
}

/// Strings rich in the characters that matter: commas, '=', spaces, quotes, dots, non-ASCII.
fn tricky_string() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            3 => Just(','),
            2 => Just('='),
            1 => Just(' '),
            1 => Just('.'),
            1 => Just('"'),
            1 => Just('\''),
            1 => Just('\\'),
            1 => Just('é'),
            1 => Just('\u{1F600}'),
            4 => any::<char>().prop_filter("no NUL", |c| *c != '\0'),
        ],
        0..24,
    )
    .prop_map(|v| v.into_iter().collect())
}

fn tricky_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![3 => Just(b','), 1 => Just(b'='), 1 => Just(0xff), 4 => 1u8..=255],
        1..24,
    )
}

fn qapi_key() -> impl Strategy<Value = String> {
    "[A-Za-z][A-Za-z0-9_-]{0,8}"
}

fn distinct_keys(n: usize) -> impl Strategy<Value = Vec<String>> {
    prop::collection::btree_set(qapi_key().prop_filter("not id", |k| k != "id"), 0..n)
        .prop_map(|s| s.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn escaped_values_parse_back(value in tricky_bytes()) {
        let value = OsString::from_vec(value);
        let escaped = escape_value(&value);
        let (back, rest) = qemuopts_value(escaped.as_bytes());
        prop_assert_eq!(back, value.as_bytes());
        prop_assert!(rest.is_empty());
    }

    #[test]
    fn device_props_round_trip_through_qemuopts(
        driver in tricky_string(),
        keys in distinct_keys(6),
        values in prop::collection::vec(tricky_string(), 6),
    ) {
        let mut dev = Device::new(driver.clone());
        for (k, v) in keys.iter().zip(&values) {
            dev = dev.prop(k.as_str(), v.as_str());
        }
        let mut cmd = CommandLine::new("qemu");
        cmd.device(dev);
        let argv = cmd.build().unwrap();
        prop_assert_eq!(argv.args.len(), 2);
        let parsed = parse_qemuopts(argv.args[1].as_bytes(), Some("driver"));
        let mut expected = vec![(b"driver".to_vec(), driver.into_bytes())];
        for (k, v) in keys.iter().zip(&values) {
            expected.push((k.clone().into_bytes(), v.clone().into_bytes()));
        }
        prop_assert_eq!(parsed, expected);
    }

    #[test]
    fn object_props_round_trip_through_keyval(
        qom_type in tricky_string(),
        keys in distinct_keys(6),
        values in prop::collection::vec(tricky_string(), 6),
    ) {
        let mut obj = Object::new(qom_type.clone(), "obj0");
        for (k, v) in keys.iter().zip(&values) {
            obj = obj.prop(k.as_str(), v.as_str());
        }
        let mut cmd = CommandLine::new("qemu");
        cmd.object(obj);
        let argv = cmd.build().unwrap();
        let parsed = parse_keyval(argv.args[1].as_bytes(), Some("qom-type")).unwrap();
        let mut expected = vec![
            (b"qom-type".to_vec(), qom_type.into_bytes()),
            (b"id".to_vec(), b"obj0".to_vec()),
        ];
        for (k, v) in keys.iter().zip(&values) {
            expected.push((k.clone().into_bytes(), v.clone().into_bytes()));
        }
        prop_assert_eq!(parsed, expected);
    }

    #[test]
    fn machine_type_and_props_round_trip_through_keyval(
        machine_type in tricky_string(),
        value in tricky_string(),
    ) {
        let mut cmd = CommandLine::new("qemu");
        cmd.machine(Machine::new(machine_type.clone()).prop("memory-backend", value.as_str()));
        let argv = cmd.build().unwrap();
        let parsed = parse_keyval(argv.args[1].as_bytes(), Some("type")).unwrap();
        prop_assert_eq!(parsed, vec![
            (b"type".to_vec(), machine_type.into_bytes()),
            (b"memory-backend".to_vec(), value.into_bytes()),
        ]);
    }

    #[test]
    fn disk_paths_round_trip_through_keyval(path in tricky_bytes(), overlay in tricky_bytes()) {
        let path = OsString::from_vec(path);
        let overlay = OsString::from_vec(overlay);
        let mut cmd = CommandLine::new("qemu");
        cmd.disk(Disk::new("d", &path).format(Format::Qcow2).snapshot(&overlay).cache(CacheMode::None));
        let argv = cmd.build().unwrap();
        let nodes: Vec<_> = argv.args.chunks(2).filter(|p| p[0] == "-blockdev").map(|p| {
            parse_keyval(p[1].as_bytes(), None).unwrap()
        }).collect();
        let get = |node: &Vec<(Vec<u8>, Vec<u8>)>, k: &str| {
            node.iter().find(|(key, _)| key == k.as_bytes()).map(|(_, v)| v.clone())
        };
        prop_assert_eq!(get(&nodes[0], "filename"), Some(path.as_bytes().to_vec()));
        prop_assert_eq!(get(&nodes[0], "cache.direct"), Some(b"on".to_vec()));
        prop_assert_eq!(get(&nodes[2], "filename"), Some(overlay.as_bytes().to_vec()));
        prop_assert_eq!(get(&nodes[3], "backing"), Some(b"d-base".to_vec()));
    }

    #[test]
    fn chardev_and_netdev_values_round_trip_through_qemuopts(
        path in tricky_string(),
        hostname in tricky_string(),
    ) {
        let mut cmd = CommandLine::new("qemu");
        cmd.chardev(Chardev::file("c", path.clone()))
            .nic(Nic::new("n", NetBackend::User(UserNet { hostname: Some(hostname.clone()), ..UserNet::default() }))
                .forward(PortForward::tcp(2222, 22)).forward(PortForward::udp(2223, 53)));
        let argv = cmd.build().unwrap();
        let chardev = parse_qemuopts(argv.args[1].as_bytes(), Some("backend"));
        prop_assert_eq!(chardev, vec![
            (b"backend".to_vec(), b"file".to_vec()),
            (b"id".to_vec(), b"c".to_vec()),
            (b"path".to_vec(), path.into_bytes()),
        ]);
        let netdev = parse_qemuopts(argv.args[3].as_bytes(), Some("type"));
        prop_assert_eq!(netdev, vec![
            (b"type".to_vec(), b"user".to_vec()),
            (b"id".to_vec(), b"n".to_vec()),
            (b"hostname".to_vec(), hostname.into_bytes()),
            (b"hostfwd".to_vec(), b"tcp:127.0.0.1:2222-:22".to_vec()),
            (b"hostfwd".to_vec(), b"udp:127.0.0.1:2223-:53".to_vec()),
        ]);
    }

    #[test]
    fn json_syntax_carries_any_utf8(
        path in tricky_string(),
        keys in distinct_keys(4),
        values in prop::collection::vec(tricky_string(), 4),
    ) {
        let mut dev = Device::new("virtio-blk-pci").prop("drive", "d");
        for (k, v) in keys.iter().zip(&values) {
            if k != "drive" {
                dev = dev.prop(k.as_str(), v.as_str());
            }
        }
        let mut cmd = CommandLine::new("qemu");
        cmd.json_syntax(true)
            .blockdev(Blockdev::new("file", "d").prop("filename", path.as_str()))
            .device(dev);
        let argv = cmd.build().unwrap();
        let node: serde_json::Value = serde_json::from_slice(argv.args[1].as_bytes()).unwrap();
        prop_assert_eq!(node["filename"].as_str(), Some(path.as_str()));
        let dev: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(argv.args[3].as_bytes()).unwrap();
        for (k, v) in keys.iter().zip(&values) {
            if k != "drive" {
                prop_assert_eq!(dev[k].as_str(), Some(v.as_str()));
            }
        }
    }

    #[test]
    fn a_nul_anywhere_is_an_error_never_an_argv(
        before in tricky_string(),
        after in tricky_string(),
        place in 0usize..4,
    ) {
        let bad = format!("{before}\0{after}");
        let mut cmd = CommandLine::new("qemu");
        match place {
            0 => { cmd.disk(Disk::new("d", &bad)); }
            1 => { cmd.device(Device::new("x").prop("serial", bad.as_str())); }
            2 => { cmd.name(bad.as_str()); }
            _ => { cmd.kernel("/k").append(&bad); }
        }
        let e = cmd.build().unwrap_err();
        prop_assert!(matches!(e, Error::NulByte { .. }), "{}", e);
    }

    #[test]
    fn keys_are_accepted_exactly_when_they_are_qapi_names(key in tricky_string()) {
        prop_assume!(key != "id");
        let mut cmd = CommandLine::new("qemu");
        cmd.device(Device::new("x").prop(key.as_str(), 1u8));
        let ok = cmd.build().is_ok();
        prop_assert_eq!(ok, is_qapi_name(&key));
        if !ok {
            let is_invalid_key = matches!(cmd.build().unwrap_err(), Error::InvalidKey { .. });
            prop_assert!(is_invalid_key);
        }
    }

    #[test]
    fn shell_quoting_reads_back(words in prop::collection::vec(tricky_bytes(), 1..5), plain in tricky_string()) {
        let mut argv: Vec<OsString> = words.into_iter().map(OsString::from_vec).collect();
        argv.push(plain.into());
        argv.push(OsString::new());
        let quoted = shell_quote(&argv);
        let back: Vec<Vec<u8>> = argv.iter().map(|a| a.as_bytes().to_vec()).collect();
        prop_assert_eq!(shell_split(&quoted), back);
    }
}

#[test]
fn parsers_agree_with_known_qemu_behaviour() {
    // Hand-checked against QEMU 7.2's parsers.
    assert_eq!(
        parse_qemuopts(b"virtio-blk-pci,drive=a,,b,bootindex=1", Some("driver")),
        [
            (b"driver".to_vec(), b"virtio-blk-pci".to_vec()),
            (b"drive".to_vec(), b"a,b".to_vec()),
            (b"bootindex".to_vec(), b"1".to_vec()),
        ]
    );
    assert_eq!(
        parse_qemuopts(b"server,nowait", None),
        [
            (b"server".to_vec(), b"on".to_vec()),
            (b"wait".to_vec(), b"off".to_vec())
        ]
    );
    // The naive, unescaped form of a path with a comma is misread: the bug class this crate
    // removes.
    assert_eq!(
        parse_keyval(b"driver=file,filename=/a,b.img", None),
        Err("Expected '='".to_string())
    );
    assert_eq!(
        parse_keyval(b"driver=file,filename=/a,x=b.img", None).unwrap()[1],
        (b"filename".to_vec(), b"/a".to_vec())
    );
    // keyval does not unescape an implied value: "a,,b" is "a" and then an empty key.
    assert!(parse_keyval(b"a,,b", Some("type")).is_err());
    assert_eq!(
        parse_keyval(b"type=a,,b", Some("type")).unwrap(),
        [(b"type".to_vec(), b"a,b".to_vec())]
    );
    assert!(parse_keyval(b"help", Some("type")).is_err());
}
