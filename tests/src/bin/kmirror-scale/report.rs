//! The run's figures as a markdown page (printed and written to `bench/results/`).

use std::fmt::Write as _;
use std::time::Duration;

use crate::etcd_load::{EtcdRates, FleetWriteCounts};
use crate::load::LatencySummary;
use crate::memory::{median_and_max, mib, MemoryLog};

/// Everything one run measured.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub title: String,
    /// Settings, as (what, value) lines.
    pub settings: Vec<(String, String)>,
    pub partitions: usize,
    pub start_to_running: Duration,
    pub fleet_writes: FleetWriteCounts,
    pub etcd_window: EtcdRates,
    pub etcd_background: EtcdRates,
    pub rounds: u64,
    pub round_mean: Duration,
    /// Upper bound of the histogram bucket holding the slowest round.
    pub round_max_bound: Option<f64>,
    pub memory: MemoryLog,
    pub recovery_opt: Option<Recovery>,
    /// How late the load's records reached the source, over the whole run.
    pub load_latency: LatencySummary,
    pub load_producers: usize,
    pub loss: LossCheck,
    pub total: Duration,
}

/// The kill of some members and how long their partitions took to run again.
#[derive(Debug, Clone, Default)]
pub struct Recovery {
    pub killed: Vec<String>,
    pub lease_ttl: Duration,
    pub partitions: usize,
    pub all_resumed: Duration,
    pub median_resumed: Duration,
    /// How late the load's records reached the source from the kill until every
    /// partition ran again: a partition runs past where it stood only once a new
    /// record of it is in the source.
    pub load_latency: LatencySummary,
    /// Probe records written (one per affected partition) right after the kill,
    /// and when the last one was in the source.
    pub probes: usize,
    pub probes_delivered: Duration,
    /// Per partition, from its probe's delivery to the source until it was
    /// mirrored: the slowest and the median.
    pub slowest_after_source: Duration,
    pub median_after_source: Duration,
}

/// Source against destination, per partition, once caught up.
#[derive(Debug, Clone, Default)]
pub struct LossCheck {
    pub source_records: i64,
    pub dest_records: i64,
    pub partitions_short: usize,
    pub duplicates: i64,
    pub status_clean: bool,
    pub catch_up: Duration,
}

fn latencies(summary: &LatencySummary) -> String {
    format!(
        "{:.2} s / {:.2} s / {:.2} s ({} records)",
        summary.median.as_secs_f64(),
        summary.p99.as_secs_f64(),
        summary.max.as_secs_f64(),
        summary.records
    )
}

fn seconds(duration: Duration) -> String {
    format!("{:.1} s", duration.as_secs_f64())
}

