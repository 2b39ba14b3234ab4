//! Runtime code the kmirror services share: domain types, the etcd key schema and the
//! values stored under it, the member life cycle (config, lease keeper, health,
//! tracked tasks), Kafka client properties, telemetry set-up and the shutdown signal.
#![forbid(unsafe_code)]

pub mod backoff;
pub mod cluster_access;
pub mod config_file;
pub mod etcd;
pub mod health;
pub mod holds;
pub mod http;
pub mod kafka;
pub mod lease_keeper;
pub mod member_config;
pub mod membership;
pub mod metrics;
pub mod offset_map;
pub mod runtime;
pub mod schema;
pub mod secrets;
pub mod service;
pub mod shutdown;
pub mod systemd;
pub mod telemetry;
pub mod tls;
pub mod types;

pub use schema::Keys;
pub use types::{ClusterName, Epoch, FlowName, MemberId, PartitionKey, Role};

/// Version reported by every member when it registers.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Milliseconds since the Unix epoch, for timestamps stored in etcd.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or_default()
}
