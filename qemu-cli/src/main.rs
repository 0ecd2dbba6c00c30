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
//! | 1 | an operation failed: a QMP command returned an error (`qmp` from a pipe), an image operation failed, QEMU or a started VM could not be reached |
//! | 2 | usage or input error: bad arguments, a spec that does not parse or describes an impossible VM, a file the command or the spec names that does not exist (a spec, a flash source, a disk, a kernel) |
//! | 3 | QEMU could not be launched: not installed, exited during start-up (its own message is printed), or start-up timed out |
//! | 4 | QEMU or the guest ended abnormally: QEMU exited with a failure status or was killed by a signal, the guest panicked, or QEMU did not shut down in time and was killed |
//! | 129, 130, 143 | interrupted by SIGHUP, SIGINT or SIGTERM; the VM was stopped as for a quit first (an ungraceful end is 4) |

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
mod vms;

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
  qemu-machine run --for 5s                # ... stopped (QEMU told to quit) after five seconds
  qemu-machine run vm.json                 # a VM described in JSON (see `argv --json`)
  qemu-machine run --accel tcg -m 512M --kernel vmlinuz --initrd initrd.img \\
      --append console=ttyS0 --forward ssh=0:22
  qemu-machine qmp --socket /run/vm/qmp.sock
  echo query-status | qemu-machine qmp --compact
  qemu-machine image create disk.qcow2 8G
  qemu-machine argv vm.json
  qemu-machine start --name web vm.json    # a VM that outlives this command
  qemu-machine list
  qemu-machine console web                 # Ctrl-] d detaches
  qemu-machine stop web

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
    /// shown; RUST_LOG overrides). In `qmp`, -v echoes each request (as qmp-shell -v) and
    /// the log starts at -vv.
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
    /// A QMP shell on a VM it launches, a started VM, or a running QEMU's socket.
    #[command(after_help = QMP_HELP)]
    Qmp(QmpArgs),
    /// Disk images: info, create, resize, convert, flash, dump, check, snapshot.
    #[command(subcommand, after_help = IMAGE_HELP)]
    Image(image::ImageCommand),
    /// Print the QEMU command line a spec produces, quoted for a POSIX shell.
    #[command(after_help = ARGV_HELP)]
    Argv(ArgvArgs),
    /// Start a VM that outlives this command (returns once QMP is up).
    #[command(after_help = START_HELP)]
    Start(vms::StartArgs),
    /// List the started VMs: name, QEMU's pid, state, uptime, forwards.
    #[command(after_help = VMS_HELP)]
    List(vms::ListArgs),
    /// Attach the terminal to a started VM's serial console (detaching leaves it running).
    #[command(after_help = CONSOLE_HELP)]
    Console(vms::ConsoleArgs),
    /// Run a command in a started VM through its guest agent.
    #[command(after_help = EXEC_HELP)]
    Exec(vms::ExecArgs),
    /// Stop a started VM: the ACPI power button, then quit, then kill, each bounded.
    #[command(after_help = VMS_HELP)]
    Stop(vms::StopArgs),
    /// Kill a started VM's QEMU at once.
    #[command(after_help = VMS_HELP)]
    Kill(vms::KillArgs),
    /// The supervisor of a started VM (run by `start`).
    #[command(name = "__supervise", hide = true)]
    Supervise(vms::SuperviseArgs),
}

const START_HELP: &str = "\
The VM is described as for `run` (a spec and flags) and named with --name (or the spec's
name). A supervisor process, detached from the terminal, launches it and keeps it; `start`
returns once QMP is up, after showing what `run` shows (pid, forwards). The VM runs until
`stop`, `kill`, its guest powers off, or its supervisor is killed (which takes QEMU with it).
State is kept in $XDG_RUNTIME_DIR/qemu-machine (else /run/user/UID/qemu-machine, else
qemu-machine-UID in the temp dir), owner-only.

Examples:
  qemu-machine start --name web vm.json --forward ssh=0:22
  qemu-machine list
  qemu-machine console web          # Ctrl-] d detaches
  qemu-machine qmp web              # the QMP shell on it
  qemu-machine stop web             # power button, 30s, quit, kill

