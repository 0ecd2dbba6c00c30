//! `qemu-machine`: run QEMU VMs from a JSON description or flags with the terminal on the serial
//! console, talk QMP to them interactively or from scripts, and manage disk images.
//!
//! The command holds no VM logic of its own: it parses arguments, then calls `qemu_process`
//! (`MachineConfig`, `Machine`, `image`) and `qemu_cmdline` (`VmSpec`), and presents the results.
//!
//! # Exit codes
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success; `run`: the guest powered off, `--for` elapsed, or quit from the escape menu, and QEMU exited cleanly |
//! | 1 | an operation failed: a QMP command returned an error (`qmp` from a pipe), an image operation failed, a file could not be read |
//! | 2 | usage error: bad arguments, or a spec that does not parse or describes an impossible VM |
//! | 3 | QEMU could not be launched: not installed, exited during start-up (its own message is printed), or start-up timed out |
//! | 4 | QEMU or the guest ended abnormally: QEMU exited with a failure status or was killed by a signal, the guest panicked, or QEMU did not shut down in time and was killed |
//! | 129, 130, 143 | interrupted by SIGHUP, SIGINT (Ctrl-C) or SIGTERM; the VM was shut down gracefully first (an ungraceful end is 4) |

#[cfg(test)]
mod dist;
mod duration;
mod editor;
mod escape;
mod exit;
mod image;
mod launch;
mod progress;
mod qmp_line;
mod qmp_shell;
mod run;
mod sys;
mod term;
mod vmargs;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use exit::{CliResult, Failure};
use vmargs::VmArgs;

const ABOUT: &str = "Run QEMU virtual machines, talk QMP to them, and manage disk images.";

const AFTER_HELP: &str = "\
Examples:
  qemu-machine run                         # the built-in demo VM: firmware on the console
  qemu-machine run --for 5s                # ... stopped cleanly after five seconds
  qemu-machine run vm.json                 # a VM described in JSON (see `argv --json`)
  qemu-machine run --accel tcg -m 512M --kernel vmlinuz --initrd initrd.img \\
      --append console=ttyS0 --forward ssh=0:22
  qemu-machine qmp --socket /run/vm/qmp.sock
  echo query-status | qemu-machine qmp --compact
  qemu-machine image create disk.qcow2 8G
  qemu-machine argv vm.json

Logging: -v, -vv, -vvv (or RUST_LOG=qemu_process=debug).";

/// The command line.
#[derive(Parser, Debug)]
#[command(
    name = "qemu-machine",
    version,
    about = ABOUT,
    after_help = format!("{AFTER_HELP}\n\n{}", exit::HELP_TABLE),
    propagate_version = true,
)]
struct Cli {
    /// More log output: -v warnings and progress, -vv debug, -vvv trace (errors are always
    /// shown; RUST_LOG overrides).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Only errors: no banner, status or event lines.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Launch a VM with the terminal on its serial console.
    #[command(after_help = RUN_HELP)]
    Run(RunArgs),
    /// A QMP shell on a VM it launches, or on a running QEMU's socket.
    #[command(after_help = QMP_HELP)]
    Qmp(QmpArgs),
    /// Disk images: info, create, resize, convert, flash, dump, check, snapshot.
    #[command(subcommand, after_help = IMAGE_HELP)]
    Image(image::ImageCommand),
    /// Print the QEMU command line a spec produces, quoted for a POSIX shell.
    #[command(after_help = ARGV_HELP)]
    Argv(ArgvArgs),
}

const RUN_HELP: &str = "\
The terminal is attached to the guest's first serial port in raw mode. Keys:
  Ctrl-C          shut the VM down and exit (130)
  Ctrl-] q        shut the VM down and exit (0)
  Ctrl-] ?        the escape menu: power button, reset, status, send Ctrl-C or Ctrl-]
QEMU's lifecycle events are printed on stderr. The run ends when the guest powers off,
on Ctrl-C or SIGTERM, on quit from the escape menu, or when --for elapses.

Examples:
  qemu-machine run --for 5s
  qemu-machine run vm.json --accel tcg
  qemu-machine run --kernel bzImage --initrd initrd --append 'console=ttyS0 quiet' -m 1G
  qemu-machine run --disk debian.qcow2 --user me --password secret --forward ssh=2222:22

Exit codes: 0 the guest powered off or the VM was stopped as asked; 3 QEMU failed to start;
4 QEMU or the guest ended abnormally; 130 Ctrl-C (after a clean shutdown).";

