//! What the bench asks of the operating system: enough file descriptors, and the
//! server's resident memory.

use std::path::Path;

/// Descriptors a process needs beyond one per connection.
const SPARE_FDS: u64 = 64;

/// Raises the soft open-files limit to the hard limit, and fails with what to raise when
/// `conns` connections in this process would not fit.
pub fn ensure_fds(conns: u64, procs: u32) -> anyhow::Result<u64> {
    let soft = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0);
    let need = conns + SPARE_FDS;
    if soft != 0 && need > soft {
        let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap_or((soft, soft));
        let per_proc = soft.saturating_sub(SPARE_FDS).max(1);
        let total = conns * u64::from(procs.max(1));
        let suggest = total.div_ceil(per_proc);
        anyhow::bail!(
            "{conns} connections in one process need about {need} open files, but the \
             open-files limit (RLIMIT_NOFILE) is {soft} (hard limit {hard}). Raise the hard \
             limit (`ulimit -Hn` as root, /etc/security/limits.conf, or LimitNOFILE= for a \
             systemd unit), or spread the load over more processes: --procs {suggest}. \
             The server needs the same: one descriptor per connection."
        );
    }
    Ok(soft)
}

/// The resident set size of process `pid`, in bytes (VmRSS in /proc/PID/status).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status")).ok()?;
    parse_vmrss(&status)
}

fn parse_vmrss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vmrss() {
        assert_eq!(
            parse_vmrss("Name:\tx\nVmRSS:\t  2048 kB\nThreads: 2\n"),
            Some(2048 * 1024)
        );
        assert!(rss_bytes(std::process::id()).unwrap() > 0);
    }

    #[test]
    fn small_counts_fit() {
        assert!(ensure_fds(10, 1).is_ok());
        let err = ensure_fds(100_000_000, 2).unwrap_err().to_string();
        assert!(err.contains("--procs"), "{err}");
    }
}
