//! The coordinator's client per cluster, cached by cluster spec ([`KafkaClients`]),
//! the context that keeps what librdkafka reported for it ([`ClusterContext`]),
//! and what happens when a cluster refuses it.
//!
//! A refused client (a login rejected, a TLS handshake failed) is dropped as soon
//! as the call that met the refusal returns, and no new one is built for the same
//! settings until the cluster's pause is over ([`kmirror_common::cluster_access`]):
//! a kept client would log in again on librdkafka's schedule (about once a second
//! at first). Until then every round gets the refusal as the cluster's error, so
//! `kmirrorctl status` keeps showing it. New settings are tried at once.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use kmirror_common::cluster_access::{cluster_access, RefusalCause};
use kmirror_common::schema::ClusterSpec;
use kmirror_common::ClusterName;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryResult, ProducerContext};
use tracing::{debug, warn};

use super::{kafka_cause, without_retry_details, ClusterClient};
use crate::error::CoordinatorError;

/// How long a client asking a refusing cluster again waits for its metadata: less
/// than the 5 s its clients wait before reconnecting (`CLIENT_DEFAULTS`, less a
/// quarter of jitter), so the attempt is one login.
pub(super) const RETRY_CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// Keeps the last error librdkafka reported for a cluster: "connect to
/// ipv4#10.0.0.1:9092 failed: Connection refused" says more than the "broker
/// transport failure" the failed request returns. A refusal is also kept apart,
/// until the client's owner takes it.
pub(super) struct ClusterContext {
    cluster: ClusterName,
    last_error: Mutex<Option<(Instant, String)>>,
    refusal: Mutex<Option<(RefusalCause, String)>>,
}

impl ClusterContext {
    pub(super) fn new(cluster: ClusterName) -> Self {
        Self {
            cluster,
            last_error: Mutex::new(None),
            refusal: Mutex::new(None),
        }
    }

    /// The last reported error, if it is recent enough to explain a request that
    /// just failed after `window`.
    pub(super) fn recent_error(&self, window: Duration) -> Option<String> {
        let last_error = self.last_error.lock().expect("last error lock poisoned");
        last_error
            .as_ref()
            .filter(|(at, _)| at.elapsed() <= window + Duration::from_secs(1))
            .map(|(_, reason)| reason.clone())
    }

    /// The refusal reported since the last call, with its cause and reason.
    pub(super) fn take_refusal(&self) -> Option<(RefusalCause, String)> {
        self.refusal.lock().expect("refusal lock poisoned").take()
    }
}

impl ProducerContext for ClusterContext {
    type DeliveryOpaque = ();

    /// Nothing is ever produced through the cluster client.
    fn delivery(&self, _delivery_result: &DeliveryResult<'_>, _delivery_opaque: ()) {}
}

impl ClientContext for ClusterContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning => {
                warn!(cluster = %self.cluster, facility, message, "librdkafka")
            }
            _ => debug!(cluster = %self.cluster, facility, message, "librdkafka"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        debug!(cluster = %self.cluster, %error, reason, "librdkafka error");
        // "1/1 brokers are down" follows every connection failure and would hide its
        // cause.
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            return;
        }
        let reason = if reason.is_empty() {
            kafka_cause(&error)
        } else {
            without_retry_details(reason).to_string()
        };
        if let Some(cause) = RefusalCause::of(&error).filter(|cause| cause.refuses_the_cluster()) {
            *self.refusal.lock().expect("refusal lock poisoned") = Some((cause, reason.clone()));
        }
        *self.last_error.lock().expect("last error lock poisoned") = Some((Instant::now(), reason));
    }
}

/// Admin clients shared by the reconciler and the admin API, one per cluster, built
/// again when the cluster's stored spec changes.
#[derive(Clone)]
pub struct KafkaClients {
    state: Arc<Mutex<ClientsState>>,
    timeout: Duration,
}

#[derive(Default)]
pub(super) struct ClientsState {
    cache: HashMap<ClusterName, ClusterClient>,
    /// Clusters whose client was refused, with the settings refused and why.
    refused: HashMap<ClusterName, Refused>,
}

struct Refused {
    spec: ClusterSpec,
    cause: RefusalCause,
    reason: String,
}

/// Where a client built by [`KafkaClients`] reports a refusal.
pub(super) type RefusalSink = Weak<Mutex<ClientsState>>;

