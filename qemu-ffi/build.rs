//! The soname of the shared library: `libqemumachine.so.0.1` for every 0.1.x, and
//! `libqemumachine.so.N` from N.0 on. It is the part of the version that changes when the ABI
//! may break, as Cargo's semver rules say of versions before 1.0 (0.1 → 0.2 may break, 0.1.0 →
//! 0.1.1 may not); a soname of `.so.0` would let a program built against 0.1 load 0.2 and
//! break. The installed file carries the full version (`libqemumachine.so.0.1.0`) beside the
//! soname link and the development link `libqemumachine.so` (see `scripts/install-lib.sh`).
//!
//! Which symbols are exported is rustc's business: for a cdylib it passes the linker a version
//! script of its own that exports exactly the `#[no_mangle] extern "C"` functions, all named
//! `qm_*` (`tests/header.rs` checks the exports against the header). A second version script
//! here (for `qm_*` by pattern, or symbol versions) is not possible: GNU ld refuses two
//! anonymous version scripts ("anonymous version tag cannot be combined with other version
//! tags"), and rust-lld keeps rustc's, giving no symbol versions either.

use std::env;

fn main() {
    let major = env::var("CARGO_PKG_VERSION_MAJOR").expect("cargo sets CARGO_PKG_VERSION_MAJOR");
    let minor = env::var("CARGO_PKG_VERSION_MINOR").expect("cargo sets CARGO_PKG_VERSION_MINOR");
    let abi = if major == "0" {
        format!("0.{minor}")
    } else {
        major
    };
    // ELF targets, whose linkers (GNU ld, gold, lld) all take -soname.
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if matches!(
        os.as_str(),
        "linux" | "android" | "freebsd" | "netbsd" | "openbsd" | "dragonfly"
    ) {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libqemumachine.so.{abi}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
