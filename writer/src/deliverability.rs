//! Whether the writer can deliver to each destination cluster, and its word on
//! it in etcd.
//!
//! A writer cut from a destination cluster (while its fetchers and etcd still
//! reach it) would otherwise keep that cluster's partitions forever: every batch
//! times out, the partition resends from its checkpoint to the same writer, and
//! times out again. So a delivery that times out marks the cluster
//! *undeliverable*; the writer publishes the mark under its lease
//! (`undeliverable/<writer>/<cluster>`), and the leader routes the cluster's
//! partitions to writers without one (see `Problem::from_snapshot`). A delivery
//! that succeeds clears the mark, and so does a probe: while marked, the writer
//! asks the cluster for its metadata every [`PROBE_INTERVAL`], since it no longer
//! gets partitions to deliver there.
//!
//! A partition therefore stalls at most `message.timeout.ms` (the delivery
//! timeout) plus one leader round before it runs on another writer.
//!
//! A cluster that refuses a producer's handshake or login is different: the
//! operator fixes it with new settings (`kmirrorctl cluster add --replace`). The
//! publisher reads the stored settings of such a cluster every
//! [`PROBE_INTERVAL`]; when they changed, the refused producers' records (which
//! never reached the cluster) are purged, and their partitions restart under
//! the new settings at once rather than after the delivery timeout.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use etcd_client::{Client, PutOptions};
use kmirror_common::cluster_access::{cluster_access, RefusalCause};
use kmirror_common::lease_keeper::LeaseState;
use kmirror_common::schema::{encode, Keys, Undeliverable};
use kmirror_common::{now_ms, ClusterName, MemberId};
use kmirror_proto::v1::ErrorKind;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{Producer, PurgeConfig};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::producer::{settings_of, DestinationProducer};
use crate::routes::Routes;
use crate::WriterShared;

/// How often a marked cluster is probed, and how often the marks are written
/// again after etcd refused a write.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// How long a probe waits for the cluster's metadata.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a restarted partition's batch waits for the cluster to answer.
const RESTART_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Whether a delivery failure says the cluster cannot be reached: the record
/// waited `message.timeout.ms` without being delivered.
pub fn is_delivery_timeout(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut)
    )
}

/// The marks, shared by the stream sessions (which set and clear them) and the
/// publisher (which writes them to etcd and probes).
#[derive(Default)]
pub struct Deliverability {
    marks: Mutex<BTreeMap<ClusterName, Undeliverable>>,
    /// Set while any cluster is marked: a delivery checks it before taking the lock.
    any_marked: AtomicBool,
    changed: Notify,
    /// Every session's producers, by cluster: marking a cluster purges what they
    /// queue for it.
    producers: Mutex<Vec<(ClusterName, Weak<DestinationProducer>)>>,
}

impl Deliverability {
    /// Remembers a session's new producer for `cluster` (until it is dropped).
    pub fn track(&self, cluster: &ClusterName, producer: Weak<DestinationProducer>) {
        let mut producers = self.producers.lock().expect("deliverability lock");
        producers.retain(|(_, tracked)| tracked.strong_count() > 0);
        producers.push((cluster.clone(), producer));
    }

    /// A delivery to `cluster` timed out: the cluster is marked, and what every
    /// producer still queues for it is purged. It would time out as well, or,
    /// should the cluster answer again, arrive after its partitions were written
    /// by another writer. Those batches fail and are resent from checkpoints.
    pub fn timed_out(&self, cluster: &ClusterName, error: &KafkaError) {
        let mut marks = self.marks.lock().expect("deliverability lock");
        if marks.contains_key(cluster) {
            return;
        }
        for (tracked_cluster, producer) in
            self.producers.lock().expect("deliverability lock").iter()
        {
            if let Some(producer) = producer.upgrade().filter(|_| tracked_cluster == cluster) {
                producer.purge(PurgeConfig::default().queue().non_blocking());
            }
        }
        warn!(%cluster, %error, "deliveries to the destination cluster time out: asking for its partitions to go to other writers");
        marks.insert(
            cluster.clone(),
            Undeliverable {
                since_ms: now_ms(),
                reason: error.to_string(),
            },
        );
        self.any_marked.store(true, Ordering::Release);
        self.changed.notify_one();
    }