impl KafkaClients {
    pub fn new(timeout: Duration) -> Self {
        Self {
            state: Arc::new(Mutex::new(ClientsState::default())),
            timeout,
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The cached client of a cluster, built on first use or when its spec
    /// changed; the refusal instead while the cluster's pause runs.
    pub fn client(&self, spec: &ClusterSpec) -> Result<ClusterClient, CoordinatorError> {
        let mut state = self.state.lock().expect("kafka client cache lock poisoned");
        if let Some(client) = state.cache.get(&spec.name) {
            if client.spec.as_ref() == spec {
                return Ok(client.clone());
            }
        }
        let now = Instant::now();
        match state.refused.get(&spec.name) {
            Some(refused)
                if refused.spec == *spec && cluster_access().paused(&spec.name, now).is_some() =>
            {
                return Err(CoordinatorError::ClusterUnreachable {
                    cluster: spec.name.to_string(),
                    bootstrap: spec.bootstrap_servers.clone(),
                    cause: format!(
                        "{} (refused: {}; asked again after a pause that doubles up to {} s)",
                        refused.reason,
                        refused.cause,
                        kmirror_common::cluster_access::MAX_PAUSE.as_secs()
                    ),
                });
            }
            // The pause is over: the same settings are asked again.
            Some(refused) if refused.spec == *spec => {}
            Some(_) => {
                state.refused.remove(&spec.name);
                cluster_access().retry_now(&spec.name, now);
            }
            None => {}
        }
        let mut client = ClusterClient::build(spec, self.timeout)?;
        client.refusal_sink = Arc::downgrade(&self.state);
        if state.refused.contains_key(&spec.name) {
            client.retrying.store(true, Ordering::Release);
        }
        if let Some(replaced) = state.cache.insert(spec.name.clone(), client.clone()) {
            replaced.dispose();
        }
        Ok(client)
    }

    /// Drops the clients, refusals and pauses of clusters that are no longer
    /// defined.
    pub fn retain(&self, defined: &BTreeMap<ClusterName, ClusterSpec>) {
        let mut state = self.state.lock().expect("kafka client cache lock poisoned");
        let stale: Vec<ClusterName> = state
            .cache
            .keys()
            .chain(state.refused.keys())
            .filter(|name| !defined.contains_key(*name))
            .cloned()
            .collect();
        for name in stale {
            state.refused.remove(&name);
            cluster_access().forget(&name);
            if let Some(client) = state.cache.remove(&name) {
                client.dispose();
            }
        }
    }
}

/// `client`'s cluster answered it: the pause ends, and a client that retried
/// the cluster becomes an ordinary one.
pub(super) fn client_answered(client: &ClusterClient) {
    cluster_access().answered(client.name());
    if !client.retrying.swap(false, Ordering::AcqRel) {
        return;
    }
    if let Some(state) = client.refusal_sink.upgrade() {
        let mut state = state.lock().expect("kafka client cache lock poisoned");
        state.refused.remove(client.name());
    }
}

/// `client`'s cluster refused it: the cached client goes (if it is still this
/// one), the pause starts, and the refusal is what the cluster's next uses get.
pub(super) fn client_refused(client: &ClusterClient, cause: RefusalCause, reason: String) {
    let pause = cluster_access().refused(client.name(), cause, Instant::now());
    warn!(cluster = %client.name(), %cause, reason, pause_secs = pause.as_secs_f64(), "the cluster refused the coordinator's client; asking again after the pause");
    let Some(state) = client.refusal_sink.upgrade() else {
        return;
    };
    let mut state = state.lock().expect("kafka client cache lock poisoned");
    let cached_is_this = state
        .cache
        .get(client.name())
        .is_some_and(|cached| cached.is_same_client(client));
    if !cached_is_this {
        return;
    }
    if let Some(cached) = state.cache.remove(client.name()) {
        cached.dispose();
    }
    state.refused.insert(
        client.name().clone(),
        Refused {
            spec: client.spec.as_ref().clone(),
            cause,
            reason,
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, password: &str) -> ClusterSpec {
        ClusterSpec {
            name: ClusterName::new(name).unwrap(),
            // Never dialled: clients connect on first use.
            bootstrap_servers: "127.0.0.1:1".to_string(),
            properties: BTreeMap::from([("client.rack".to_string(), password.to_string())]),
        }
    }

    #[tokio::test]
    async fn a_refused_client_is_dropped_and_its_settings_wait_for_the_pause_new_ones_do_not() {
        let clients = KafkaClients::new(Duration::from_secs(10));
        let refused = spec("clients-refused", "old");
        let client = clients.client(&refused).unwrap();
        client_refused(
            &client,
            RefusalCause::Authentication,
            "SASL authentication error: invalid credentials".to_string(),
        );
        match clients.client(&refused) {
            Err(CoordinatorError::ClusterUnreachable { cluster, cause, .. }) => {
                assert_eq!(cluster, "clients-refused");
                assert!(cause.contains("invalid credentials"), "{cause}");
                assert!(cause.contains("refused: authentication"), "{cause}");
            }
            Err(other) => panic!("not the refusal: {other}"),
            Ok(_) => panic!("a client was built for refused settings during the pause"),
        }
        // After the pause the same settings are asked again, briefly, until the
        // cluster answers.
        cluster_access().retry_now(&refused.name, Instant::now());
        let retrying = clients.client(&refused).unwrap();
        assert_eq!(retrying.metadata_timeout(), RETRY_CALL_TIMEOUT);
        client_answered(&retrying);
        assert_eq!(retrying.metadata_timeout(), Duration::from_secs(10));

        let fixed = spec("clients-refused", "new");
        let rebuilt = clients.client(&fixed).unwrap();
        assert!(!rebuilt.is_same_client(&client));
        assert!(clients.client(&fixed).unwrap().is_same_client(&rebuilt));
    }

    #[tokio::test]
    async fn a_refusal_met_by_a_replaced_client_leaves_the_cache_alone() {
        let clients = KafkaClients::new(Duration::from_secs(1));
        let old = clients.client(&spec("clients-replaced", "old")).unwrap();
        let current = clients.client(&spec("clients-replaced", "new")).unwrap();
        client_refused(&old, RefusalCause::Tls, "certificate verify failed".into());
        let again = clients.client(&spec("clients-replaced", "new")).unwrap();
        assert!(again.is_same_client(&current));
    }
}