Exit codes: as for `run`'s launch: 0 started; 1 a VM of that name already runs; 2 bad
arguments or a missing input file; 3 QEMU failed to start.";

const VMS_HELP: &str = "\
Started VMs are found by name in $XDG_RUNTIME_DIR/qemu-machine (else
/run/user/UID/qemu-machine, else qemu-machine-UID in the temp dir). An entry whose
supervisor has gone is stale: it is removed when found, and said so.

Examples:
  qemu-machine list --json
  qemu-machine stop web --timeout 1m
  qemu-machine kill web

Exit codes: 0 done; 1 no VM of that name, or its supervisor cannot be reached; 4 (stop) QEMU
did not exit when told to quit and was killed.";

const CONSOLE_HELP: &str = "\
The terminal is attached in raw mode: everything typed goes to the guest, Ctrl-C included.
Keys (when standard input is a terminal):
  Ctrl-] d        detach; the VM keeps running
  Ctrl-] ?        the escape menu: power button, reset, status, send Ctrl-]
One console client at a time: --force takes the console over from another. The command
ends on detach, --for, SIGINT or SIGTERM (the VM keeps running), or when the VM stops.

Examples:
  qemu-machine console web
  qemu-machine console web --for 10s < commands.txt

Exit codes: 0 detached or the VM stopped; 1 no VM of that name, or the console is attached
elsewhere; 130/143 detached by SIGINT/SIGTERM.";

const EXEC_HELP: &str = "\
The command runs in the guest through the QEMU guest agent (qemu-guest-agent must run in the
guest; `start` gives the VM the agent's virtio-serial port unless --no-guest-agent), and its
output and exit code become this command's: the guest command's exit code, 128 + N when
signal N ended it. The command is run directly, not by a shell: use `sh -c '...'` for one.
Output is passed through as bytes; qemu-ga keeps at most 16 MiB of each stream. The VM's
other clients (console, qmp, stop) are served while it runs.

Examples:
  qemu-machine exec web -- uname -a
  qemu-machine exec web --timeout 5m -- sh -c 'apt-get update && apt-get -y upgrade'

Exit codes: the command's; 1 no VM of that name, no guest agent channel or no agent running
in the guest, the agent failed, or the command did not end within --timeout (it keeps
running in the guest).";

const RUN_HELP: &str = "\
The terminal is attached to the guest's first serial port in raw mode: everything typed goes
to the guest, Ctrl-C included. Keys (when standard input is a terminal):
  Ctrl-] q        stop the VM and exit (0)
  Ctrl-] ?        the escape menu: power button, reset, status, send Ctrl-]
QEMU's lifecycle events are printed on stderr. The run ends when the guest powers off, on
quit from the escape menu, on SIGINT, SIGTERM or SIGHUP, or when --for elapses. The last
three stop the VM: a VM with a writable disk is asked first (the ACPI power button, then up
to --powerdown, 30s by default, for the guest to power off) before QEMU is told to quit;
the last line says which happened (\"the guest powered off\" or \"QEMU was told to quit
after N s\"). Disks created, grown or flashed at launch are shown as it happens (a flash with
its progress).

Examples:
  qemu-machine run --for 5s
  qemu-machine run vm.json --accel tcg
  qemu-machine run --kernel bzImage --initrd initrd --append 'console=ttyS0 quiet' -m 1G
  qemu-machine run --disk debian.qcow2 --user me --password secret --forward ssh=2222:22
  qemu-machine run --disk root.qcow2,size=8G,flash=debian-12.raw.xz

Exit codes: 0 the guest powered off or the VM was stopped as asked; 2 bad arguments or a
missing input file (a flash source, a kernel); 3 QEMU failed to start; 4 QEMU or the guest
ended abnormally; 128+N stopped by signal N (130 SIGINT, 143 SIGTERM).";