    /// A delivery to `cluster` failed with `error`: a timeout marks the cluster,
    /// a refusal is recorded (a login or a handshake refused pauses the cluster,
    /// see [`kmirror_common::cluster_access`]).
    pub fn failed(&self, cluster: &ClusterName, error: &KafkaError) {
        if is_delivery_timeout(error) {
            self.timed_out(cluster, error);
        }
        if let Some(cause) = RefusalCause::of(error) {
            cluster_access().record(cluster, cause, Instant::now());
        }
    }

    /// A delivery to `cluster` succeeded.
    pub fn delivered(&self, cluster: &ClusterName) {
        cluster_access().answered(cluster);
        if self.any_marked.load(Ordering::Acquire) {
            self.clear(cluster, "a delivery succeeded");
        }
    }

    fn clear(&self, cluster: &ClusterName, why: &str) {
        let mut marks = self.marks.lock().expect("deliverability lock");
        if marks.remove(cluster).is_some() {
            info!(%cluster, why, "the destination cluster can be delivered to again");
            self.any_marked.store(!marks.is_empty(), Ordering::Release);
            self.changed.notify_one();
        }
    }

    /// The mark of `cluster`, if deliveries there time out.
    pub fn mark(&self, cluster: &ClusterName) -> Option<Undeliverable> {
        if !self.any_marked.load(Ordering::Acquire) {
            return None;
        }
        self.marks
            .lock()
            .expect("deliverability lock")
            .get(cluster)
            .cloned()
    }

    pub fn marks(&self) -> BTreeMap<ClusterName, Undeliverable> {
        self.marks.lock().expect("deliverability lock").clone()
    }

    /// The clusters that refuse some producer's connections.
    fn refusing(&self) -> BTreeSet<ClusterName> {
        self.producers
            .lock()
            .expect("deliverability lock")
            .iter()
            .filter(|(_, producer)| {
                producer
                    .upgrade()
                    .is_some_and(|producer| producer.context().is_refused())
            })
            .map(|(cluster, _)| cluster.clone())
            .collect()
    }

    /// `cluster`'s settings are now `settings`: what each producer built from
    /// other settings, and refused by the cluster, holds is purged. None of it
    /// reached the cluster. The batches fail and their partitions restart from
    /// their checkpoints under the new settings at once, instead of waiting for
    /// the delivery timeout. Returns how many producers were purged.
    pub fn settings_changed(&self, cluster: &ClusterName, settings: u64) -> usize {
        let stale: Vec<Arc<DestinationProducer>> = self
            .producers
            .lock()
            .expect("deliverability lock")
            .iter()
            .filter(|(tracked_cluster, _)| tracked_cluster == cluster)
            .filter_map(|(_, producer)| producer.upgrade())
            .filter(|producer| {
                let context = producer.context();
                context.is_refused() && context.settings() != settings
            })
            .collect();
        for producer in &stale {
            producer.purge(PurgeConfig::default().queue().inflight().non_blocking());
        }
        stale.len()
    }
}

/// Reads the stored settings of each cluster that refuses some producer: new
/// settings (the operator fixed a credential or a CA) take effect now. Only
/// refused producers are purged: one that delivers keeps its partitions, which
/// take the new settings when they next restart.
async fn follow_settings(deliverability: &Deliverability, routes: &Routes) {
    for cluster in deliverability.refusing() {
        let Ok(stored) = routes.stored_cluster(&cluster).await else {
            continue;
        };
        let purged = deliverability.settings_changed(&cluster, settings_of(&stored));
        if purged > 0 {
            cluster_access().retry_now(&cluster, Instant::now());
            info!(%cluster, producers = purged, "the refused destination cluster has new settings: its partitions restart under them");
        }
    }
}

