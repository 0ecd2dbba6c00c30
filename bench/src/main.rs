//! `qm-bench`: the benchmark harness of qemu-machine.
//!
//! `cargo run --release -p qemu-machine-bench` runs every row, each against a baseline measured
//! in the same run, and prints a markdown report: the machine and date, a table (measurement,
//! ours, baseline, ratio, goal, met?) and the details behind each figure. `--quick` is a smoke
//! run, `--only NAME` runs one group of rows; see `bench/README.md`.
//!
//! Nothing here is part of the test suite, and nothing asserts on timings: the harness prints
//! figures and says which goals they meet.

mod candidates;
mod floor;
mod groups;
mod opts;
mod procfs;
mod python;
mod report;
mod rss;
mod scale;
mod stats;
mod sysinfo;

use std::process::ExitCode;

use opts::Invocation;

fn main() -> ExitCode {
    let invocation = match opts::parse(std::env::args().skip(1)) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("qm-bench: {e}");
            return ExitCode::from(2);
        }
    };
    match invocation {
        Invocation::Help => {
            print!("{}", opts::usage());
            ExitCode::SUCCESS
        }
        Invocation::Rss { client, qemu } => match rss::run(&client, &qemu) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("qm-bench __rss: {e}");
                ExitCode::FAILURE
            }
        },
        Invocation::Scale {
            client,
            n,
            queries,
            qemu,
        } => match scale::run(&client, n, queries, &qemu) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("qm-bench __scale: {e}");
                ExitCode::FAILURE
            }
        },
        Invocation::Run(options) => groups::run(&options),
    }
}
