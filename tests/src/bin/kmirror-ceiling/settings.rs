//! The ceiling's librdkafka settings and delivery check.

use std::sync::Mutex;

use anyhow::{bail, Result};
use rdkafka::producer::{DeliveryResult, ProducerContext};
use rdkafka::ClientContext;

/// Keeps the first failed delivery: the ceiling does not retry around librdkafka
/// (whose idempotent producer already retries what can be retried), it stops.
#[derive(Default)]
pub struct FailFast {
    failure: Mutex<Option<String>>,
}

impl ClientContext for FailFast {
    /// librdkafka's statistics, when `statistics.interval.ms` is set, go to stderr
    /// as JSON lines: the place to look for produce latencies while tuning.
    fn stats_raw(&self, statistics: &[u8]) {
        eprintln!("{}", String::from_utf8_lossy(statistics));
    }
}

impl ProducerContext for FailFast {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _opaque: ()) {
        if let Err((error, _)) = result {
            let mut failure = self.failure.lock().expect("not poisoned");
            failure.get_or_insert_with(|| error.to_string());
        }
    }
}

impl FailFast {
    pub fn check(&self) -> Result<()> {
        if let Some(failure) = self.failure.lock().expect("not poisoned").as_ref() {
            bail!("a delivery failed: {failure}");
        }
        Ok(())
    }
}
