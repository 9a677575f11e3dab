//! What `/proc` says about a process (resident memory and CPU time) and
//! about the machine (TCP socket memory, how busy its cores are).
//!
//! CPU times in `/proc/<pid>/stat` are in clock ticks of `USER_HZ`, which
//! the kernel fixes at 100 per second for user space on every architecture
//! this runs on.

use std::time::Duration;

/// Clock ticks per second in `/proc/<pid>/stat` (`USER_HZ`).
const TICKS_PER_SEC: u64 = 100;

/// Reading `/proc` failed.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// The file could not be read (the process is gone?).
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file did not hold what was expected.
    #[error("{path}: {what} not found")]
    Format {
        /// The file.
        path: String,
        /// What was missing.
        what: &'static str,
    },
}

fn read(path: String) -> Result<(String, String), ProcError> {
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok((path, text)),
        Err(source) => Err(ProcError::Io { path, source }),
    }
}

/// Memory of a process, from `/proc/<pid>/status`, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Memory {
    /// Resident set size.
    pub rss_kib: u64,
    /// The anonymous part of it (heap, stacks): what connections cost.
    pub rss_anon_kib: u64,
}

/// The resident memory of `pid`.
pub fn memory(pid: u32) -> Result<Memory, ProcError> {
    let (path, text) = read(format!("/proc/{pid}/status"))?;
    let field = |name: &'static str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or(ProcError::Format {
                path: path.clone(),
                what: name,
            })
    };
    Ok(Memory {
        rss_kib: field("VmRSS:")?,
        rss_anon_kib: field("RssAnon:")?,
    })
}

/// User plus system CPU time used so far by `pid` (all its threads).
pub fn cpu_time(pid: u32) -> Result<Duration, ProcError> {
    Ok(stat_times(pid)?.own)
}

/// CPU time of `pid` and of its descendants: those alive (read one by
/// one) and those already reaped (the kernel's `cutime`/`cstime`). For a
/// server made of processes, like PostgreSQL (one backend per connection).
pub fn tree_cpu_time(pid: u32) -> Result<Duration, ProcError> {
    let root = stat_times(pid)?;
    let mut total = root.own + root.reaped_children;
    // Parent of every process, read once.
    let mut children: std::collections::HashMap<u32, Vec<u32>> = Default::default();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(p) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if let Ok(t) = stat_times(p) {
                children.entry(t.ppid).or_default().push(p);
            }
        }
    }
    let mut todo = children.get(&pid).cloned().unwrap_or_default();
    while let Some(p) = todo.pop() {
        if let Ok(t) = stat_times(p) {
            // A live child's own time; its reaped children are in its
            // cutime, which only moves into ours when it is reaped.
            total += t.own + t.reaped_children;
        }
        todo.extend(children.get(&p).into_iter().flatten().copied());
    }
    Ok(total)
}

/// The CPU times and parent of one process.
struct StatTimes {
    ppid: u32,
    own: Duration,
    reaped_children: Duration,
}

fn stat_times(pid: u32) -> Result<StatTimes, ProcError> {
    let (path, text) = read(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) is in parentheses and may hold spaces:
    // count fields after its closing parenthesis: state (3), ppid (4), ...,
    // utime (14), stime (15), cutime (16), cstime (17).
    let rest = text
        .rfind(')')
        .map(|i| &text[i + 1..])
        .ok_or(ProcError::Format {
            path: path.clone(),
            what: "command name",
        })?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize, what| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .ok_or(ProcError::Format {
                path: path.clone(),
                what,
            })
    };
    let ticks = |t: u64| Duration::from_millis(t * 1000 / TICKS_PER_SEC);
    Ok(StatTimes {
        ppid: u32::try_from(field(1, "ppid")?).unwrap_or(0),
        own: ticks(field(11, "utime")? + field(12, "stime")?),
        reaped_children: ticks(field(13, "cutime")? + field(14, "cstime")?),
    })
}

/// Kernel-wide TCP socket memory, from `/proc/net/sockstat`: sockets in use
/// and the pages their buffers hold (counts every process on the machine).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SockStat {
    /// TCP sockets in use.
    pub tcp_inuse: u64,
    /// Memory of TCP socket buffers, in KiB.
    pub tcp_mem_kib: u64,
}

