//! The Debian packages `scripts/build-deb.sh` makes (from a `--debug` build: quicker to make,
//! and the packaging is the same), used as a Debian user would:
//!
//! - apt resolves their dependencies against this machine (`apt-get install --simulate`,
//!   which changes nothing);
//! - `dpkg --root` installs them into a private tree with its own dpkg database, so nothing of
//!   this machine's is touched, and tests in parallel are not disturbed;
//! - the README's C example builds against the installed files with pkg-config and CMake,
//!   shared and static, and runs; the installed `qemu-machine` runs the built-in VM for 2 s;
//!   the man pages and completions are the generated ones, and bash loads its completion;
//! - `dpkg --purge` removes every file again.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use qemu_machine_tests::clib::{
    check_installed_tree, cmake_build, dynamic_entries, expected_soname, is_static, pkg_config,
    readme_c_example, run_example, run_ok, with_prefix, TempDir,
};
use qemu_machine_tests::{find_program, qemu_system_x86_64, workspace_root};

fn dpkg(root: &Path) -> Command {
    let mut cmd = Command::new(find_program("dpkg").expect("dpkg missing: not a Debian system?"));
    cmd.arg(with_prefix("--root=", root))
        .arg("--force-not-root")
        .stdin(Stdio::null());
    cmd
}