const QMP_HELP: &str = "\
Input lines are QMP commands, either as JSON or in qmp-shell's short form:
  query-status
  device_add driver=virtio-rng-pci id=rng0
  blockdev-add driver=file node-name=f0 filename=/tmp/a.img
  {\"execute\": \"query-cpus-fast\"}
Values are JSON when they look like JSON (numbers, true, false, null, [..], {..}, \"..\"),
'single-quoted' text is taken literally, and a.b=1 builds nested objects.

On a terminal: line editing, history (Up/Down, saved in ~/.qemu-machine_history, mode 0600), Tab
completes command names, events are shown as they arrive, Ctrl-D leaves. From a pipe: each
reply is printed as JSON ({\"return\": ..} or {\"error\": ..}), events too (--no-events hides
them), and the exit code is 1 if any command failed.

Examples:
  qemu-machine qmp                          # the default VM, interactively
  qemu-machine qmp vm.json --accel tcg
  qemu-machine qmp --socket /run/vm/qmp.sock
  printf 'query-status\\nquery-version\\n' | qemu-machine qmp --compact";

const IMAGE_HELP: &str = "\
Long operations (convert, flash, dump) show a progress bar on a terminal, and a line per 10%
otherwise. Files are written beside their destination and renamed into place when complete.

Examples:
  qemu-machine image create disk.qcow2 8G
  qemu-machine image create overlay.qcow2 -b base.qcow2 -F qcow2
  qemu-machine image info disk.qcow2 --json
  qemu-machine image resize disk.qcow2 +2G
  qemu-machine image convert disk.qcow2 disk.raw
  qemu-machine image flash debian-12.raw.xz disk.qcow2 --size 8G
  qemu-machine image dump disk.qcow2 backup.qcow2";

const ARGV_HELP: &str = "\
This is the command line of the spec as written. What `run` adds at launch is not shown: the
QMP and console sockets, probed disk formats (a disk without a format shows as raw), and the
files made for cloud-init, vnc, default partitions and flash (a spec with those is refused
here); `run -v` logs the final command line.

Examples:
  qemu-machine argv                    # the default VM
  qemu-machine argv vm.json -m 2G
  qemu-machine argv --json > vm.json   # the spec as JSON, a starting point to edit";

/// `run`.
#[derive(Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    vm: VmArgs,
    /// Stop the VM (gracefully) after this long: 500ms, 5s, 2m, 1h.
    #[arg(long = "for", value_name = "DURATION", value_parser = duration::parse)]
    run_for: Option<Duration>,
    /// On Ctrl-C, --for or quit, first press the ACPI power button and give the guest this
    /// long to power off, before quitting QEMU.
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    powerdown: Option<Duration>,
    /// How long QEMU may take to exit after quit before it is killed.
    #[arg(long, value_name = "DURATION", value_parser = duration::parse, default_value = "10s")]
    shutdown_timeout: Duration,
    /// Send Ctrl-C to the guest instead of shutting the VM down (quit with Ctrl-] q).
    #[arg(long)]
    pass_ctrl_c: bool,
    /// Which events to print: lifecycle (default), all or none.
    #[arg(long, value_name = "WHICH", default_value = "lifecycle")]
    events: EventFilter,
    /// Also write the console output to this file (created with mode 0600).
    #[arg(long, value_name = "PATH")]
    console_log: Option<PathBuf>,
    /// How long QEMU may take to start.
    #[arg(long, value_name = "DURATION", value_parser = duration::parse, default_value = "30s")]
    launch_timeout: Duration,
}

/// Which events `run` prints.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum EventFilter {
    /// Power, run-state and guest-crash events.
    Lifecycle,
    /// Every event.
    All,
    /// None.
    None,
}

/// `qmp`.
#[derive(Args, Debug)]
struct QmpArgs {
    #[command(flatten)]
    vm: VmArgs,
    /// Connect to a running QEMU's QMP unix socket instead of launching a VM.
    #[arg(long, value_name = "PATH", conflicts_with = "tcp")]
    socket: Option<PathBuf>,
    /// Connect to a running QEMU's QMP TCP server (HOST:PORT) instead of launching a VM.
    #[arg(long, value_name = "ADDR")]
    tcp: Option<std::net::SocketAddr>,
    /// One line of JSON per reply and event (default: pretty-printed).
    #[arg(long)]
    compact: bool,
    /// Do not print events.
    #[arg(long)]
    no_events: bool,
    /// The history file (default ~/.qemu-machine_history; kept at mode 0600, since commands
    /// may carry secrets); `none` keeps no history.
    #[arg(long, value_name = "PATH")]
    history: Option<PathBuf>,
    /// How long one command may take.
    #[arg(long, value_name = "DURATION", value_parser = duration::parse, default_value = "30s")]
    timeout: Duration,
}

/// `argv`.
#[derive(Args, Debug)]
struct ArgvArgs {
    #[command(flatten)]
    vm: VmArgs,
    /// Print the spec (the file or default VM with the flags applied) as JSON instead.
    #[arg(long)]
    json: bool,
}

fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (_, 0) | (true, _) => log::LevelFilter::Error,
        (false, 1) => log::LevelFilter::Info,
        (false, 2) => log::LevelFilter::Debug,
        (false, _) => log::LevelFilter::Trace,
    };
    env_logger::Builder::new()
        .filter_level(level)
        .parse_env("RUST_LOG")
        .format(|buf, record| {
            write!(
                buf,
                "[{} {}] {}{}",
                record.level(),
                record.target(),
                record.args(),
                term::eol()
            )
        })
        .init();
}