/// Keeps etcd's marks of this writer equal to its own and probes the marked
/// clusters, until `stop` is cancelled. Marks are bound to the writer's lease: a
/// new lease starts with none written.
pub async fn publish(
    shared: Arc<WriterShared>,
    mut etcd: Client,
    keys: Keys,
    writer: MemberId,
    mut lease_rx: watch::Receiver<LeaseState>,
    stop: CancellationToken,
) {
    let deliverability = &shared.deliverability;
    let mut written: BTreeMap<ClusterName, i64> = BTreeMap::new();
    let mut written_under = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = deliverability.changed.notified() => {}
            _ = lease_rx.changed() => {}
            _ = tokio::time::sleep(PROBE_INTERVAL) => {
                probe(deliverability, &shared.routes).await;
                follow_settings(deliverability, &shared.routes).await;
            }
        }
        let Some(lease_id) = lease_rx.borrow().lease().map(|lease| lease.id) else {
            continue;
        };
        if written_under != Some(lease_id) {
            written.clear();
            written_under = Some(lease_id);
        }
        let marks = deliverability.marks();
        let gone: Vec<ClusterName> = written
            .keys()
            .filter(|cluster| !marks.contains_key(*cluster))
            .cloned()
            .collect();
        for cluster in gone {
            let key = keys.undeliverable_mark(&writer, &cluster);
            if etcd.delete(key.as_str(), None).await.is_ok() {
                written.remove(&cluster);
            }
        }
        for (cluster, mark) in marks {
            if written.get(&cluster) == Some(&mark.since_ms) {
                continue;
            }
            let key = keys.undeliverable_mark(&writer, &cluster);
            let options = PutOptions::new().with_lease(lease_id);
            match etcd.put(key.as_str(), encode(&mark), Some(options)).await {
                Ok(_) => {
                    written.insert(cluster, mark.since_ms);
                }
                Err(error) => {
                    warn!(%cluster, %error, "cannot record in etcd that the destination cluster is undeliverable; retrying")
                }
            }
        }
    }
}

/// Asks each marked cluster for its metadata; one that answers is cleared.
async fn probe(deliverability: &Deliverability, routes: &Routes) {
    for cluster in deliverability.marks().into_keys() {
        probe_one(deliverability, routes, &cluster, PROBE_TIMEOUT).await;
    }
}

/// Asks `cluster` for its metadata within `timeout`; clears its mark when it
/// answers. Returns whether it did.
async fn probe_one(
    deliverability: &Deliverability,
    routes: &Routes,
    cluster: &ClusterName,
    timeout: Duration,
) -> bool {
    let Some(admin) = routes.known_admin(cluster) else {
        return false;
    };
    let answered = tokio::task::spawn_blocking(move || {
        admin
            .inner()
            .fetch_metadata(None, timeout)
            .is_ok_and(|metadata| !metadata.brokers().is_empty())
    })
    .await
    .unwrap_or(false);
    if answered {
        deliverability.clear(cluster, "it answered a metadata request");
    }
    answered
}

/// Why a batch is refused before it is produced: the kind the fetcher acts on
/// and the message it reports.
pub struct BatchRefusal {
    pub kind: ErrorKind,
    pub message: String,
}

