//! Memory of every member over the run: the largest resident set seen at the
//! samples (`VmRSS`) and the kernel's peak (`VmHWM`, which catches what falls
//! between samples), kept for members that were killed too.

use std::collections::BTreeMap;

use kmirror_tests::process_memory::ProcessMemory;
use kmirror_tests::Fleet;

/// One member's memory so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemberMemory {
    pub last_rss_bytes: u64,
    pub max_rss_bytes: u64,
    pub peak_rss_bytes: u64,
}

/// Memory of every member, by id.
#[derive(Debug, Clone, Default)]
pub struct MemoryLog {
    pub members: BTreeMap<String, MemberMemory>,
}

impl MemoryLog {
    /// Samples every running member of `fleet`.
    pub fn sample(&mut self, fleet: &Fleet) {
        for member_id in fleet.member_ids() {
            let Some(Ok(memory)) = fleet.memory(&member_id) else {
                continue;
            };
            self.record(&member_id, memory);
        }
    }

    fn record(&mut self, member_id: &str, memory: ProcessMemory) {
        let entry = self.members.entry(member_id.to_string()).or_default();
        entry.last_rss_bytes = memory.rss_bytes;
        entry.max_rss_bytes = entry.max_rss_bytes.max(memory.rss_bytes);
        entry.peak_rss_bytes = entry.peak_rss_bytes.max(memory.peak_rss_bytes);
    }

    /// Members whose id starts with `role` (`fetcher`, `writer`, `coordinator`).
    pub fn of_role(&self, role: &str) -> Vec<(&str, MemberMemory)> {
        self.members
            .iter()
            .filter(|(id, _)| id.starts_with(role))
            .map(|(id, memory)| (id.as_str(), *memory))
            .collect()
    }
}

/// Median and maximum of `values` (0 when empty).
pub fn median_and_max(mut values: Vec<u64>) -> (u64, u64) {
    if values.is_empty() {
        return (0, 0);
    }
    values.sort_unstable();
    (values[values.len() / 2], values[values.len() - 1])
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_keeps_its_largest_sample_and_peak() {
        let mut log = MemoryLog::default();
        for (rss, peak) in [(10, 12), (30, 31), (20, 31)] {
            log.record(
                "fetcher-0",
                ProcessMemory {
                    rss_bytes: rss,
                    peak_rss_bytes: peak,
                },
            );
        }
        let memory = log.members["fetcher-0"];
        assert_eq!(
            (
                memory.last_rss_bytes,
                memory.max_rss_bytes,
                memory.peak_rss_bytes
            ),
            (20, 30, 31)
        );
        assert_eq!(log.of_role("writer").len(), 0);
        assert_eq!(median_and_max(vec![5, 1, 3]), (3, 5));
    }
}
