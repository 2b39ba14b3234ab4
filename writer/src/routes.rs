//! Where a flow's records go: the destination cluster of each flow (read from etcd)
//! and the size limit of each destination topic (read from the destination).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use etcd_client::Client;
use kmirror_common::cluster_access::cluster_access;
use kmirror_common::kafka::{client_config, RoleSettings};
use kmirror_common::schema::{decode, ClusterSpec, FlowSpec};
use kmirror_common::{ClusterName, FlowName, Keys};
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use tracing::debug;

use crate::error::WriterError;

/// Flow routes and topic limits, shared by every stream session of the writer.
pub struct Routes {
    etcd: Client,
    keys: Keys,
    /// Per flow, its destination cluster and whether it runs exactly-once.
    flows: Mutex<HashMap<FlowName, (ClusterSpec, bool)>>,
    /// Per cluster, the spec an admin client was built from: a cluster stored
    /// again (new credentials) gets a new client.
    #[allow(clippy::type_complexity)]
    admins: Mutex<
        HashMap<
            ClusterName,
            (
                ClusterSpec,
                std::sync::Arc<AdminClient<DefaultClientContext>>,
            ),
        >,
    >,
    /// Known limits, and when a limit could not be read (retried after a while
    /// rather than on every batch).
    limits: Mutex<HashMap<(ClusterName, String), LimitReading>>,
}

/// A topic's `max.message.bytes` (`None`: could not be read) and when it was read.
type LimitReading = (Option<i64>, Instant);

/// How long a limit that could not be read is not asked for again.
const UNKNOWN_LIMIT_RETRY: Duration = Duration::from_secs(30);

impl Routes {
    pub fn new(etcd: Client, keys: Keys) -> Self {
        Self {
            etcd,
            keys,
            flows: Mutex::new(HashMap::new()),
            admins: Mutex::new(HashMap::new()),
            limits: Mutex::new(HashMap::new()),
        }
    }

    /// The destination cluster of a flow; `refresh` re-reads etcd even when cached.
    pub async fn destination(
        &self,
        flow: &FlowName,
        refresh: bool,
    ) -> Result<ClusterSpec, WriterError> {
        if !refresh {
            if let Some((cluster, _)) = self.flows.lock().expect("routes lock").get(flow) {
                return Ok(cluster.clone());
            }
        }
        let mut etcd = self.etcd.clone();
        let flow_key = self.keys.flow(flow);
        let response = etcd.get(flow_key.as_str(), None).await?;
        let Some(kv) = response.kvs().first() else {
            return Err(WriterError::UnknownFlow(flow.clone()));
        };
        let spec: FlowSpec = decode(kv.key(), kv.value())?;
        let cluster = self.stored_cluster(&spec.dest_cluster).await?;
        let previous = self
            .flows
            .lock()
            .expect("routes lock")
            .insert(flow.clone(), (cluster.clone(), spec.exactly_once));
        if previous.is_some_and(|(previous, _)| previous != cluster) {
            // New settings (a fixed credential): not worth a pause's wait.
            cluster_access().retry_now(&cluster.name, Instant::now());
        }
        Ok(cluster)
    }

    /// The cluster's spec as stored in etcd now.
    pub async fn stored_cluster(&self, name: &ClusterName) -> Result<ClusterSpec, WriterError> {
        let cluster_key = self.keys.cluster(name);
        let response = self.etcd.clone().get(cluster_key.as_str(), None).await?;
        let Some(kv) = response.kvs().first() else {
            return Err(WriterError::UnknownCluster(name.clone()));
        };
        Ok(decode(kv.key(), kv.value())?)
    }

    /// Whether the flow runs exactly-once, as last read by [`Routes::destination`]
    /// (a partition restarts when its flow changes, and the restart reads again).
    pub fn exactly_once(&self, flow: &FlowName) -> bool {
        self.flows
            .lock()
            .expect("routes lock")
            .get(flow)
            .is_some_and(|(_, exactly_once)| *exactly_once)
    }

    /// The destination topic's `max.message.bytes`, or `None` when it cannot be
    /// read (the broker then remains the judge).
    pub async fn topic_limit(&self, cluster: &ClusterSpec, topic: &str) -> Option<i64> {
        let cache_key = (cluster.name.clone(), topic.to_string());
        if let Some((limit, read_at)) = self.limits.lock().expect("routes lock").get(&cache_key) {
            if limit.is_some() || read_at.elapsed() < UNKNOWN_LIMIT_RETRY {
                return *limit;
            }
        }
        let limit = self.read_topic_limit(cluster, topic).await;
        self.limits
            .lock()
            .expect("routes lock")
            .insert(cache_key, (limit, Instant::now()));
        limit
    }

    async fn read_topic_limit(&self, cluster: &ClusterSpec, topic: &str) -> Option<i64> {
        let admin = self.admin(cluster)?;
        let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(5)));
        let results = admin
            .describe_configs(&[ResourceSpecifier::Topic(topic)], &options)
            .await
            .ok()?;
        let resource = results.into_iter().next()?.ok()?;
        let limit: i64 = resource
            .get("max.message.bytes")?
            .value
            .as_ref()?
            .parse()
            .ok()?;
        debug!(topic, limit, "read destination topic size limit");
        Some(limit)
    }

    /// Forgets a topic's limit so the next batch reads it again (after a rejection,
    /// the operator may have raised it).
    pub fn forget_limit(&self, cluster: &ClusterName, topic: &str) {
        self.limits
            .lock()
            .expect("routes lock")
            .remove(&(cluster.clone(), topic.to_string()));
    }

    /// The admin client of a destination cluster some flow of this writer goes
    /// to, for probing it.
    pub fn known_admin(
        &self,
        cluster: &ClusterName,
    ) -> Option<std::sync::Arc<AdminClient<DefaultClientContext>>> {
        let spec = self
            .flows
            .lock()
            .expect("routes lock")
            .values()
            .find(|(spec, _)| &spec.name == cluster)
            .map(|(spec, _)| spec.clone())?;
        self.admin(&spec)
    }

    fn admin(
        &self,
        cluster: &ClusterSpec,
    ) -> Option<std::sync::Arc<AdminClient<DefaultClientContext>>> {
        let mut admins = self.admins.lock().expect("routes lock");
        if let Some((built_from, admin)) = admins.get(&cluster.name) {
            if built_from == cluster {
                return Some(admin.clone());
            }
        }
        let admin: AdminClient<DefaultClientContext> =
            client_config(cluster, &RoleSettings::default(), &[])
                .ok()?
                .create()
                .ok()?;
        let admin = std::sync::Arc::new(admin);
        admins.insert(cluster.name.clone(), (cluster.clone(), admin.clone()));
        Some(admin)
    }
}
