//! Builds the guest fixtures (or finds them already built) and prints where they are.
//!
//! `scripts/test.sh` runs this before `cargo test`, so that the tests do not race to build
//! them and a missing package is reported once, with the command that fixes it.
//!
//! Usage: `build-fixture [ARCH...]`, ARCH `x86_64` or `aarch64`; without one, both.

use std::process::ExitCode;
use std::time::Instant;

use qemu_machine_tests::fixture::{Arch, GuestFixture};

fn main() -> ExitCode {
    let mut arches = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "x86_64" => arches.push(Arch::X86_64),
            "aarch64" => arches.push(Arch::Aarch64),
            other => {
                eprintln!("build-fixture: unknown architecture {other:?} (x86_64, aarch64)");
                return ExitCode::FAILURE;
            }
        }
    }
    if arches.is_empty() {
        arches = vec![Arch::X86_64, Arch::Aarch64];
    }
    for arch in arches {
        let started = Instant::now();
        match GuestFixture::get_for(arch) {
            Ok(fixture) => {
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
            }
            Err(err) => {
                eprintln!("build-fixture: {arch}: {err}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
