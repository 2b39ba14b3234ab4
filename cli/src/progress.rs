//! Progress of a flow being waited for (`kmirrorctl flow wait`, `kmirror mirror
//! --until-caught-up`): records done out of the target, throughput measured between
//! polls, ETA; a bar on a terminal, plain lines otherwise.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use kmirror_proto::v1::FlowStatus;

use crate::output::{human_bytes_rate, human_duration, human_rate};

/// How far back the client-side rate looks.
const RATE_WINDOW: Duration = Duration::from_secs(10);
const BAR_WIDTH: usize = 30;

/// Where a waited-for flow stands after one poll.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Done: the migration completed (or a continuous flow has no lag left).
    Done(String),
    /// Cannot finish: the reason.
    Failed(String),
    /// Still going.
    Waiting,
}

/// Follows one flow across polls.
pub struct Tracker {
    flow: String,
    started: Instant,
    /// (when, records done) of recent polls.
    samples: VecDeque<(Instant, i64)>,
    unhealthy_since_opt: Option<Instant>,
    fail_after: Duration,
}

/// Records done and the total to do: `(done, total)`. For a migration these come
/// from its captured targets; for a continuous flow the total is unknown and the
/// lag is what is left.
pub fn done_and_total(flow: &FlowStatus) -> (i64, Option<i64>) {
    if flow.until_caught_up && flow.target_records >= 0 {
        let remaining = flow.remaining_records.max(0);
        (
            (flow.target_records - remaining).max(0),
            Some(flow.target_records),
        )
    } else {
        let mirrored: i64 = flow
            .partitions
            .iter()
            .map(|partition| partition.mirrored_offset.max(0))
            .sum();
        (mirrored, None)
    }
}

impl Tracker {
    pub fn new(flow: &str, fail_after: Duration) -> Self {
        Self {
            flow: flow.to_string(),
            started: Instant::now(),
            samples: VecDeque::new(),
            unhealthy_since_opt: None,
            fail_after,
        }
    }

