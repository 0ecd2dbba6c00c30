//! The committed C header is exactly what cbindgen generates from this crate, its version macros
//! match Cargo.toml, and the built shared library exports exactly the header's functions.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn header_path() -> PathBuf {
    crate_dir().join("../include/qemumachine.h")
}

fn generate() -> String {
    let dir = crate_dir();
    let mut config =
        cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml parses");
    config.after_includes = Some(format!(
        "\n/* The version of the header; compare QM_VERSION_NUMBER with qm_version() at run time. */\n\
         #define QM_VERSION_MAJOR {}\n\
         #define QM_VERSION_MINOR {}\n\
         #define QM_VERSION_PATCH {}\n\
         #define QM_VERSION_NUMBER ((QM_VERSION_MAJOR * 10000) + (QM_VERSION_MINOR * 100) + QM_VERSION_PATCH)\n",
        env!("CARGO_PKG_VERSION_MAJOR"),
        env!("CARGO_PKG_VERSION_MINOR"),
        env!("CARGO_PKG_VERSION_PATCH"),
    ));
    let mut out = Vec::new();
    cbindgen::Builder::new()
        .with_crate(&dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header")
        .write(&mut out);
    String::from_utf8(out).expect("header is UTF-8")
}

#[test]
fn header_is_up_to_date() {
    let generated = generate();
    let path = header_path();
    if std::env::var_os("QM_UPDATE_HEADER").is_some() {
        std::fs::write(&path, &generated).expect("write header");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "include/qemumachine.h is stale: regenerate it with \
         `QM_UPDATE_HEADER=1 cargo test -p qemu-ffi --test header` and commit it"
    );
}

fn macro_value(header: &str, name: &str) -> u32 {
    let prefix = format!("#define {name} ");
    header
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("{name} missing from the header"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{name} is not a number: {e}"))
}

#[test]
fn version_macros_match_cargo_and_qm_version() {
    let header = std::fs::read_to_string(header_path()).expect("read header");
    let major = macro_value(&header, "QM_VERSION_MAJOR");
    let minor = macro_value(&header, "QM_VERSION_MINOR");
    let patch = macro_value(&header, "QM_VERSION_PATCH");
    assert_eq!(
        format!("{major}.{minor}.{patch}"),
        env!("CARGO_PKG_VERSION"),
        "header version differs from Cargo.toml"
    );
    assert_eq!(
        qemumachine::version::qm_version(),
        major * 10000 + minor * 100 + patch
    );
    // SAFETY: qm_version_string returns a static NUL-terminated string.
    let s = unsafe { std::ffi::CStr::from_ptr(qemumachine::version::qm_version_string()) };
    assert_eq!(s.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
}

/// The functions the header declares: every `qm_name(` outside comments.
fn header_functions(header: &str) -> BTreeSet<String> {
    let code: String = header
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut names = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find("qm_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let preceded_ok = i == 0 || !rest.as_bytes()[i - 1].is_ascii_alphanumeric();
        if preceded_ok && tail[end..].starts_with('(') {
            names.insert(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    names
}

fn built_library() -> PathBuf {
    // The test binary lives in <target>/<profile>/deps, beside the library `cargo test` builds
    // with all of its crate types; `cargo build` also copies it up to <target>/<profile>.
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("deps dir");
    let beside = deps.join("libqemumachine.so");
    if beside.exists() {
        return beside;
    }
    deps.parent()
        .unwrap_or(Path::new("."))
        .join("libqemumachine.so")
}

#[test]
fn exported_symbols_are_exactly_the_header_functions() {
    let header = std::fs::read_to_string(header_path()).expect("read header");
    let declared = header_functions(&header);
    assert!(
        declared.contains("qm_version"),
        "parser found no functions: {declared:?}"
    );
    let lib = built_library();
    assert!(lib.exists(), "{} was not built", lib.display());
    let out = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(&lib)
        .output()
        .expect("run nm (binutils)");
    assert!(
        out.status.success(),
        "nm failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exported: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let _addr = parts.next()?;
            let kind = parts.next()?;
            let name = parts.next()?;
            (kind == "T").then(|| name.split('@').next().unwrap_or(name).to_string())
        })
        .collect();
    let missing: Vec<_> = declared.difference(&exported).collect();
    let extra: Vec<_> = exported.difference(&declared).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "declared but not exported: {missing:?}; exported but not declared: {extra:?}"
    );
}

/// Every exported symbol is a `qm_` function (rustc exports exactly the `#[no_mangle]`
/// functions; see build.rs for why there is no version script of our own), and the library
/// carries the soname of its ABI: `libqemumachine.so.0.MINOR` before 1.0, `.so.MAJOR` after.
#[test]
fn the_shared_library_exports_only_qm_functions_under_its_abi_soname() {
    let lib = built_library();
    let out = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(&lib)
        .output()
        .expect("run nm (binutils)");
    let text = String::from_utf8_lossy(&out.stdout);
    let foreign: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .filter(|name| !name.starts_with("qm_"))
        .collect();
    assert!(
        out.status.success() && text.contains(" qm_version"),
        "nm -D {}: {text}",
        lib.display()
    );
    assert!(foreign.is_empty(), "exported besides qm_*: {foreign:?}");

    let out = Command::new("readelf")
        .arg("-d")
        .arg(&lib)
        .output()
        .expect("run readelf (binutils)");
    let text = String::from_utf8_lossy(&out.stdout);
    let soname = text
        .lines()
        .find(|l| l.contains("(SONAME)"))
        .and_then(|l| Some(&l[l.find('[')? + 1..l.rfind(']')?]));
    let expected = if env!("CARGO_PKG_VERSION_MAJOR") == "0" {
        format!("libqemumachine.so.0.{}", env!("CARGO_PKG_VERSION_MINOR"))
    } else {
        format!("libqemumachine.so.{}", env!("CARGO_PKG_VERSION_MAJOR"))
    };
    assert_eq!(soname, Some(expected.as_str()), "{}", lib.display());
}

/// C source with its comments, string literals and character literals blanked out, so that
/// only code is left to search.
fn c_code_only(source: &str) -> String {
    let bytes = source.as_bytes();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < bytes.len() {
        let rest = &source[i..];
        if let Some(comment) = rest.strip_prefix("/*") {
            let end = comment.find("*/").map_or(rest.len(), |e| e + 4);
            out.push(' ');
            i += end;
        } else if rest.starts_with("//") {
            i += rest.find('\n').unwrap_or(rest.len());
        } else if bytes[i] == b'"' || bytes[i] == b'\'' {
            let quote = bytes[i];
            i += 1;
            while i < bytes.len() && bytes[i] != quote && bytes[i] != b'\n' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// The identifiers called (followed by `(`) in C code.
fn c_calls(code: &str) -> BTreeSet<String> {
    let mut calls = BTreeSet::new();
    let mut ident = String::new();
    let mut after_ident = false;
    for c in code.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            if after_ident {
                ident.clear();
                after_ident = false;
            }
            ident.push(c);
        } else if c.is_whitespace() && !ident.is_empty() {
            after_ident = true;
        } else {
            if c == '(' && !ident.is_empty() {
                calls.insert(std::mem::take(&mut ident));
            }
            ident.clear();
            after_ident = false;
        }
    }
    calls
}

#[test]
fn c_call_finder_sees_calls_not_comments_or_strings() {
    let code = c_code_only(
        "/* qm_a(x) */ int x = qm_b (1); // qm_c()\n\
         puts(\"qm_d()\"); char q = '('; qm_e\n(2); qm_f;",
    );
    let calls = c_calls(&code);
    for name in ["qm_b", "puts", "qm_e"] {
        assert!(calls.contains(name), "{name} missing from {calls:?}");
    }
    for name in ["qm_a", "qm_c", "qm_d", "qm_f"] {
        assert!(!calls.contains(name), "{name} wrongly found in {calls:?}");
    }
}

/// Each function of the header is called by a C test (`tests/c/*.c`): a function added to the
/// C API needs a test in C as well as in Rust.
#[test]
fn every_header_function_is_called_by_a_c_test() {
    let header = std::fs::read_to_string(header_path()).expect("read header");
    let declared = header_functions(&header);
    let dir = crate_dir().join("../tests/c");
    let mut called = BTreeSet::new();
    let mut sources = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("read tests/c") {
        let path = entry.expect("read tests/c").path();
        if path.extension().is_some_and(|e| e == "c") {
            let text = std::fs::read_to_string(&path).expect("read a C test");
            called.extend(c_calls(&c_code_only(&text)));
            sources.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    assert!(
        sources.iter().any(|s| s == "qm_test.c"),
        "no qm_test.c in {}",
        dir.display()
    );
    let uncalled: Vec<&String> = declared.difference(&called).collect();
    assert!(
        uncalled.is_empty(),
        "header functions no C test calls (in tests/c: {sources:?}): {uncalled:?}; \
         call each from tests/c/qm_test.c and check what it does"
    );
}

/// The defaults the header's comments name are the ones the library uses: a change to either
/// must change the other. (The 30 s waits are also observed for real in `tests/rules.rs`.)
#[test]
fn the_defaults_the_header_names_are_the_librarys() {
    use std::time::Duration;
    let header = std::fs::read_to_string(header_path()).expect("read header");
    let flat = header
        .lines()
        .map(|l| l.trim_start().trim_start_matches("//").trim())
        .collect::<Vec<_>>()
        .join(" ");
    for (text, holds) in [
        (
            "a launch timeout and a QMP command timeout of 30 s each",
            qemu_process::DEFAULT_LAUNCH_TIMEOUT == Duration::from_secs(30)
                && qemu_process::DEFAULT_QMP_TIMEOUT == Duration::from_secs(30),
        ),
        (
            "at most 65536 kept events",
            qemu_process::DEFAULT_MAX_EVENTS == 65536,
        ),
        (
            "`max_events`, 65536 by default",
            qemu_process::DEFAULT_MAX_EVENTS == 65536,
        ),
        (
            "`console_buffer_bytes`, 1 MiB by default",
            qemu_process::DEFAULT_CONSOLE_BUFFER == 1 << 20,
        ),
        (
            "bound of console input (64 KiB)",
            qemu_process::DEFAULT_CONSOLE_INPUT_BUFFER == 64 << 10,
        ),
    ] {
        assert!(flat.contains(text), "the header no longer says {text:?}");
        assert!(
            holds,
            "the header says {text:?}, the library does otherwise"
        );
    }
}
