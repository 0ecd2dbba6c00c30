//! Command-line options.

use std::path::PathBuf;

/// The rows (groups of rows) the harness can run, by the name `--only` takes.
pub const GROUPS: &[(&str, &str)] = &[
    (
        "cycle",
        "launch→negotiated→query-status→quit→reaped, TCG: ours vs floor vs Python",
    ),
    ("cycle-kvm", "the same cycle under KVM: ours vs floor"),
    (
        "rtt",
        "query-status round trip and client CPU per command: ours vs floor vs Python",
    ),
    (
        "rss",
        "peak RSS of a client managing one VM: ours vs floor vs Python",
    ),
    (
        "decoder",
        "qmp-proto decoder MB/s vs serde_json on the same messages",
    ),
    ("concurrent", "1, 4, 16 VMs with MachineSet from one thread"),
    (
        "scale",
        "1, 16, 64, 128 VMs from one thread vs threads: wall, CPU per command, RSS and fds per VM",
    ),
    (
        "idle",
        "64 idle VMs held by a blocked thread: its CPU and wake-ups, and the guardian's",
    ),
    (
        "boot",
        "the guest fixture from launch to its ready line vs a bare console reader (with console)",
    ),
    (
        "console",
        "guest console output delivered per second vs a bare reader (with boot: one guest)",
    ),
    (
        "events",
        "10,000 STOP/RESUME events delivered in order vs the floor",
    ),
    (
        "cabi",
        "query-status round trip through the C ABI vs the Rust API",
    ),
    (
        "sizes",
        "stripped libqemumachine.so and static C binary sizes",
    ),
    (
        "process-bench",
        "cargo bench -p qemu-process --bench lifecycle, shown as a cross-check (not with --quick)",
    ),
];

/// What the command line asks for.
#[derive(Debug, PartialEq)]
pub enum Invocation {
    /// Run the harness.
    Run(Options),
    /// Print the usage.
    Help,
    /// Hidden: the peak-RSS workload in this (fresh) process, for `client` (`ours`, `floor`).
    Rss {
        /// Which client runs the workload.
        client: String,
        /// The QEMU binary.
        qemu: PathBuf,
    },
    /// Hidden: the many-VMs workload in this (fresh) process, for `client` (`ours`, `serial`,
    /// `events`, `floor`) with `n` VMs.
    Scale {
        /// Which client runs the workload.
        client: String,
        /// How many VMs.
        n: usize,
        /// Queries per VM (default [`crate::scale::QUERIES`]; more, to profile).
        queries: usize,
        /// The QEMU binary.
        qemu: PathBuf,
    },
}

/// Options of a harness run.
#[derive(Debug, PartialEq)]
pub struct Options {
    /// Fewer iterations: a smoke run.
    pub quick: bool,
    /// The groups to run (empty: all).
    pub only: Vec<String>,
    /// The QEMU binary.
    pub qemu: PathBuf,
    /// The Python interpreter for the `qemu.qmp` rows.
    pub python: PathBuf,
}

impl Options {
    /// Whether the group `name` runs.
    pub fn runs(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == name)
    }
}

/// The default QEMU binary: `$QEMU` if set, else `/usr/bin/qemu-system-x86_64`.
fn default_qemu() -> PathBuf {
    std::env::var_os("QEMU")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/qemu-system-x86_64"))
}

/// The usage text.
pub fn usage() -> String {
    let mut text = String::from(
        "usage: qm-bench [--quick] [--only NAME[,NAME...]]... [--qemu PATH] [--python PATH]\n\
         \n\
         Runs the benchmarks of qemu-machine, each against a baseline measured in the same run,\n\
         and prints a markdown report on stdout (progress on stderr).\n\
         \n\
         --quick        few iterations: a smoke run, not figures to quote\n\
         --only NAME    run only these rows (repeatable, or comma-separated)\n\
         --qemu PATH    the QEMU binary (default: $QEMU or /usr/bin/qemu-system-x86_64)\n\
         --python PATH  the Python with qemu.qmp (default: python3)\n\
         \n\
         Row names:\n",
    );
    for (name, what) in GROUPS {
        text.push_str(&format!("  {name:<11}  {what}\n"));
    }
    text
}

