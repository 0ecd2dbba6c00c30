//! Builds the cloud image fixture (or finds it already built) and prints where it is.
//!
//! `scripts/test.sh` runs this before `cargo test`, so that the tests do not race to build it
//! and a missing tool or package is reported once, with what fixes it. Needs root the first
//! time (debootstrap).

use std::process::ExitCode;
use std::time::Instant;

use qemu_machine_tests::cloud_fixture::CloudFixture;

fn main() -> ExitCode {
    let started = Instant::now();
    match CloudFixture::get() {
        Ok(fixture) => {
            println!(
                "cloud image fixture ready in {:.2} s",
                started.elapsed().as_secs_f64()
            );
            println!("qcow2:      {}", fixture.qcow2.display());
            println!("compressed: {}", fixture.compressed.display());
            println!("kernel:     {}", fixture.kernel_version);
            println!("packages:   {} installed", fixture.packages.len());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("build-cloud-fixture: {err}");
            ExitCode::FAILURE
        }
    }
}
