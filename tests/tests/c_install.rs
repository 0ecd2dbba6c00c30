//! libqemumachine as `scripts/install-lib.sh` installs it: the example program of
//! `qemu-ffi/README.md` is built against the installed tree with pkg-config, with a plain
//! `cc -lqemumachine` and with CMake's `find_package(qemumachine)`, each shared and static,
//! and each program runs against a real QEMU. The shared ones load the library by its soname.

use std::path::Path;
use std::process::Command;

use qemu_machine_tests::clib::{
    check_installed_tree, cmake_build, dynamic_entries, expected_soname, is_static, pkg_config,
    readme_c_example, run_example, run_ok, with_prefix, TempDir,
};
use qemu_machine_tests::workspace_root;

fn compile(what: &str, out: &Path, source: &Path, flags: &[std::ffi::OsString]) {
    run_ok(
        what,
        qemu_machine_tests::clib::cc()
            .args(["-Wall", "-Wextra", "-Werror", "-std=c11"])
            .arg(source)
            .arg("-o")
            .arg(out)
            .args(flags),
    );
}

fn assert_loads_by_soname(what: &str, program: &Path) {
    let needed = dynamic_entries(program, "NEEDED");
    assert!(
        needed.contains(&expected_soname()),
        "{what}: NEEDED {needed:?} lacks {}",
        expected_soname()
    );
}

fn assert_static(what: &str, program: &Path) {
    assert!(is_static(program), "{what}: not a static executable");
}

fn assert_no_libqemumachine(what: &str, program: &Path) {
    let needed = dynamic_entries(program, "NEEDED");
    assert!(
        !needed.iter().any(|n| n.starts_with("libqemumachine")),
        "{what}: linked the shared library: NEEDED {needed:?}"
    );
}

#[test]
fn the_readme_example_builds_against_the_installed_library_every_way() {
    let tmp = TempDir::new("c-install");
    let prefix = tmp.path().join("prefix");
    run_ok(
        "scripts/install-lib.sh",
        Command::new("bash")
            .arg(workspace_root().join("scripts/install-lib.sh"))
            .arg("--debug")
            .arg(&prefix),
    );
    check_installed_tree(&prefix, "lib");
    let lib = prefix.join("lib");
    let source = tmp.path().join("app.c");
    std::fs::write(&source, readme_c_example()).unwrap();
    let rpath = with_prefix("-Wl,-rpath,", &lib);

    // pkg-config, shared: the loader finds the soname through the rpath.
    let pc = lib.join("pkgconfig");
    let exe = tmp.path().join("pc_shared");
    let mut flags: Vec<_> = pkg_config(&pc, None, &["--cflags", "--libs"])
        .into_iter()
        .map(Into::into)
        .collect();
    flags.push(rpath.clone());
    compile("pkg-config shared", &exe, &source, &flags);
    assert_loads_by_soname("pkg-config shared", &exe);
    run_example("pkg-config shared", &exe);

    // pkg-config, static: Libs.private has what the archive needs besides libc.
    let exe = tmp.path().join("pc_static");
    let mut flags: Vec<std::ffi::OsString> = vec!["-static".into()];
    flags.extend(
        pkg_config(&pc, None, &["--static", "--cflags", "--libs"])
            .into_iter()
            .map(Into::into),
    );
    compile("pkg-config static", &exe, &source, &flags);
    assert_static("pkg-config static", &exe);
    run_example("pkg-config static", &exe);

    // A plain cc -lqemumachine, shared and static.
    let include = with_prefix("-I", &prefix.join("include"));
    let libpath = with_prefix("-L", &lib);
    let exe = tmp.path().join("cc_shared");
    compile(
        "cc -l shared",
        &exe,
        &source,
        &[
            include.clone(),
            libpath.clone(),
            "-lqemumachine".into(),
            rpath,
        ],
    );
    assert_loads_by_soname("cc -l shared", &exe);
    run_example("cc -l shared", &exe);
    let exe = tmp.path().join("cc_static");
    let mut flags = vec!["-static".into(), include, libpath, "-lqemumachine".into()];
    flags.extend(["-lutil", "-lrt", "-lpthread", "-lm", "-ldl"].map(Into::into));
    compile("cc -l static", &exe, &source, &flags);
    assert_static("cc -l static", &exe);
    run_example("cc -l static", &exe);

    // CMake, from the tree moved elsewhere: its package finds the files relative to itself.
    let moved = tmp.path().join("moved");
    std::fs::rename(&prefix, &moved).unwrap();
    let (shared, static_) = cmake_build(tmp.path(), &moved, &readme_c_example());
    assert_loads_by_soname("cmake qemumachine::qemumachine", &shared);
    run_example("cmake qemumachine::qemumachine", &shared);
    assert_no_libqemumachine("cmake qemumachine::qemumachine_static", &static_);
    run_example("cmake qemumachine::qemumachine_static", &static_);
}