impl Deliverability {
    /// Why a batch for `cluster` is refused, if it is: the cluster refused this
    /// writer and its pause runs, or deliveries there still time out. A
    /// restarted partition's batch asks a cluster whose deliveries timed out
    /// first (within [`RESTART_PROBE_TIMEOUT`]): a destination that answers again
    /// takes it at once, rather than after the next background probe.
    pub async fn refusal(
        &self,
        routes: &Routes,
        cluster: &ClusterName,
        restart: bool,
    ) -> Option<BatchRefusal> {
        if let Some(pause) = cluster_access().paused(cluster, Instant::now()) {
            return Some(BatchRefusal {
                kind: ErrorKind::Rejected,
                message: format!(
                    "cluster {cluster} refused this writer ({}); it is asked again after a pause of {} s",
                    pause.cause,
                    pause.length.as_secs()
                ),
            });
        }
        let mark = self.mark(cluster)?;
        if restart && probe_one(self, routes, cluster, RESTART_PROBE_TIMEOUT).await {
            return None;
        }
        Some(BatchRefusal {
            kind: ErrorKind::DeliveryFailed,
            message: format!(
                "this writer cannot deliver to cluster {cluster} (deliveries time out: {}); its partitions go to other writers",
                mark.reason
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kmirror_common::schema::ClusterSpec;

    fn cluster(name: &str) -> ClusterName {
        ClusterName::new(name).unwrap()
    }

    #[test]
    fn a_timed_out_delivery_marks_the_cluster_once_and_a_delivery_clears_it() {
        let deliverability = Deliverability::default();
        let timed_out = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        assert!(is_delivery_timeout(&timed_out));
        deliverability.timed_out(&cluster("dest"), &timed_out);
        let since = deliverability.marks()[&cluster("dest")].since_ms;
        deliverability.timed_out(&cluster("dest"), &timed_out);
        assert_eq!(deliverability.marks()[&cluster("dest")].since_ms, since);
        deliverability.delivered(&cluster("other"));
        assert_eq!(deliverability.marks().len(), 1);
        deliverability.delivered(&cluster("dest"));
        assert!(deliverability.marks().is_empty());
    }

    #[test]
    fn a_refused_login_pauses_the_cluster_a_denied_topic_does_not_and_a_delivery_ends_the_pause() {
        let deliverability = Deliverability::default();
        let (denied, refused) = (cluster("writer-denied"), cluster("writer-refused"));
        let failure = |code| KafkaError::MessageProduction(code);
        deliverability.failed(
            &denied,
            &failure(RDKafkaErrorCode::TopicAuthorizationFailed),
        );
        assert!(cluster_access().paused(&denied, Instant::now()).is_none());
        deliverability.failed(&refused, &failure(RDKafkaErrorCode::Authentication));
        let pause = cluster_access().paused(&refused, Instant::now());
        assert_eq!(
            pause.map(|pause| pause.cause),
            Some(RefusalCause::Authentication)
        );
        assert!(deliverability.marks().is_empty(), "a refusal is no timeout");
        deliverability.delivered(&refused);
        assert!(cluster_access().paused(&refused, Instant::now()).is_none());
    }

    fn spec(client_id: &str) -> ClusterSpec {
        ClusterSpec {
            name: cluster("settings-dest"),
            bootstrap_servers: "127.0.0.1:9".to_string(),
            properties: [("client.id".to_string(), client_id.to_string())].into(),
        }
    }

    #[test]
    fn new_settings_purge_only_the_producers_the_cluster_refuses_that_were_built_before_them() {
        use rdkafka::ClientContext;
        let deliverability = Deliverability::default();
        let (old, new) = (spec("before"), spec("after"));
        let producer = |spec: &ClusterSpec| {
            let producer = Arc::new(crate::session::build_producer(spec, 65_536, &[]).unwrap());
            deliverability.track(&spec.name, Arc::downgrade(&producer));
            producer
        };
        let (refused, delivering, renewed) = (producer(&old), producer(&old), producer(&new));
        let handshake = KafkaError::Global(RDKafkaErrorCode::SSL);
        refused
            .context()
            .error(handshake.clone(), "certificate verify failed");
        renewed
            .context()
            .error(handshake, "certificate verify failed");
        assert!(refused.context().is_refused() && !delivering.context().is_refused());
        assert_eq!(deliverability.refusing(), [old.name.clone()].into());
        assert_ne!(settings_of(&old), settings_of(&new));
        // Only `refused`: `delivering` delivers, `renewed` has the new settings.
        assert_eq!(
            deliverability.settings_changed(&old.name, settings_of(&new)),
            1
        );
        assert_eq!(deliverability.settings_changed(&cluster("other"), 0), 0);
        cluster_access().forget(&old.name);
    }

    #[test]
    fn only_a_delivery_timeout_says_the_cluster_is_unreachable() {
        for code in [
            RDKafkaErrorCode::QueueFull,
            RDKafkaErrorCode::MessageSizeTooLarge,
            RDKafkaErrorCode::TopicAuthorizationFailed,
            RDKafkaErrorCode::UnknownTopicOrPartition,
        ] {
            assert!(!is_delivery_timeout(&KafkaError::MessageProduction(code)));
        }
    }
}
