//! The rate a partition sends at, smoothed, and when that rate is worth a
//! checkpoint write of its own.

use std::time::Duration;

use tokio::time::Instant;

/// Time constant of the smoothed rates.
const RATE_TIME_CONSTANT: Duration = Duration::from_secs(2);
/// A partition that sent nothing for this long has a rate of exactly 0.
pub(crate) const IDLE_AFTER: Duration = Duration::from_secs(5);
/// Least time between two checkpoints written only because the rate changed
/// (the position moved in neither): an idle partition's decaying rate costs etcd
/// a few writes, then none.
pub(crate) const RATE_REFRESH: Duration = Duration::from_secs(5);

/// Smoothed records/s and bytes/s a partition sends, for load-based assignment
/// and for what `status`, `members` and `top` show. An idle partition's rate
/// falls to exactly 0.
#[derive(Debug, Default)]
pub struct RateMeter {
    records: u64,
    bytes: u64,
    last_sample_opt: Option<Instant>,
    last_sent_opt: Option<Instant>,
    pub records_per_sec: f64,
    pub bytes_per_sec: f64,
}

impl RateMeter {
    pub fn add(&mut self, records: usize, bytes: usize, now: Instant) {
        self.records += records as u64;
        self.bytes += bytes as u64;
        self.last_sent_opt = Some(now);
    }

    /// Folds what was counted since the last sample into the smoothed rates
    /// (exponentially, with time constant [`RATE_TIME_CONSTANT`] whatever the
    /// sampling interval).
    pub fn sample(&mut self, now: Instant) {
        let Some(last_sample) = self.last_sample_opt.replace(now) else {
            return;
        };
        let elapsed = now.duration_since(last_sample).as_secs_f64();
        if elapsed <= 0.0 {
            return;
        }
        let weight = 1.0 - (-elapsed / RATE_TIME_CONSTANT.as_secs_f64()).exp();
        let records_per_sec = self.records as f64 / elapsed;
        let bytes_per_sec = self.bytes as f64 / elapsed;
        self.records_per_sec += weight * (records_per_sec - self.records_per_sec);
        self.bytes_per_sec += weight * (bytes_per_sec - self.bytes_per_sec);
        self.records = 0;
        self.bytes = 0;
        let idle = self
            .last_sent_opt
            .is_none_or(|last_sent| now.duration_since(last_sent) >= IDLE_AFTER);
        if idle {
            self.records_per_sec = 0.0;
            self.bytes_per_sec = 0.0;
        }
    }
}

/// Whether the rate in the last checkpoint written no longer tells the truth and
/// is worth a write of its own: a fall to 0 at once, other changes at most every
/// [`RATE_REFRESH`].
pub fn rate_outdated(
    records_per_sec: f64,
    rate_written: Option<(f64, Instant)>,
    now: Instant,
) -> bool {
    match rate_written {
        None => records_per_sec > 0.0,
        Some((written, _)) if written == records_per_sec => false,
        Some(_) if records_per_sec == 0.0 => true,
        Some((_, written_at)) => now.duration_since(written_at) >= RATE_REFRESH,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_partitions_rate_falls_to_exactly_zero() {
        let start = Instant::now();
        let mut meter = RateMeter::default();
        meter.sample(start);
        for second in 1..=10 {
            let now = start + Duration::from_secs(second);
            meter.add(1_000, 100_000, now);
            meter.sample(now);
        }
        assert!(
            (900.0..=1_000.0).contains(&meter.records_per_sec),
            "{meter:?}"
        );
        let last_sent = start + Duration::from_secs(10);
        meter.sample(last_sent + Duration::from_secs(2));
        assert!(meter.records_per_sec > 0.0 && meter.records_per_sec < 500.0);
        meter.sample(last_sent + IDLE_AFTER);
        assert_eq!((meter.records_per_sec, meter.bytes_per_sec), (0.0, 0.0));
    }

    #[test]
    fn the_rate_smooths_the_same_whatever_the_sampling_interval() {
        let rate_after = |interval: Duration| {
            let start = Instant::now();
            let mut meter = RateMeter::default();
            meter.sample(start);
            let mut now = start;
            while now < start + Duration::from_secs(2) {
                now += interval;
                meter.add((interval.as_millis() * 10) as usize, 0, now);
                meter.sample(now);
            }
            meter.records_per_sec
        };
        let fast = rate_after(Duration::from_millis(200));
        let slow = rate_after(Duration::from_secs(1));
        assert!((fast - slow).abs() < 1.0, "{fast} vs {slow}");
    }

    #[test]
    fn a_rate_is_written_at_once_when_it_falls_to_zero_and_otherwise_seldom() {
        let now = Instant::now();
        let just_written = Some((800.0, now));
        assert!(!rate_outdated(800.0, just_written, now));
        assert!(rate_outdated(0.0, just_written, now));
        assert!(!rate_outdated(
            400.0,
            just_written,
            now + Duration::from_secs(1)
        ));
        assert!(rate_outdated(400.0, just_written, now + RATE_REFRESH));
        assert!(!rate_outdated(0.0, Some((0.0, now)), now + RATE_REFRESH));
    }
}