    /// Takes one status of the flow, at `now`.
    pub fn observe(&mut self, status: &FlowStatus, now: Instant) -> Verdict {
        let (done, _) = done_and_total(status);
        self.samples.push_back((now, done));
        while self
            .samples
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > RATE_WINDOW)
            && self.samples.len() > 2
        {
            self.samples.pop_front();
        }
        let elapsed = human_duration(now.duration_since(self.started).as_secs_f64());
        if status.state == "completed" {
            return Verdict::Done(format!(
                "flow {} completed: {} records mirrored ({elapsed} waited)",
                self.flow,
                status.target_records.max(0)
            ));
        }
        if !status.until_caught_up
            && status.state == "running"
            && status.total_lag == 0
            && !status.partitions.is_empty()
            && status.partitions.iter().all(|partition| partition.lag == 0)
        {
            return Verdict::Done(format!(
                "flow {} caught up: no lag left ({elapsed} waited)",
                self.flow
            ));
        }
        let unhealthy = match status.state.as_str() {
            "failing" => Some(format!("flow {} is failing: {}", self.flow, status.error)),
            "degraded" => Some(format!(
                "flow {} is degraded: {}",
                self.flow,
                status
                    .partitions
                    .iter()
                    .filter(|partition| !partition.error.is_empty())
                    .map(|partition| format!(
                        "{}/{}: {}",
                        partition.topic, partition.partition, partition.error
                    ))
                    .collect::<Vec<_>>()
                    .join("; ")
            )),
            _ => None,
        };
        match unhealthy {
            Some(reason) => {
                let since = *self.unhealthy_since_opt.get_or_insert(now);
                if now.duration_since(since) >= self.fail_after {
                    return Verdict::Failed(format!(
                        "{reason} (for {})",
                        human_duration(now.duration_since(since).as_secs_f64())
                    ));
                }
            }
            None => self.unhealthy_since_opt = None,
        }
        Verdict::Waiting
    }

    /// Records per second over the recent polls; `None` until two polls apart.
    pub fn rate(&self) -> Option<f64> {
        let (first_at, first_done) = self.samples.front()?;
        let (last_at, last_done) = self.samples.back()?;
        let seconds = last_at.duration_since(*first_at).as_secs_f64();
        if seconds < 0.5 {
            return None;
        }
        Some(((last_done - first_done) as f64 / seconds).max(0.0))
    }

    /// The progress line for the latest status: a bar when `terminal`.
    pub fn line(&self, status: &FlowStatus, terminal: bool) -> String {
        let (done, total_opt) = done_and_total(status);
        let rate_opt = self.rate().or(if status.records_per_sec > 0.0 {
            Some(status.records_per_sec)
        } else {
            None
        });
        let remaining = match total_opt {
            Some(total) => (total - done).max(0),
            None => status.total_lag.max(0),
        };
        let eta = match rate_opt {
            Some(rate) if rate > 0.0 => human_duration(remaining as f64 / rate),
            _ if remaining == 0 => "0s".to_string(),
            _ => "-".to_string(),
        };
        let rate = rate_opt.map(human_rate).unwrap_or_else(|| "-".to_string());
        let bytes = human_bytes_rate(status.bytes_per_sec);
        match (total_opt, terminal) {
            (Some(total), true) => {
                let fraction = if total == 0 {
                    1.0
                } else {
                    done as f64 / total as f64
                };
                let filled = ((fraction * BAR_WIDTH as f64).round() as usize).min(BAR_WIDTH);
                format!(
                    "{} [{}{}] {:5.1}%  {done}/{total} records  {rate} rec/s  {bytes}  ETA {eta}",
                    self.flow,
                    "#".repeat(filled),
                    "-".repeat(BAR_WIDTH - filled),
                    fraction * 100.0,
                )
            }
            (Some(total), false) => {
                let percent = if total == 0 {
                    100.0
                } else {
                    done as f64 * 100.0 / total as f64
                };
                format!(
                    "flow {}: {done}/{total} records ({percent:.1}%), {rate} records/s, {bytes}, ETA {eta}, state {}",
                    self.flow, status.state
                )
            }
            (None, _) if status.until_caught_up => format!(
                "flow {}: waiting for the leader to capture the source end offsets (state {})",
                self.flow, status.state
            ),
            (None, _) => format!(
                "flow {}: {done} records mirrored, lag {remaining}, {rate} records/s, {bytes}, ETA {eta}, state {}",
                self.flow, status.state
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kmirror_proto::v1::PartitionStatus;

    fn migration(target: i64, remaining: i64, state: &str) -> FlowStatus {
        FlowStatus {
            name: "move".to_string(),
            state: state.to_string(),
            phase: state.to_string(),
            until_caught_up: true,
            target_records: target,
            remaining_records: remaining,
            partitions: vec![PartitionStatus::default()],
            ..FlowStatus::default()
        }
    }

    #[test]
    fn progress_counts_records_done_and_measures_the_rate_between_polls() {
        let mut tracker = Tracker::new("move", Duration::from_secs(30));
        let start = Instant::now();
        assert_eq!(
            tracker.observe(&migration(1000, 1000, "running"), start),
            Verdict::Waiting
        );
        let later = start + Duration::from_secs(2);
        let status = migration(1000, 600, "running");
        assert_eq!(tracker.observe(&status, later), Verdict::Waiting);
        assert_eq!(tracker.rate(), Some(200.0));
        assert_eq!(
            tracker.line(&status, false),
            "flow move: 400/1000 records (40.0%), 200 records/s, 0 B/s, ETA 3s, state running"
        );
        let bar = tracker.line(&status, true);
        assert!(
            bar.starts_with("move [############------------------]  40.0%"),
            "{bar}"
        );
    }

    #[test]
    fn a_completed_migration_is_done_and_a_lasting_failure_fails() {
        let mut tracker = Tracker::new("move", Duration::from_secs(5));
        let start = Instant::now();
        assert!(matches!(
            tracker.observe(&migration(10, 0, "completed"), start),
            Verdict::Done(_)
        ));
        let mut failing = migration(10, 5, "failing");
        failing.error = "source cluster src is not defined".to_string();
        assert_eq!(tracker.observe(&failing, start), Verdict::Waiting);
        let verdict = tracker.observe(&failing, start + Duration::from_secs(6));
        let Verdict::Failed(reason) = verdict else {
            panic!("{verdict:?}");
        };
        assert!(
            reason.contains("source cluster src is not defined"),
            "{reason}"
        );
    }
}
