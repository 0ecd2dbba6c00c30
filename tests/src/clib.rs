//! Helpers for the tests of libqemumachine as people install it: the example program of
//! `qemu-ffi/README.md`, ELF facts read with `readelf`, compiling and running C programs, and
//! a temporary directory that removes itself.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::{find_program, workspace_root};

/// The C example of `qemu-ffi/README.md` (its first ```` ```c ```` block), the program the
/// install tests build with each method: the README promises it compiles and runs.
///
/// # Panics
///
/// If the README cannot be read or holds no C block.
pub fn readme_c_example() -> String {
    let path = workspace_root().join("qemu-ffi/README.md");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let start = text
        .find("```c\n")
        .unwrap_or_else(|| panic!("{} has no ```c block", path.display()))
        + "```c\n".len();
    let len = text[start..]
        .find("```")
        .unwrap_or_else(|| panic!("{}: the ```c block does not end", path.display()));
    text[start..start + len].to_string()
}

/// What the README example prints on success, up to QEMU's reply.
pub fn readme_example_output() -> String {
    format!(
        "libqemumachine {}: QEMU said {{\"status\":",
        env!("CARGO_PKG_VERSION")
    )
}

/// `readelf -d` of `file`: its dynamic section as text.
///
/// # Panics
///
/// If readelf (binutils) is missing or fails.
pub fn readelf_dynamic(file: &Path) -> String {
    let readelf = find_program("readelf").expect("readelf missing: apt-get install -y binutils");
    let out = Command::new(readelf)
        .arg("-d")
        .arg(file)
        .output()
        .expect("run readelf");
    assert!(
        out.status.success(),
        "readelf -d {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The values of the `(TAG)` entries of `file`'s dynamic section, e.g. `NEEDED` or `SONAME`.
pub fn dynamic_entries(file: &Path, tag: &str) -> Vec<String> {
    let marker = format!("({tag})");
    readelf_dynamic(file)
        .lines()
        .filter(|l| l.contains(&marker))
        .filter_map(|l| {
            let start = l.find('[')? + 1;
            let end = l.rfind(']')?;
            Some(l[start..end].to_string())
        })
        .collect()
}

/// The soname libqemumachine has for the version of this workspace: `libqemumachine.so.0.MINOR`
/// before 1.0, `libqemumachine.so.MAJOR` from 1.0 on (see `qemu-ffi/build.rs`).
pub fn expected_soname() -> String {
    let major = env!("CARGO_PKG_VERSION_MAJOR");
    let minor = env!("CARGO_PKG_VERSION_MINOR");
    if major == "0" {
        format!("libqemumachine.so.0.{minor}")
    } else {
        format!("libqemumachine.so.{major}")
    }
}

/// Makes `dir/<soname>` a link to `dir/libqemumachine.so`, as an install would, so that a
/// program linked against the library in cargo's output directory (which holds only
/// `libqemumachine.so`) finds it at run time by its soname. Safe to call from several test
/// processes at once.
///
/// # Panics
///
/// If the library has no soname or the link cannot be made.
pub fn link_soname(dir: &Path) {
    let lib = dir.join("libqemumachine.so");
    let soname = dynamic_entries(&lib, "SONAME");
    assert_eq!(
        soname,
        [expected_soname()],
        "{} has the wrong soname",
        lib.display()
    );
    let link = dir.join(&soname[0]);
    let tmp = dir.join(format!(".{}.{}", soname[0], std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink("libqemumachine.so", &tmp)
        .unwrap_or_else(|e| panic!("symlink {}: {e}", tmp.display()));
    std::fs::rename(&tmp, &link).unwrap_or_else(|e| panic!("rename to {}: {e}", link.display()));
}

/// A directory under the system's temp dir, removed with what it holds when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `<tmp>/qm-<name>-<pid>`, empty.
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("qm-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        TempDir(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `cmd` and returns its output, panicking with everything it printed when it fails.
pub fn run_ok(what: &str, cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {cmd:?} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A C compiler command (`cc`), or a panic naming the packages to install.
pub fn cc() -> Command {
    Command::new(find_program("cc").expect("no C compiler: apt-get install -y gcc libc6-dev"))
}

/// `pkg-config ARGS qemumachine` searching `pc_dir` only (not the system's directories), with
/// `sysroot` (`PKG_CONFIG_SYSROOT_DIR`) prefixed to the paths it prints when given: a tree
/// installed under another root, like `dpkg --root`'s.
pub fn pkg_config(pc_dir: &Path, sysroot: Option<&Path>, args: &[&str]) -> Vec<String> {
    let program =
        find_program("pkg-config").expect("pkg-config missing: apt-get install -y pkg-config");
    let mut cmd = Command::new(program);
    cmd.env("PKG_CONFIG_LIBDIR", pc_dir)
        .env_remove("PKG_CONFIG_PATH")
        .env_remove("PKG_CONFIG_SYSROOT_DIR")
        .args(args)
        .arg("qemumachine");
    if let Some(root) = sysroot {
        // With a sysroot, /usr/include and /usr/lib are the tree's, not system directories.
        cmd.env("PKG_CONFIG_SYSROOT_DIR", root)
            .env("PKG_CONFIG_ALLOW_SYSTEM_CFLAGS", "1")
            .env("PKG_CONFIG_ALLOW_SYSTEM_LIBS", "1");
    }
    let out = run_ok("pkg-config", &mut cmd);
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Runs a program built from [`readme_c_example`] and checks that it printed what the example
/// prints on success: it launched QEMU and got an answer.
pub fn run_example(what: &str, program: &Path) {
    crate::qemu_system_x86_64();
    let out = run_ok(what, Command::new(program).env_remove("LD_LIBRARY_PATH"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with(&readme_example_output()),
        "{what}: unexpected output {stdout:?}"
    );
}

/// Whether an executable is fully static: it has no dynamic section.
pub fn is_static(program: &Path) -> bool {
    readelf_dynamic(program).contains("There is no dynamic section")
}

/// The path as an `OsStr`, for `Command::arg` with a prefix: `-Wl,-rpath,<dir>`.
pub fn with_prefix(prefix: &str, path: &Path) -> std::ffi::OsString {
    let mut s = std::ffi::OsString::from(prefix);
    s.push(AsRef::<OsStr>::as_ref(path));
    s
}

/// Checks the files an installed libqemumachine consists of, under `prefix` (as seen on this
/// machine, e.g. a `dpkg --root` tree's `usr`) with the libraries in `prefix/libdir`: the
/// header is the repository's, the shared library is a file with the full version in its name
/// and the right soname, reached through the soname link and the development link, and the
/// static library, the pkg-config file and the CMake package are there.
///
/// # Panics
///
/// On the first difference, naming it.
pub fn check_installed_tree(prefix: &Path, libdir: &str) {
    let header = std::fs::read(prefix.join("include/qemumachine.h"))
        .unwrap_or_else(|e| panic!("{}/include/qemumachine.h: {e}", prefix.display()));
    let ours = std::fs::read(workspace_root().join("include/qemumachine.h")).expect("read header");
    assert!(
        header == ours,
        "the installed header differs from include/qemumachine.h"
    );
    let lib = prefix.join(libdir);
    let real = format!("libqemumachine.so.{}", env!("CARGO_PKG_VERSION"));
    let soname = expected_soname();
    let meta = std::fs::symlink_metadata(lib.join(&real))
        .unwrap_or_else(|e| panic!("{}/{real}: {e}", lib.display()));
    assert!(meta.is_file(), "{real} is not a regular file");
    assert_eq!(
        dynamic_entries(&lib.join(&real), "SONAME"),
        std::slice::from_ref(&soname)
    );
    for (link, target) in [
        (soname.as_str(), real.as_str()),
        ("libqemumachine.so", &soname),
    ] {
        let to = std::fs::read_link(lib.join(link))
            .unwrap_or_else(|e| panic!("{}/{link} is not a link: {e}", lib.display()));
        assert_eq!(to, Path::new(target), "{link} points elsewhere");
    }
    for file in [
        "libqemumachine.a",
        "pkgconfig/qemumachine.pc",
        "cmake/qemumachine/qemumachineConfig.cmake",
        "cmake/qemumachine/qemumachineConfigVersion.cmake",
    ] {
        assert!(lib.join(file).is_file(), "{}/{file} missing", lib.display());
    }
}

/// Configures and builds, with CMake, the README example against the CMake package found
/// under `prefix_path`, as `app_shared` (qemumachine::qemumachine) and `app_static`
/// (qemumachine::qemumachine_static) in `dir/build`; returns the two programs. Also checks
/// that a request for the next minor version is refused: before 1.0 it may break the ABI.
pub fn cmake_build(dir: &Path, prefix_path: &Path, example: &str) -> (PathBuf, PathBuf) {
    let cmake = find_program("cmake").expect("cmake missing: apt-get install -y cmake");
    let major: u32 = env!("CARGO_PKG_VERSION_MAJOR").parse().unwrap();
    let minor: u32 = env!("CARGO_PKG_VERSION_MINOR").parse().unwrap();
    let project = |sub: &str, wanted: &str| {
        let src = dir.join(sub);
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("app.c"), example).unwrap();
        std::fs::write(
            src.join("CMakeLists.txt"),
            format!(
                "cmake_minimum_required(VERSION 3.13)\n\
                 project(qm_example C)\n\
                 find_package(qemumachine {wanted} REQUIRED)\n\
                 add_executable(app_shared app.c)\n\
                 target_link_libraries(app_shared PRIVATE qemumachine::qemumachine)\n\
                 add_executable(app_static app.c)\n\
                 target_link_libraries(app_static PRIVATE qemumachine::qemumachine_static)\n"
            ),
        )
        .unwrap();
        let mut configure = Command::new(&cmake);
        configure
            .arg("-S")
            .arg(&src)
            .arg("-B")
            .arg(src.join("build"))
            .arg(with_prefix("-DCMAKE_PREFIX_PATH=", prefix_path))
            .env_remove("CMAKE_PREFIX_PATH");
        (src, configure)
    };
    let (src, mut configure) = project("cmake", &format!("{major}.{minor}"));
    run_ok("cmake configure", &mut configure);
    run_ok(
        "cmake build",
        Command::new(&cmake).arg("--build").arg(src.join("build")),
    );
    if major == 0 {
        let next = format!("0.{}", minor + 1);
        let (_, mut refused) = project("cmake-next", &next);
        let out = refused.output().expect("run cmake");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(env!("CARGO_PKG_VERSION")),
            "find_package(qemumachine {next}) accepted version {}: {stderr}",
            env!("CARGO_PKG_VERSION")
        );
    }
    let build = src.join("build");
    (build.join("app_shared"), build.join("app_static"))
}
