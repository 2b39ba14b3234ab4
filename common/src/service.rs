//! Command-line settings every fleet member takes, with `KMIRROR_*` environment
//! overrides.

use std::time::Duration;

use clap::Args;

use crate::etcd::EtcdSettings;

/// Settings shared by the coordinator, the fetcher and the writer.
#[derive(Debug, Clone, Args)]
pub struct MemberArgs {
    /// etcd endpoints, comma-separated.
    #[arg(
        long,
        env = "KMIRROR_ETCD",
        default_value = "http://127.0.0.1:2379",
        value_delimiter = ','
    )]
    pub etcd: Vec<String>,

    /// Fleet name: all control state lives under /kmirror/<fleet>/ in etcd.
    #[arg(long, env = "KMIRROR_FLEET", default_value = "local")]
    pub fleet: String,

    /// Member id, unique in the fleet [default: role plus a random suffix].
    #[arg(long, env = "KMIRROR_ID")]
    pub id: Option<String>,

    /// Address the gRPC server listens on.
    #[arg(long, env = "KMIRROR_LISTEN")]
    pub listen: Option<std::net::SocketAddr>,

    /// Address other members reach this one at [default: the listen address].
    #[arg(long, env = "KMIRROR_ADVERTISE")]
    pub advertise: Option<String>,

    /// TTL of the member's etcd lease. A member that stops renewing it is gone
    /// after this long, and its work moves to others.
    #[arg(long, env = "KMIRROR_LEASE_TTL", default_value = "6s", value_parser = humantime::parse_duration)]
    pub lease_ttl: Duration,

    /// How long a graceful stop (SIGTERM) may take before the member exits anyway.
    #[arg(long, env = "KMIRROR_SHUTDOWN_GRACE", default_value = "20s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,

    #[command(flatten)]
    pub metrics: crate::http::MetricsArgs,
}

impl MemberArgs {
    pub fn etcd_settings(&self) -> EtcdSettings {
        EtcdSettings {
            endpoints: self.etcd.clone(),
            fleet: self.fleet.clone(),
        }
    }
}

/// HTTP/2 flow-control window of one replicate stream, on both ends. The protocol's
/// default (64 KiB) lets a fetcher send only that much before waiting a round trip
/// for the writer's window update, which caps a stream far below what Kafka
/// delivers; a few batches' worth keeps the stream busy without letting one
/// connection buffer without bound.
pub const REPLICATE_STREAM_WINDOW_BYTES: u32 = 8 * 1024 * 1024;

/// HTTP/2 flow-control window of one fetcher-to-writer connection (all its streams).
pub const REPLICATE_CONNECTION_WINDOW_BYTES: u32 = 16 * 1024 * 1024;