fn multiarch() -> String {
    let out = run_ok(
        "dpkg-architecture",
        Command::new("dpkg-architecture").arg("-qDEB_HOST_MULTIARCH"),
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn the_debian_packages_install_build_against_run_and_remove() {
    qemu_system_x86_64();
    let tmp = TempDir::new("deb");
    let out_dir = tmp.path().join("debs");
    let built = run_ok(
        "scripts/build-deb.sh",
        Command::new("bash")
            .arg(workspace_root().join("scripts/build-deb.sh"))
            .arg("--debug")
            .arg(&out_dir),
    );
    let debs: Vec<PathBuf> = String::from_utf8_lossy(&built.stdout)
        .lines()
        .map(PathBuf::from)
        .collect();
    let abi = expected_soname()
        .trim_start_matches("libqemumachine.so.")
        .to_string();
    let names: Vec<String> = debs
        .iter()
        .map(|d| {
            let out = run_ok(
                "dpkg-deb",
                Command::new("dpkg-deb").arg("-f").arg(d).arg("Package"),
            );
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        })
        .collect();
    assert_eq!(
        names,
        [
            format!("libqemumachine{abi}"),
            "libqemumachine-dev".into(),
            "qemu-machine".into()
        ]
    );
    let depends = run_ok(
        "dpkg-deb",
        Command::new("dpkg-deb")
            .arg("-f")
            .arg(&debs[2])
            .arg("Depends"),
    );
    let depends = String::from_utf8_lossy(&depends.stdout);
    assert!(
        depends.contains("libc6") && depends.contains("qemu-system-x86 | qemu-system"),
        "qemu-machine Depends: {depends}"
    );

    // apt can install them on this machine: every dependency resolves.
    let apt = find_program("apt-get").expect("apt-get missing");
    let sim = run_ok(
        "apt-get install --simulate",
        Command::new(apt)
            .args(["install", "--simulate", "-q"])
            .args(&debs)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null()),
    );
    let sim = String::from_utf8_lossy(&sim.stdout);
    for name in &names {
        assert!(sim.contains(&format!("Inst {name} ")), "apt: {sim}");
    }

    // Installed into a private root with its own dpkg database. --force-depends: that
    // database knows none of this machine's packages (libc6, QEMU); apt checked them above.
    let root = tmp.path().join("root");
    let admin = root.join("var/lib/dpkg");
    for dir in ["info", "updates", "triggers"] {
        std::fs::create_dir_all(admin.join(dir)).unwrap();
    }
    std::fs::write(admin.join("status"), "").unwrap();
    std::fs::write(admin.join("available"), "").unwrap();
    run_ok(
        "dpkg -i",
        dpkg(&root).args(["--force-depends", "-i"]).args(&debs),
    );
    let status = run_ok("dpkg -s", dpkg(&root).args(["-s"]).args(&names));
    let status = String::from_utf8_lossy(&status.stdout);
    assert_eq!(
        status.matches("Status: install ok installed").count(),
        3,
        "{status}"
    );

    let usr = root.join("usr");
    let libdir = format!("lib/{}", multiarch());
    check_installed_tree(&usr, &libdir);
    let lib = usr.join(&libdir);

    // The C example, with pkg-config (the tree as sysroot) and CMake, shared and static.
    let source = tmp.path().join("app.c");
    std::fs::write(&source, readme_c_example()).unwrap();
    let pc = lib.join("pkgconfig");
    for (what, static_) in [
        ("deb pkg-config shared", false),
        ("deb pkg-config static", true),
    ] {
        let exe = tmp
            .path()
            .join(if static_ { "pc_static" } else { "pc_shared" });
        let mut args = vec!["--cflags", "--libs"];
        let mut cc = qemu_machine_tests::clib::cc();
        if static_ {
            args.insert(0, "--static");
            cc.arg("-static");
        } else {
            cc.arg(with_prefix("-Wl,-rpath,", &lib));
        }
        run_ok(
            what,
            cc.args(["-Wall", "-Wextra", "-Werror", "-std=c11"])
                .arg(&source)
                .arg("-o")
                .arg(&exe)
                .args(pkg_config(&pc, Some(&root), &args)),
        );
        if static_ {
            assert!(is_static(&exe), "{what}: not static");
        } else {
            assert!(
                dynamic_entries(&exe, "NEEDED").contains(&expected_soname()),
                "{what}: does not load {}",
                expected_soname()
            );
        }
        run_example(what, &exe);
    }
    let (shared, static_) = cmake_build(tmp.path(), &usr, &readme_c_example());
    assert!(dynamic_entries(&shared, "NEEDED").contains(&expected_soname()));
    run_example("deb cmake qemumachine::qemumachine", &shared);
    run_example("deb cmake qemumachine::qemumachine_static", &static_);

    // The installed command.
    let bin = usr.join("bin/qemu-machine");
    let version = run_ok(
        "qemu-machine --version",
        Command::new(&bin).arg("--version"),
    );
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("qemu-machine {}", env!("CARGO_PKG_VERSION"))
    );
    run_ok(
        "qemu-machine run --for 2s",
        Command::new(&bin)
            .args(["run", "--for", "2s"])
            .stdin(Stdio::null())
            .env_remove("RUST_LOG"),
    );

    // Man pages and completions: the generated ones, where man and the shells look.
    let dist = workspace_root().join("qemu-cli/dist");
    let man1 = usr.join("share/man/man1");
    let mut pages = 0;
    for entry in std::fs::read_dir(dist.join("man")).unwrap() {
        let page = entry.unwrap().path();
        let name = page.file_name().unwrap().to_string_lossy().into_owned();
        let gz = man1.join(format!("{name}.gz"));
        let text = run_ok("gzip -dc", Command::new("gzip").arg("-dc").arg(&gz));
        assert!(
            text.stdout == std::fs::read(&page).unwrap(),
            "{} is not {}",
            gz.display(),
            page.display()
        );
        pages += 1;
    }
    assert!(pages >= 5, "only {pages} man pages");
    for (installed, generated) in [
        (
            "share/bash-completion/completions/qemu-machine",
            "qemu-machine.bash",
        ),
        (
            "share/zsh/vendor-completions/_qemu-machine",
            "_qemu-machine",
        ),
        (
            "share/fish/vendor_completions.d/qemu-machine.fish",
            "qemu-machine.fish",
        ),
    ] {
        assert!(
            std::fs::read(usr.join(installed)).ok()
                == std::fs::read(dist.join("completions").join(generated)).ok(),
            "{installed} is not the generated {generated}"
        );
    }
    let bash = find_program("bash").expect("bash");
    let complete = run_ok(
        "bash completion",
        Command::new(bash).args(["--norc", "-c"]).arg(format!(
            "source '{}' && complete -p qemu-machine",
            usr.join("share/bash-completion/completions/qemu-machine")
                .display()
        )),
    );
    assert!(
        String::from_utf8_lossy(&complete.stdout).contains("qemu-machine"),
        "{complete:?}"
    );

    // Removed again: nothing of theirs is left.
    run_ok("dpkg --purge", dpkg(&root).arg("--purge").args(&names));
    // (dpkg removes the directories it emptied, usr itself included.)
    let mut left = Vec::new();
    let mut dirs: Vec<PathBuf> = [usr].into_iter().filter(|d| d.exists()).collect();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() && !path.is_symlink() {
                dirs.push(path);
            } else {
                left.push(path);
            }
        }
    }
    assert!(left.is_empty(), "left after dpkg --purge: {left:?}");
}