impl Report {
    pub fn markdown(&self) -> String {
        let mut page = String::new();
        let _ = writeln!(page, "# {}\n", self.title);
        let _ = writeln!(page, "## Settings\n");
        for (what, value) in &self.settings {
            let _ = writeln!(page, "- {what}: {value}");
        }
        let _ = writeln!(page, "\n## Figures\n");
        let _ = writeln!(page, "| measure | value |\n| --- | ---: |");
        let mut row = |what: &str, value: String| {
            let _ = writeln!(page, "| {what} | {value} |");
        };
        row("partitions", self.partitions.to_string());
        row(
            "flow created → every partition checkpointed by its owner",
            seconds(self.start_to_running),
        );
        let writes = &self.fleet_writes;
        row(
            &format!(
                "fleet's etcd write transactions/s (watch on its prefix, {:.0} s)",
                writes.seconds
            ),
            format!("{:.1}", writes.transactions_per_second()),
        );
        for (section, count) in &writes.transactions_by_section {
            row(
                &format!("… of which touching `{section}/`"),
                format!("{:.1}", *count as f64 / writes.seconds.max(1e-3)),
            );
        }
        row(
            "fleet's keys written/s",
            format!("{:.1}", writes.keys_per_second()),
        );
        let net = self.etcd_window.less(&self.etcd_background);
        for (name, what) in [
            ("proposals", "etcd proposals committed/s (writes)"),
            ("range_requests", "etcd Range requests/s (reads)"),
            ("txn_requests", "etcd Txn requests/s (reads and writes)"),
            ("mvcc_ranges", "etcd MVCC range operations/s"),
            ("keepalives", "etcd lease keep-alives/s"),
        ] {
            row(
                &format!("{what}: run − background"),
                format!(
                    "{:.1} ({:.1} − {:.1})",
                    net.get(name),
                    self.etcd_window.get(name),
                    self.etcd_background.get(name)
                ),
            );
        }
        row(
            "leader's reconcile rounds in the window",
            self.rounds.to_string(),
        );
        row(
            "leader's reconcile round, mean",
            format!("{:.0} ms", self.round_mean.as_secs_f64() * 1000.0),
        );
        if let Some(bound) = self.round_max_bound {
            row(
                "leader's slowest round (histogram bucket)",
                format!("≤ {bound} s"),
            );
        }
        for role in ["fetcher", "writer", "coordinator"] {
            let members = self.memory.of_role(role);
            if members.is_empty() {
                continue;
            }
            let (rss_median, rss_max) = median_and_max(
                members
                    .iter()
                    .map(|(_, memory)| memory.max_rss_bytes)
                    .collect(),
            );
            let (peak_median, peak_max) = median_and_max(
                members
                    .iter()
                    .map(|(_, memory)| memory.peak_rss_bytes)
                    .collect(),
            );
            let largest = members
                .iter()
                .max_by_key(|(_, memory)| memory.peak_rss_bytes)
                .map(|(id, _)| *id)
                .unwrap_or_default();
            row(
                &format!("{role}s ({}): RSS median / max (MiB)", members.len()),
                format!("{:.0} / {:.0}", mib(rss_median), mib(rss_max)),
            );
            row(
                &format!("{role}s: peak RSS (VmHWM) median / max (MiB)"),
                format!("{:.0} / {:.0} ({largest})", mib(peak_median), mib(peak_max)),
            );
        }
        if let Some(recovery) = &self.recovery_opt {
            row(
                &format!(
                    "kill -9 of {}: partitions affected",
                    recovery.killed.join(", ")
                ),
                recovery.partitions.to_string(),
            );
            row(
                "… until every one mirrored a record written at the kill (on live members)",
                format!(
                    "{} (median {}; lease TTL {})",
                    seconds(recovery.all_resumed),
                    seconds(recovery.median_resumed),
                    seconds(recovery.lease_ttl)
                ),
            );
            row(
                "… those probe records all in the source",
                format!("{} after the kill", seconds(recovery.probes_delivered)),
            );
            row(
                "… each probe from the source to mirrored, slowest (median)",
                format!(
                    "{} ({})",
                    seconds(recovery.slowest_after_source),
                    seconds(recovery.median_after_source)
                ),
            );
            row(
                "… load's records meanwhile: delivery to the source median / p99 / max",
                latencies(&recovery.load_latency),
            );
        }
        row(
            &format!(
                "load ({} producers): delivery to the source median / p99 / max, whole run",
                self.load_producers
            ),
            latencies(&self.load_latency),
        );
        let loss = &self.loss;
        row("records produced (source)", loss.source_records.to_string());
        row("records in the destination", loss.dest_records.to_string());
        row(
            "partitions with fewer records in the destination",
            loss.partitions_short.to_string(),
        );
        row(
            "duplicates (destination − source)",
            loss.duplicates.to_string(),
        );
        row("load stopped → caught up", seconds(loss.catch_up));
        row(
            "`kmirrorctl status`: every partition at its end, no error",
            if loss.status_clean { "yes" } else { "no" }.to_string(),
        );
        row("whole run", seconds(self.total));
        page
    }
}
