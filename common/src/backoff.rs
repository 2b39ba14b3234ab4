//! Pauses between the attempts of a loop that retries until it is told to stop
//! (registering in etcd, reconnecting to a writer): exponential backoff from the
//! `backon` crate, built in one place so every such loop grows its pauses alike.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// Pauses starting at `first`, doubling up to `max` and staying there, without
/// jitter and without end (the loop's own cancellation stops it).
///
/// backon multiplies in `f32`, which leaves a few nanoseconds over (400 ms comes
/// out as 400.000005 ms) that tokio's millisecond timer would round up to a
/// whole millisecond more: each pause is rounded to the nearest millisecond.
pub fn doubling(first: Duration, max: Duration) -> impl Iterator<Item = Duration> {
    let pauses: ExponentialBackoff = ExponentialBuilder::default()
        .with_min_delay(first)
        .with_factor(2.0)
        .with_max_delay(max)
        .without_max_times()
        .build();
    pauses.map(|pause| Duration::from_millis(((pause.as_micros() + 500) / 1000) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_from_the_first_up_to_the_cap_and_stay_there() {
        let pauses: Vec<Duration> = doubling(Duration::from_millis(100), Duration::from_secs(1))
            .take(7)
            .collect();
        let millis: Vec<Duration> = [100, 200, 400, 800, 1000, 1000, 1000]
            .into_iter()
            .map(Duration::from_millis)
            .collect();
        assert_eq!(pauses, millis);
    }
}
