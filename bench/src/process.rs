//! Servers the benchmarks start as child processes, and the CPU time processes
//! spend, read from `/proc`.

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::Context;

/// Clock ticks per second of the times in `/proc/<pid>/stat`: USER_HZ, 100 on
/// every Linux architecture (the kernel scales to it whatever its own HZ).
const TICKS_PER_SECOND: f64 = 100.0;

/// A server started as a child process in a process group of its own, so that
/// it and any worker processes it starts can be stopped together: SIGTERM to
/// the group when dropped (a graceful stop), SIGKILL if it has not exited
/// within 10 s. No exit path of a benchmark leaves it running.
#[derive(Debug)]
pub struct ChildServer {
    child: Child,
    name: String,
}

impl ChildServer {
    pub fn spawn(name: &str, mut command: Command) -> anyhow::Result<Self> {
        let child = command.process_group(0).spawn().with_context(|| format!("starting {name}: {command:?}"))?;
        Ok(ChildServer { child, name: name.to_owned() })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the process has exited (it never should while a benchmark runs).
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            Some(status) => anyhow::bail!("{} exited: {status}", self.name),
            None => Ok(()),
        }
    }

    fn signal_group(&self, signal: &str) {
        // Through kill(1): sending a signal from Rust needs unsafe libc calls, which the workspace forbids.
        let _ = Command::new("kill").args(["-s", signal, "--", &format!("-{}", self.pid())]).status();
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        self.signal_group("TERM");
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.signal_group("KILL");
        let _ = self.child.wait();
    }
}

/// The child is given its address: a port the OS just handed out and took back.
pub fn free_addr() -> anyhow::Result<String> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.to_string())
}

/// `(ppid, utime + stime, cutime + cstime)` in ticks, from the text of `/proc/<pid>/stat`.
fn parse_stat(stat: &str) -> Option<(u32, u64, u64)> {
    // The command name (field 2) is in parentheses and may hold spaces or ')'.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    let ppid = u32::try_from(field(4)?).ok()?;
    Some((ppid, field(14)? + field(15)?, field(16)? + field(17)?))
}

/// CPU seconds (user + system) this process has used, all its threads together.
pub fn own_cpu_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
    let (_, ticks, _) = parse_stat(&stat).context("unreadable /proc/self/stat")?;
    Ok(ticks as f64 / TICKS_PER_SECOND)
}

/// CPU seconds (user + system) process `root` and every live descendant have
/// used, with the descendants they have already reaped (`cutime` + `cstime`),
/// so that a worker that exits between two readings is not lost.
pub fn tree_cpu_seconds(root: u32) -> anyhow::Result<f64> {
    let mut processes: HashMap<u32, (u32, u64)> = HashMap::new();
    for entry in std::fs::read_dir("/proc").context("listing /proc")? {
        let Some(pid) = entry?.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else {
            continue;
        };
        // A process may exit between the listing and the read.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some((ppid, own, reaped)) = parse_stat(&stat) {
            processes.insert(pid, (ppid, own + reaped));
        }
    }
    anyhow::ensure!(processes.contains_key(&root), "process {root} is not running");
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (&pid, &(ppid, _)) in &processes {
        children.entry(ppid).or_default().push(pid);
    }
    let (mut ticks, mut pending) = (0, vec![root]);
    while let Some(pid) = pending.pop() {
        ticks += processes[&pid].1;
        pending.extend(children.get(&pid).into_iter().flatten());
    }
    Ok(ticks as f64 / TICKS_PER_SECOND)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_with_spaces_and_parentheses_in_the_name_parses() {
        let stat = "4242 (a (b) c) S 17 4242 4242 0 -1 4194560 100 0 0 0 250 75 3 4 20 0 9 0 12345 1000 200";
        assert_eq!(parse_stat(stat), Some((17, 325, 7)));
    }

    #[test]
    fn this_process_is_found_in_its_own_tree() {
        let pid = std::process::id();
        assert!(tree_cpu_seconds(pid).unwrap() >= own_cpu_seconds().unwrap() - 0.5);
        assert!(tree_cpu_seconds(u32::MAX).is_err());
    }
}
