//! What fleet a test starts: how many of each member, their timings (short, so
//! that tests run fast), extra settings, and whether it runs with TLS.

use std::time::Duration;

use kmirror_common::Role;

use crate::kafka::Cluster;

/// What fleet to start. Timings are short so that tests run fast.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// Prefix of the fleet name; a random suffix makes it unique.
    pub name: String,
    pub coordinators: usize,
    pub fetchers: usize,
    pub writers: usize,
    pub refresh_interval: Duration,
    pub checkpoint_interval: Duration,
    pub retry_backoff: Duration,
    pub lease_ttl: Duration,
    pub shutdown_grace: Duration,
    pub max_in_flight_batches: Option<u32>,
    /// `--producer-property k=v` for every writer.
    pub writer_properties: Vec<(String, String)>,
    /// How long the fleet may take to be ready (members registered, admin API up).
    pub ready_timeout: Duration,
    /// Extra environment variables of every member (`OTEL_*`, say).
    pub env: Vec<(String, String)>,
    /// etcd of the fleet, when not the stack's (a test that stops its own etcd).
    pub etcd_endpoint: Option<String>,
    /// Source and destination clusters, when not the stack's (a test that
    /// restarts its own brokers).
    pub clusters: Option<(Cluster, Cluster)>,
    /// Mutual TLS between the members and with kmirrorctl (the default); false
    /// runs every member with `--insecure`.
    pub tls: bool,
    /// How the test reaches a secured etcd (TLS, a user), and each role's extra
    /// environment (its etcd certificate and user).
    pub etcd_connect_options: Option<etcd_client::ConnectOptions>,
    pub role_env: Vec<(Role, String, String)>,
    /// `name` is already unique (etcd users were granted its prefix): no suffix.
    pub name_is_unique: bool,
}

impl FleetOptions {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            ..Self::default()
        }
    }
}

impl Default for FleetOptions {
    fn default() -> Self {
        Self {
            name: "e2e".to_string(),
            coordinators: 1,
            fetchers: 2,
            writers: 2,
            refresh_interval: Duration::from_secs(1),
            checkpoint_interval: Duration::from_millis(200),
            retry_backoff: Duration::from_secs(1),
            lease_ttl: Duration::from_secs(4),
            shutdown_grace: Duration::from_secs(20),
            max_in_flight_batches: None,
            writer_properties: Vec::new(),
            ready_timeout: Duration::from_secs(60),
            env: Vec::new(),
            etcd_endpoint: None,
            clusters: None,
            tls: true,
            etcd_connect_options: None,
            role_env: Vec::new(),
            name_is_unique: false,
        }
    }
}