/// TCP socket counts and buffer memory of the whole machine.
pub fn sockstat() -> Result<SockStat, ProcError> {
    let (path, text) = read("/proc/net/sockstat".to_owned())?;
    let line = text
        .lines()
        .find(|l| l.starts_with("TCP:"))
        .ok_or(ProcError::Format {
            path: path.clone(),
            what: "TCP line",
        })?;
    let value = |key: &'static str| {
        let mut it = line.split_whitespace();
        while let Some(w) = it.next() {
            if w == key {
                return it.next().and_then(|v| v.parse::<u64>().ok());
            }
        }
        None
    };
    Ok(SockStat {
        tcp_inuse: value("inuse").unwrap_or(0),
        // `mem` is in pages of 4 KiB.
        tcp_mem_kib: value("mem").unwrap_or(0) * 4,
    })
}

/// The whole machine's CPU time since boot, from the `cpu` line of
/// `/proc/stat`: what was busy and what was idle (idle and iowait), in
/// clock ticks of all cores together. Two readings give how busy the
/// machine was between them ([`MachineCpu::busy_since`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MachineCpu {
    /// Ticks spent on anything (user, nice, system, irq, softirq, steal).
    pub busy: u64,
    /// Ticks spent idle or waiting for I/O.
    pub idle: u64,
}

impl MachineCpu {
    /// Reads `/proc/stat`.
    pub fn now() -> Result<Self, ProcError> {
        let (path, text) = read("/proc/stat".to_owned())?;
        Self::parse(&text).ok_or(ProcError::Format {
            path,
            what: "cpu line",
        })
    }

    /// The `cpu` line of a `/proc/stat` text.
    pub fn parse(text: &str) -> Option<Self> {
        let line = text.lines().find(|l| l.starts_with("cpu "))?;
        let ticks: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse().ok())
            .collect::<Option<_>>()?;
        // user nice system idle iowait irq softirq steal [guest guest_nice,
        // already counted in user and nice].
        let at = |i: usize| ticks.get(i).copied().unwrap_or(0);
        if ticks.len() < 4 {
            return None;
        }
        Some(Self {
            busy: at(0) + at(1) + at(2) + at(5) + at(6) + at(7),
            idle: at(3) + at(4),
        })
    }

    /// How busy the machine was from `earlier` to `self`, in cores (0 to
    /// the number of cores); `None` when no tick passed.
    pub fn busy_since(&self, earlier: &Self, cores: usize) -> Option<f64> {
        let busy = self.busy.saturating_sub(earlier.busy);
        let total = busy + self.idle.saturating_sub(earlier.idle);
        (total > 0).then(|| busy as f64 / total as f64 * cores as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_cpu_is_read_from_the_cpu_line() {
        let text = "cpu  100 5 50 1000 20 3 2 10 7 0\ncpu0 50 2 25 500 10 1 1 5 0 0\nintr 1\n";
        let a = MachineCpu::parse(text).unwrap();
        assert_eq!(
            a,
            MachineCpu {
                busy: 170,
                idle: 1020
            }
        );
        let b = MachineCpu {
            busy: 170 + 50,
            idle: 1020 + 150,
        };
        // 50 of 200 ticks busy on 2 cores: half a core.
        assert_eq!(b.busy_since(&a, 2), Some(0.5));
        assert_eq!(a.busy_since(&a, 2), None);
        assert_eq!(MachineCpu::parse("intr 1\n"), None);
        assert_eq!(MachineCpu::parse("cpu  1 x 3 4\n"), None);
        assert!(MachineCpu::now().is_ok());
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        let m = memory(me).unwrap();
        assert!(m.rss_kib > 0 && m.rss_anon_kib <= m.rss_kib, "{m:?}");
        // Burn a little CPU so the figure can move, then read it twice.
        let a = cpu_time(me).unwrap();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(cpu_time(me).unwrap() >= a);
        let own = cpu_time(me).unwrap();
        assert!(tree_cpu_time(me).unwrap() >= own);
        assert!(sockstat().is_ok());
    }

    #[test]
    fn a_missing_process_is_an_error() {
        assert!(memory(u32::MAX).is_err());
        assert!(cpu_time(u32::MAX).is_err());
        assert!(tree_cpu_time(u32::MAX).is_err());
    }
}
