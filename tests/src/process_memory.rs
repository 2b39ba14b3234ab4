//! Memory of a fleet's processes as the kernel counts it: the resident set now
//! (`VmRSS`) and its peak since the process started (`VmHWM`), from
//! `/proc/<pid>/status`.

use anyhow::{anyhow, Context as _, Result};

use crate::Fleet;

/// Resident memory of one process, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessMemory {
    pub rss_bytes: u64,
    pub peak_rss_bytes: u64,
}

impl ProcessMemory {
    /// Reads `/proc/<pid>/status`.
    pub fn of_pid(pid: u32) -> Result<Self> {
        let path = format!("/proc/{pid}/status");
        let status =
            std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        Self::parse(&status).with_context(|| format!("unexpected {path}"))
    }

    /// The `VmRSS` and `VmHWM` lines of a `/proc/<pid>/status` text.
    pub fn parse(status: &str) -> Result<Self> {
        let field = |name: &str| -> Result<u64> {
            let line = status
                .lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .ok_or_else(|| anyhow!("no {name} line"))?;
            let kib: u64 = line
                .trim()
                .strip_suffix("kB")
                .ok_or_else(|| anyhow!("{name} is not in kB: {line:?}"))?
                .trim()
                .parse()
                .with_context(|| format!("{name} is not a number: {line:?}"))?;
            Ok(kib * 1024)
        };
        Ok(Self {
            rss_bytes: field("VmRSS")?,
            peak_rss_bytes: field("VmHWM")?,
        })
    }
}

impl Fleet {
    /// The process id of a running member (`None` while it is stopped).
    pub fn pid(&self, member_id: &str) -> Option<u32> {
        let child = self.member(member_id).child.lock().expect("member lock");
        child.as_ref().map(std::process::Child::id)
    }

    /// Memory of a running member (`None` while it is stopped).
    pub fn memory(&self, member_id: &str) -> Option<Result<ProcessMemory>> {
        self.pid(member_id).map(ProcessMemory::of_pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_are_read_in_bytes() {
        let status = "Name:\tkmirror-fetcher\nVmPeak:\t  900000 kB\nVmHWM:\t   51200 kB\nVmRSS:\t   40960 kB\n";
        assert_eq!(
            ProcessMemory::parse(status).unwrap(),
            ProcessMemory {
                rss_bytes: 40 * 1024 * 1024,
                peak_rss_bytes: 50 * 1024 * 1024,
            }
        );
        assert!(ProcessMemory::parse("Name:\tx\n").is_err());
    }

    #[test]
    fn this_process_has_a_resident_set() {
        let memory = ProcessMemory::of_pid(std::process::id()).unwrap();
        assert!(memory.rss_bytes > 0 && memory.peak_rss_bytes >= memory.rss_bytes);
    }
}
