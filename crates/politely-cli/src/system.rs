//! What the benchmarks read from the operating system: a process's CPU time and memory from
//! /proc, and the open-files limit.

use std::fs;

/// Raises the open-files limit as far as this process may (as root, to 1,048,576; otherwise the
/// soft limit to the hard one), and returns the new soft limit.
pub(crate) fn raise_open_files_limit() -> u64 {
    use rlimit::Resource;
    const WANT: u64 = 1 << 20;
    if Resource::NOFILE.set(WANT, WANT).is_err() {
        let _ = rlimit::increase_nofile_limit(WANT);
    }
    Resource::NOFILE.get().map_or(0, |(soft, _)| soft)
}

/// CPU time a process has used, all its threads, in nanoseconds (from each thread's
/// /proc/PID/task/TID/schedstat, which counts in nanoseconds rather than clock ticks).
pub(crate) fn cpu_nanos(pid: u32) -> Option<u64> {
    let mut total = 0;
    for task in fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let path = task.ok()?.path().join("schedstat");
        // A thread that ended between the listing and the read counts as nothing.
        if let Ok(text) = fs::read_to_string(path) {
            total += text.split_whitespace().next()?.parse::<u64>().ok()?;
        }
    }
    Some(total)
}

/// A process's resident memory in bytes (VmRSS).
pub(crate) fn rss_bytes(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
