//! What /proc says about a thread or a process: CPU time (the scheduler's own count, in ns)
//! and context switches.

/// CPU time and context switches of a thread or process.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    /// CPU time, ns (`/proc/.../schedstat`, the scheduler's own count).
    pub cpu_ns: f64,
    /// Voluntary context switches (it went to sleep).
    pub voluntary: f64,
    /// Involuntary context switches (it was preempted).
    pub involuntary: f64,
}

impl Usage {
    /// This thread's CPU time from `CLOCK_THREAD_CPUTIME_ID` (which, unlike schedstat,
    /// includes the time slice it is running in), ns.
    pub fn thread_cpu_ns() -> Result<f64, String> {
        // SAFETY: all-zero is a valid timespec; clock_gettime writes into it.
        let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
        // SAFETY: a valid clock id and a writable timespec.
        if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
            return Err(format!(
                "clock_gettime: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(ts.tv_sec as f64 * 1e9 + ts.tv_nsec as f64)
    }

    /// Reads `/proc/<path>/schedstat` and `/proc/<path>/status` (`path`: `thread-self`, a pid).
    pub fn read(path: &str) -> Result<Usage, String> {
        let read = |file: &str| {
            std::fs::read_to_string(format!("/proc/{path}/{file}"))
                .map_err(|e| format!("reading /proc/{path}/{file}: {e}"))
        };
        let schedstat = read("schedstat")?;
        let status = read("status")?;
        Usage::parse(&schedstat, &status).ok_or_else(|| format!("unreadable /proc/{path}"))
    }

    /// From the texts of a schedstat and a status file.
    pub fn parse(schedstat: &str, status: &str) -> Option<Usage> {
        let cpu_ns = schedstat.split_whitespace().next()?.parse().ok()?;
        let field = |name: &str| {
            status.lines().find_map(|line| {
                line.strip_prefix(name)?
                    .strip_prefix(':')?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
        };
        Some(Usage {
            cpu_ns,
            voluntary: field("voluntary_ctxt_switches")?,
            involuntary: field("nonvoluntary_ctxt_switches")?,
        })
    }

    /// `self - before`, field by field.
    pub fn minus(self, before: Usage) -> Usage {
        Usage {
            cpu_ns: self.cpu_ns - before.cpu_ns,
            voluntary: self.voluntary - before.voluntary,
            involuntary: self.involuntary - before.involuntary,
        }
    }

    /// Voluntary and involuntary together.
    pub fn switches(&self) -> f64 {
        self.voluntary + self.involuntary
    }
}

/// The CPU time of every thread of the processes `pids`, ns.
pub fn threads_cpu_ns(pids: &[u32]) -> f64 {
    let mut total = 0.0;
    for pid in pids {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) {
                total += text
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0);
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_from_proc_texts() {
        let status = "Name:\tqm-bench\nvoluntary_ctxt_switches:\t12\n\
                      nonvoluntary_ctxt_switches:\t3\n";
        assert_eq!(
            Usage::parse("1500 20 4\n", status),
            Some(Usage {
                cpu_ns: 1500.0,
                voluntary: 12.0,
                involuntary: 3.0
            })
        );
        assert_eq!(Usage::parse("", status), None);
        assert_eq!(Usage::parse("1 2 3", "Name:\tx\n"), None);
    }

    #[test]
    fn this_thread_has_usage() {
        assert!(Usage::thread_cpu_ns().unwrap() > 0.0);
        assert!(Usage::read("thread-self").unwrap().cpu_ns >= 0.0);
        assert!(Usage::read(&std::process::id().to_string()).is_ok());
    }
}
