//! Builds the guest fixtures (or finds them already built) and prints where they are.
//!
//! `scripts/test.sh` runs this before `cargo test`, so that the tests do not race to build
//! them and a missing package is reported once, with the command that fixes it.
//!
//! Usage: `build-fixture [ARCH...] [--agent-initrd DIR]`, ARCH `x86_64` or `aarch64`; without
//! one, both.
//!
//! With `--agent-initrd DIR` it also writes the x86_64 fixture's initramfs with the host's
//! qemu-ga packed after it (`qemu_machine_tests::qga::guest_initrd_with_agent`) into `DIR`
//! (created if missing), and prints its path (`agent-initrd:`) and the kernel command line that
//! starts the agent (`agent-cmdline:`, `qga::agent_cmdline`): the guest-agent VM of tests that
//! are not Rust (`scripts/go-test.sh`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use qemu_machine_tests::fixture::{Arch, GuestFixture};
use qemu_machine_tests::qga;

const USAGE: &str = "usage: build-fixture [x86_64|aarch64]... [--agent-initrd DIR]";

fn main() -> ExitCode {
    let mut arches = Vec::new();
    let mut agent_dir: Option<PathBuf> = None;
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("x86_64") => arches.push(Arch::X86_64),
            Some("aarch64") => arches.push(Arch::Aarch64),
            Some("--agent-initrd") if agent_dir.is_none() => match args.next() {
                Some(dir) => agent_dir = Some(PathBuf::from(dir)),
                None => {
                    eprintln!("build-fixture: --agent-initrd needs a directory\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            _ => {
                eprintln!("build-fixture: unexpected argument {arg:?}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    if arches.is_empty() {
        arches = vec![Arch::X86_64, Arch::Aarch64];
    }
    for arch in arches {
        let started = Instant::now();
        let fixture = match GuestFixture::get_for(arch) {
            Ok(fixture) => fixture,
            Err(err) => {
                eprintln!("build-fixture: {arch}: {err}");
                return ExitCode::FAILURE;
            }
        };
        println!(
            "{arch} guest fixture ready in {:.2} s",
            started.elapsed().as_secs_f64()
        );
        println!("kernel:  {}", fixture.kernel.display());
        println!("initrd:  {}", fixture.initrd.display());
        if let Some(disk) = &fixture.uefi_disk {
            println!("uefi:    {}", disk.display());
        }
        println!("version: {}", fixture.kernel_version);
        println!("modules: {}", fixture.modules.join(" "));
        println!("cmdline: {}", fixture.kernel_cmdline(&[], ""));
        if let (Some(dir), Arch::X86_64) = (&agent_dir, arch) {
            let written = std::fs::create_dir_all(dir)
                .and_then(|()| qga::guest_initrd_with_agent(&fixture, dir));
            match written {
                Ok(path) => {
                    println!("agent-initrd: {}", path.display());
                    println!("agent-cmdline: {}", qga::agent_cmdline(&fixture, &[], ""));
                }
                Err(err) => {
                    eprintln!(
                        "build-fixture: the guest agent's initramfs in {}: {err}",
                        dir.display()
                    );
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    ExitCode::SUCCESS
}
