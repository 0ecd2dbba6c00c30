//! The example in `qemu-cli/README.md` runs as written: each command line of its `sh` block,
//! in order, in one directory, with this build of `qemu-machine` first on PATH.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{bin, require_qemu};
use qemu_machine_tests::support::{run_deadline, scratch, show};

/// The command lines of the README's example block (the first ```` ```sh ```` block after
/// "## Example"), without their trailing comments.
fn readme_example_lines() -> Vec<String> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("read qemu-cli/README.md");
    let example = &readme[readme.find("## Example").expect("README has ## Example")..];
    let start = example.find("```sh\n").expect("an sh block in ## Example") + "```sh\n".len();
    let end = start + example[start..].find("```").expect("the sh block ends");
    example[start..end]
        .lines()
        .map(|l| l.split("  #").next().unwrap_or("").trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn the_readme_example_runs_as_written() {
    require_qemu();
    let lines = readme_example_lines();
    assert!(
        lines.len() >= 3 && lines.iter().all(|l| l.contains("qemu-machine ")),
        "{lines:?}"
    );
    let dir = scratch("readme");
    let bin_dir = Path::new(bin()).parent().unwrap().to_owned();
    let path = std::env::join_paths(
        std::iter::once(bin_dir).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    let mut outputs = Vec::new();
    for line in &lines {
        let mut cmd = Command::new("bash");
        cmd.args(["-o", "pipefail", "-c", line])
            .current_dir(dir.path())
            .env("PATH", &path)
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null());
        let out = run_deadline(cmd, Duration::from_secs(120));
        assert!(out.status.success(), "`{line}` failed: {}", show(&out));
        outputs.push(out);
    }
    // What the lines promise: a JSON spec written, and QMP answering from a script.
    let spec: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("vm.json")).expect("vm.json written"),
    )
    .expect("vm.json is JSON");
    assert_eq!(spec["arch"], "x86_64", "{spec}");
    let (i, _) = lines
        .iter()
        .enumerate()
        .find(|(_, l)| l.contains("qmp"))
        .expect("a qmp line");
    let reply = String::from_utf8_lossy(&outputs[i].stdout);
    assert!(reply.contains("{\"return\":{\"status\":"), "{reply}");
}