/// Parses the arguments (without the program name).
pub fn parse<I, S>(args: I) -> Result<Invocation, String>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut args = args.into_iter().map(Into::into).peekable();
    let mut options = Options {
        quick: false,
        only: Vec::new(),
        qemu: default_qemu(),
        python: PathBuf::from("python3"),
    };
    let mut rss_client = None;
    let mut scale = None;
    let mut first = true;
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "--quick" => options.quick = true,
            "--only" => {
                for name in value("--only")?.split(',').map(str::trim) {
                    if !GROUPS.iter().any(|(g, _)| *g == name) {
                        return Err(format!(
                            "unknown row {name:?} for --only (known: {})",
                            GROUPS
                                .iter()
                                .map(|(g, _)| *g)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                    }
                    if !options.only.iter().any(|o| o == name) {
                        options.only.push(name.to_owned());
                    }
                }
            }
            "--qemu" => options.qemu = PathBuf::from(value("--qemu")?),
            "--python" => options.python = PathBuf::from(value("--python")?),
            "-h" | "--help" => return Ok(Invocation::Help),
            "__rss" if first => rss_client = Some(value("__rss")?),
            "__scale" if first => {
                let client = value("__scale")?;
                let n = value("__scale")?;
                let n: usize = n
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| format!("__scale: bad number of VMs {n:?}"))?;
                let queries = match args.peek() {
                    Some(q) if q.parse::<usize>().is_ok() => {
                        args.next().and_then(|q| q.parse().ok()).unwrap_or(0)
                    }
                    _ => crate::scale::QUERIES,
                };
                scale = Some((client, n, queries));
            }
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
        first = false;
    }
    if let Some((client, n, queries)) = scale {
        return match client.as_str() {
            "ours" | "serial" | "events" | "floor" => Ok(Invocation::Scale {
                client,
                n,
                queries,
                qemu: options.qemu,
            }),
            _ => Err(format!("unknown client {client:?} for __scale")),
        };
    }
    match rss_client {
        Some(client) if client == "ours" || client == "floor" => Ok(Invocation::Rss {
            client,
            qemu: options.qemu,
        }),
        Some(client) => Err(format!("unknown client {client:?} for __rss")),
        None => Ok(Invocation::Run(options)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Options {
        match parse(args.iter().copied()) {
            Ok(Invocation::Run(o)) => o,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_run_everything() {
        let o = run(&[]);
        assert!(!o.quick);
        assert!(GROUPS.iter().all(|(g, _)| o.runs(g)));
        assert_eq!(o.python, PathBuf::from("python3"));
    }

    #[test]
    fn only_selects_rows() {
        let o = run(&[
            "--quick", "--only", "rtt,cabi", "--only", "rss", "--only", "rtt",
        ]);
        assert!(o.quick);
        assert_eq!(o.only, ["rtt", "cabi", "rss"]);
        assert!(o.runs("cabi") && !o.runs("cycle"));
    }

    #[test]
    fn paths() {
        let o = run(&["--qemu", "/opt/q", "--python", "/usr/bin/python3.11"]);
        assert_eq!(o.qemu, PathBuf::from("/opt/q"));
        assert_eq!(o.python, PathBuf::from("/usr/bin/python3.11"));
    }

    #[test]
    fn errors_name_the_problem() {
        let err = |args: &[&str]| parse(args.iter().copied()).unwrap_err();
        assert!(err(&["--only", "nope"]).contains("\"nope\""));
        assert!(err(&["--only"]).contains("--only needs a value"));
        assert!(err(&["--qemu", ""]).contains("--qemu needs a value"));
        assert!(err(&["--fast"]).contains("\"--fast\""));
        assert!(err(&["--quick", "__rss", "ours"]).contains("__rss"));
        assert!(err(&["__rss", "perl"]).contains("\"perl\""));
    }

    #[test]
    fn hidden_rss_subcommand() {
        assert_eq!(
            parse(["__rss", "floor", "--qemu", "/q"]),
            Ok(Invocation::Rss {
                client: "floor".into(),
                qemu: PathBuf::from("/q")
            })
        );
        assert_eq!(parse(["--help"]), Ok(Invocation::Help));
    }

    #[test]
    fn hidden_scale_subcommand() {
        assert_eq!(
            parse(["__scale", "serial", "64", "--qemu", "/q"]),
            Ok(Invocation::Scale {
                client: "serial".into(),
                n: 64,
                queries: crate::scale::QUERIES,
                qemu: PathBuf::from("/q")
            })
        );
        assert!(matches!(
            parse(["__scale", "ours", "2", "5000"]),
            Ok(Invocation::Scale {
                n: 2,
                queries: 5000,
                ..
            })
        ));
        let err = |args: &[&str]| parse(args.iter().copied()).unwrap_err();
        assert!(err(&["__scale", "ours", "0"]).contains("bad number"));
        assert!(err(&["__scale", "ours"]).contains("needs a value"));
        assert!(err(&["__scale", "perl", "2"]).contains("\"perl\""));
    }
}
