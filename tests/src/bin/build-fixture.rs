//! Builds the guest fixture (or finds it already built) and prints where it is.
//!
//! `scripts/test.sh` runs this before `cargo test`, so that the tests do not race to build it
//! and a missing package is reported once, with the command that fixes it.

use std::process::ExitCode;
use std::time::Instant;

use qemu_machine_tests::fixture::GuestFixture;

fn main() -> ExitCode {
    let started = Instant::now();
    match GuestFixture::get() {
        Ok(fixture) => {
            println!(
                "guest fixture ready in {:.2} s",
                started.elapsed().as_secs_f64()
            );
            println!("kernel:  {}", fixture.kernel.display());
            println!("initrd:  {}", fixture.initrd.display());
            println!("version: {}", fixture.kernel_version);
            println!("modules: {}", fixture.modules.join(" "));
            println!("cmdline: {}", fixture.kernel_cmdline(&[], ""));
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("build-fixture: {err}");
            ExitCode::FAILURE
        }
    }
}
