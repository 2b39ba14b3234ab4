//! Which Kafka cluster a helper talks to, how long its requests may take, and
//! running librdkafka's blocking calls off the async threads.

use std::fmt;
use std::time::Duration;

use anyhow::{Context as _, Result};
use rdkafka::config::ClientConfig;

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
    /// A cluster a test started for itself that needs client settings
    /// (TLS, SASL) beyond its bootstrap address.
    Secured(&'static SecuredCluster),
}

/// A secured cluster's bootstrap address and the librdkafka settings every
/// test client uses for it (the tools' super user's).
#[derive(Debug, PartialEq, Eq)]
pub struct SecuredCluster {
    pub bootstrap: String,
    pub properties: Vec<(String, String)>,
}

/// A client config for `cluster`: its bootstrap address and, for a secured
/// cluster, its security settings.
pub(super) fn cluster_config(cluster: Cluster) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", cluster.bootstrap());
    if let Cluster::Secured(secured) = cluster {
        for (key, value) in &secured.properties {
            config.set(key, value);
        }
    }
    config
}

impl fmt::Display for Cluster {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Cluster::Source => "source",
            Cluster::Dest => "destination",
            Cluster::Custom(bootstrap) => bootstrap,
            Cluster::Secured(secured) => &secured.bootstrap,
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
