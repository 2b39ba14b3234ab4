//! Which Kafka cluster a helper talks to, how long its requests may take, and
//! running librdkafka's blocking calls off the async threads.

use std::fmt;
use std::time::Duration;

use anyhow::{Context as _, Result};

use crate::stack::stack;

/// How long a single metadata or watermark request may take.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long reading a whole topic or flushing a producer may take.
pub(super) const BULK_TIMEOUT: Duration = Duration::from_secs(300);

/// One of the two clusters of the local stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cluster {
    Source,
    Dest,
    /// A cluster a test started for itself, by bootstrap address.
    Custom(&'static str),
}

impl fmt::Display for Cluster {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Cluster::Source => "source",
            Cluster::Dest => "destination",
            Cluster::Custom(bootstrap) => bootstrap,
        })
    }
}

impl Cluster {
    pub fn bootstrap(self) -> &'static str {
        stack().bootstrap(self)
    }
}

/// Runs blocking librdkafka work off the async threads.
pub(super) async fn blocking<T, Work>(work: Work) -> Result<T>
where
    T: Send + 'static,
    Work: FnOnce() -> Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .context("blocking Kafka task panicked")?
}