/// Writes to stdout, mapping a closed pipe or other failure to a [`Failure`].
pub(crate) fn print_stdout(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Failure::failed(format!("writing to stdout: {e}")))
}

fn argv_command(args: &ArgvArgs) -> CliResult {
    let config = args.vm.to_config()?;
    if args.json {
        let json = config
            .get_vm()
            .expect("the command line describes a VM")
            .to_json()
            .map_err(|e| Failure::failed(format!("cannot write the spec as JSON: {e}")))?;
        print_stdout(&format!("{json}\n"))?;
        return Ok(exit::SUCCESS);
    }
    // The launcher's own dry run: files it would make are shown in a placeholder temp dir, and
    // the accelerator is resolved as at launch.
    let argv = config.argv().map_err(Failure::from_launch)?;
    let argv = qemu_cmdline::shell_quote(&argv);
    print_stdout(&format!("{argv}\n"))?;
    Ok(exit::SUCCESS)
}

fn dispatch(cli: Cli) -> CliResult {
    match cli.command {
        Command::Argv(args) => argv_command(&args),
        Command::Image(command) => image::main(command, cli.quiet),
        Command::Qmp(args) => qmp_shell::main(qmp_shell::Options {
            vm: args.vm,
            socket: args.socket,
            tcp: args.tcp,
            compact: args.compact,
            events: !args.no_events,
            history: args.history,
            timeout: args.timeout,
            quiet: cli.quiet,
        }),
        Command::Run(args) => run::main(run::Options {
            vm: args.vm,
            run_for: args.run_for,
            powerdown: args.powerdown,
            shutdown_timeout: args.shutdown_timeout,
            pass_ctrl_c: args.pass_ctrl_c,
            events: match args.events {
                EventFilter::Lifecycle => run::Events::Lifecycle,
                EventFilter::All => run::Events::All,
                EventFilter::None => run::Events::None,
            },
            console_log: args.console_log,
            launch_timeout: args.launch_timeout,
            quiet: cli.quiet,
        }),
    }
}

fn main() -> ExitCode {
    term::install_panic_hook();
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.quiet);
    let code = match dispatch(cli) {
        Ok(code) => code,
        Err(failure) => {
            term::restore();
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "qemu-machine: error: {}", failure.message);
            if let Some(detail) = &failure.detail {
                let _ = writeln!(err, "{}", detail.trim_end());
            }
            failure.code
        }
    };
    term::restore();
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn usage_errors_are_clap_errors_with_code_2() {
        for argv in [
            &["qemu-machine", "run", "--for", "5x"][..],
            &["qemu-machine", "run", "--bogus"],
            &["qemu-machine", "frobnicate"],
            &[
                "qemu-machine",
                "qmp",
                "--socket",
                "a",
                "--tcp",
                "127.0.0.1:1",
            ],
            &["qemu-machine", "run", "--events", "some"],
        ] {
            let e = Cli::try_parse_from(argv).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{argv:?}");
        }
        let ok =
            Cli::try_parse_from(["qemu-machine", "run", "--for", "500ms", "-v", "x.json"]).unwrap();
        match ok.command {
            Command::Run(r) => {
                assert_eq!(r.run_for, Some(Duration::from_millis(500)));
                assert_eq!(r.vm.spec.as_deref(), Some(std::path::Path::new("x.json")));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(ok.verbose, 1);
    }

    #[test]
    fn help_lists_examples_and_exit_codes() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("Examples:"), "{help}");
        assert!(help.contains("Exit codes:"), "{help}");
        assert!(help.contains("130"), "{help}");
    }
}
