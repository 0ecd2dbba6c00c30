//! The man pages and shell completions (bash, zsh, fish) of `qemu-machine`, generated from the
//! clap definition into `qemu-cli/dist/` and committed there, like the C header: packagers
//! (`scripts/build-deb.sh`) install them from there, and the crate's tarball carries them. The
//! generators (clap_mangen, clap_complete) are dev-dependencies, so the command itself does
//! not depend on them. The test below fails when the files differ from what the current
//! definition generates; `QM_UPDATE_DIST=1 cargo test -p qemu-cli --bin qemu-machine dist`
//! rewrites them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

/// Every generated file, by its path under `dist/`.
fn generate() -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    // One page per command: qemu-machine(1), qemu-machine-run(1), qemu-machine-image-info(1),
    // ...; `help` is left out (it is what --help shows).
    let mut cmd = super::Cli::command().disable_help_subcommand(true);
    cmd.build();
    man_pages(&cmd, &mut files);
    for (shell, name) in [
        (Shell::Bash, "completions/qemu-machine.bash"),
        (Shell::Zsh, "completions/_qemu-machine"),
        (Shell::Fish, "completions/qemu-machine.fish"),
    ] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut super::Cli::command(), "qemu-machine", &mut out);
        files.insert(name.to_string(), out);
    }
    files
}

fn man_pages(cmd: &clap::Command, files: &mut BTreeMap<String, Vec<u8>>) {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        man_pages(sub, files);
    }
    let man = clap_mangen::Man::new(cmd.clone());
    let mut out = Vec::new();
    man.render(&mut out).expect("render a man page into memory");
    files.insert(format!("man/{}", man.get_filename()), no_fill_extra(out));
}

/// The after-help text (examples, keys, exit codes) is laid out in columns by hand: clap_mangen
/// puts it in an EXTRA section as running text, which man would refill. Mark it no-fill.
fn no_fill_extra(page: Vec<u8>) -> Vec<u8> {
    let page = String::from_utf8(page).expect("clap_mangen writes UTF-8");
    let Some(start) = page.find("\n.SH EXTRA\n") else {
        return page.into_bytes();
    };
    let body = start + "\n.SH EXTRA\n".len();
    let end = page[body..]
        .find("\n.SH ")
        .map_or(page.len(), |e| body + e + 1);
    let mut out = String::with_capacity(page.len() + 8);
    out.push_str(&page[..body]);
    out.push_str(".nf\n");
    out.push_str(&page[body..end]);
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(".fi\n");
    out.push_str(&page[end..]);
    out.into_bytes()
}

fn dist_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("dist")
}

/// The files under `dist/`, by their relative path.
fn committed(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for sub in ["man", "completions"] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("read dist/").path();
            let name = format!("{sub}/{}", path.file_name().unwrap().to_string_lossy());
            files.insert(name, std::fs::read(&path).expect("read a dist file"));
        }
    }
    files
}

#[test]
fn dist_files_are_what_the_clap_definition_generates() {
    let dir = dist_dir();
    let generated = generate();
    if std::env::var_os("QM_UPDATE_DIST").is_some() {
        for sub in ["man", "completions"] {
            let _ = std::fs::remove_dir_all(dir.join(sub));
            std::fs::create_dir_all(dir.join(sub)).expect("create dist/");
        }
        for (name, text) in &generated {
            std::fs::write(dir.join(name), text).expect("write a dist file");
        }
        return;
    }
    let committed = committed(&dir);
    let stale: Vec<&String> = generated
        .iter()
        .filter(|(name, text)| committed.get(*name) != Some(text))
        .map(|(name, _)| name)
        .chain(committed.keys().filter(|n| !generated.contains_key(*n)))
        .collect();
    assert!(
        stale.is_empty(),
        "qemu-cli/dist is stale ({stale:?} differ from the clap definition): regenerate it \
         with `QM_UPDATE_DIST=1 cargo test -p qemu-cli --bin qemu-machine dist` and commit it"
    );
}

#[test]
fn man_pages_and_completions_cover_every_command() {
    let files = generate();
    let main = String::from_utf8(files["man/qemu-machine.1"].clone()).unwrap();
    assert!(
        main.starts_with(".ie \\n(.g .ds Aq"),
        "not roff: {main:.80}"
    );
    assert!(main.contains(".TH qemu-machine 1"), "{main:.200}");
    let cmd = super::Cli::command();
    for sub in cmd
        .get_subcommands()
        .filter(|s| s.get_name() != "help" && !s.is_hide_set())
    {
        let name = sub.get_name();
        assert!(main.contains(name), "qemu-machine(1) does not name {name}");
        let page = format!("man/qemu-machine-{name}.1");
        assert!(files.contains_key(&page), "no {page} in {:?}", files.keys());
        for shell in ["qemu-machine.bash", "_qemu-machine", "qemu-machine.fish"] {
            let text = String::from_utf8_lossy(&files[&format!("completions/{shell}")]);
            assert!(text.contains(name), "{shell} does not complete {name}");
        }
    }
    let run = String::from_utf8_lossy(&files["man/qemu-machine-run.1"]);
    assert!(run.contains("\\-\\-for"), "qemu-machine-run(1) lacks --for");
}