const QMP_HELP: &str = "\
Input lines are QMP commands, either as JSON or in qmp-shell's short form:
  query-status
  device_add driver=virtio-rng-pci id=rng0
  blockdev-add driver=file node-name=f0 filename=/tmp/a.img
  {\"execute\": \"query-cpus-fast\"}
Values are JSON when they look like JSON (numbers, true, false, null, [..], {..}, \"..\"),
'single-quoted' text is taken literally, and a.b=1 builds nested objects.

Transactions, as in qmp-shell: a line `transaction(` opens one (the prompt becomes TRANS>),
each following line is an action (TYPE key=value ..., or {\"type\": .., \"data\": {..}}), and
a line `)` (or an action line ending in ` )`) sends them all as one atomic `transaction`
command. Nothing is sent before the `)`; a transaction with an invalid line is not sent.

On a terminal: line editing, history (Up/Down, saved in ~/.qemu-machine_history, mode 0600), Tab
completes command names, events are shown as they arrive, the line is redrawn when the
terminal is resized, Ctrl-C abandons the line (and an open transaction), Ctrl-D leaves. From a
pipe: each reply is printed as JSON ({\"return\": ..} or {\"error\": ..}), events too
(--no-events hides them), and the exit code is 1 if any command failed.

`qmp NAME` is the shell on a VM started with `start --name NAME` (left running when the shell
ends). -v prints each request before its reply; -l FILE appends every request, reply and
event to FILE. --socket and --tcp fail at once when nothing is there to connect to (the system's
error is printed), unless --wait gives QEMU time to create its socket.

Examples:
  qemu-machine qmp                          # the default VM, interactively
  qemu-machine qmp vm.json --accel tcg
  qemu-machine qmp --socket /run/vm/qmp.sock
  qemu-machine qmp --tcp localhost:4444 --wait 10s
  qemu-machine qmp web                      # a VM started with `start --name web`
  printf 'query-status\\nquery-version\\n' | qemu-machine qmp --compact";

const IMAGE_HELP: &str = "\
Long operations (convert, flash, dump) show a progress bar on a terminal, and a line per 10%
otherwise. Files are written beside their destination and renamed into place when complete;
convert and dump replace an existing file only with --force, and never their own source.
Sizes are written as qemu-img writes them (512M, 8G, 1.5G). -U (--force-share) lets info,
check, convert and dump read the disk of a running VM. `image check` exits as qemu-img check
does (see `image check --help`).

Examples:
  qemu-machine image create disk.qcow2 8G
  qemu-machine image create overlay.qcow2 -b base.qcow2 -F qcow2
  qemu-machine image info disk.qcow2 --json
  qemu-machine image info -U disk.qcow2     # a running VM's disk
  qemu-machine image resize disk.qcow2 +2G
  qemu-machine image resize disk.qcow2 -16M --shrink
  qemu-machine image convert disk.qcow2 disk.raw
  qemu-machine image flash debian-12.raw.xz disk.qcow2 --size 8G
  qemu-machine image dump disk.qcow2 backup.qcow2
  qemu-machine image snapshot disk.qcow2 list";

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
    /// When stopping the VM (quit, --for, a signal), first press the ACPI power button and
    /// give the guest this long to power off before QEMU is told to quit (default: 30s for a
    /// VM with a writable disk, 0 for one without: QEMU quits at once).
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    powerdown: Option<Duration>,
    /// How long QEMU may take to exit after quit before it is killed.
    #[arg(long, value_name = "DURATION", value_parser = duration::parse, default_value = "10s")]
    shutdown_timeout: Duration,
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
    /// Connect to a running QEMU's QMP TCP server (HOST:PORT; HOST a name or an address)
    /// instead of launching a VM.
    #[arg(long, value_name = "HOST:PORT")]
    tcp: Option<String>,
    /// With --socket or --tcp: keep trying to connect for this long while the socket does not
    /// exist yet or refuses (default: fail at once with the system's error).
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    wait: Option<Duration>,
    /// One line of JSON per reply and event (default: pretty-printed).
    #[arg(long, conflicts_with = "pretty")]
    compact: bool,
    /// Pretty-print the JSON (the default; accepted for qmp-shell's -p).
    #[arg(short = 'p', long)]
    pretty: bool,
    /// Do not print events.
    #[arg(long)]
    no_events: bool,
    /// Append every request, reply and event to this file, one JSON value per line (created
    /// with mode 0600), like qmp-shell's -l.
    #[arg(short = 'l', long = "logfile", value_name = "PATH")]
    logfile: Option<PathBuf>,
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

fn qmp_command(args: QmpArgs, verbose: u8, quiet: bool) -> CliResult {
    // `qmp NAME`: a started VM of that name (it wins over a file of the same name).
    let named = match (&args.vm.spec, args.socket.is_none() && args.tcp.is_none()) {
        (Some(spec), true)
            if {
                let mut bare = args.vm.clone();
                bare.spec = None;
                bare == VmArgs::default()
            } =>
        {
            match spec.to_str() {
                Some(name) => vms::qmp_connection(name)?.map(|fd| (fd, name.to_owned())),
                None => None,
            }
        }
        _ => None,
    };
    if named.is_none() && args.socket.is_none() && args.tcp.is_none() {
        if let Some(spec) = args.vm.spec.as_deref().and_then(|p| p.to_str()) {
            let path = std::path::Path::new(spec);
            if spec != "-" && !spec.contains('/') && !path.exists() {
                return Err(Failure::usage(format!(
                    "{spec}: no VM of that name is running (`qemu-machine list` lists them), \
                     and there is no spec file of that name"
                )));
            }
        }
    }
    if let Some((fd, name)) = named {
        return qmp_shell::main(qmp_shell::Options {
            target: qmp_shell::Target::Stream(fd, format!("VM {name}")),
            wait: None,
            compact: args.compact,
            events: !args.no_events,
            echo: verbose > 0,
            log: args.logfile,
            history: args.history,
            timeout: args.timeout,
            quiet,
        });
    }
    let remote = |flag: &str| -> Result<(), Failure> {
        if args.vm != VmArgs::default() {
            return Err(Failure::usage(format!(
                "{flag} connects to a running QEMU: VM flags and a spec do not apply"
            )));
        }
        Ok(())
    };
    let target = if let Some(path) = args.socket.clone() {
        remote("--socket")?;
        qmp_shell::Target::Socket(path)
    } else if let Some(addr) = args.tcp.clone() {
        remote("--tcp")?;
        qmp_shell::Target::Tcp(addr)
    } else {
        if args.wait.is_some() {
            return Err(Failure::usage(
                "--wait is for --socket and --tcp (waiting for a running QEMU)",
            ));
        }
        qmp_shell::Target::Launch(Box::new(args.vm))
    };
    qmp_shell::main(qmp_shell::Options {
        target,
        wait: args.wait,
        compact: args.compact,
        events: !args.no_events,
        echo: verbose > 0,
        log: args.logfile,
        history: args.history,
        timeout: args.timeout,
        quiet,
    })
}

fn dispatch(cli: Cli) -> CliResult {
    match cli.command {
        Command::Argv(args) => argv_command(&args),
        Command::Image(command) => image::main(command, cli.quiet),
        Command::Qmp(args) => qmp_command(args, cli.verbose, cli.quiet),
        Command::Start(args) => vms::start(args, cli.quiet),
        Command::List(args) => vms::list(&args, cli.quiet),
        Command::Console(args) => vms::console::main(&args, cli.quiet),
        Command::Exec(args) => vms::exec(&args),
        Command::Stop(args) => vms::stop(&args, cli.quiet),
        Command::Kill(args) => vms::kill(&args, cli.quiet),
        Command::Supervise(args) => Ok(vms::supervisor::main(vms::supervisor::Args {
            name: args.name,
            dir: args.dir,
            lock_fd: args.lock_fd,
        })),
        Command::Run(args) => run::main(run::Options {
            vm: args.vm,
            run_for: args.run_for,
            powerdown: args.powerdown,
            shutdown_timeout: args.shutdown_timeout,
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
    // In `qmp`, the first -v echoes requests (qmp-shell's -v); more raise the log level.
    let log_verbosity = match cli.command {
        Command::Qmp(_) => cli.verbose.saturating_sub(1),
        _ => cli.verbose,
    };
    init_logging(log_verbosity, cli.quiet);
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
