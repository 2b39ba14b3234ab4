//! Refusals by a Kafka cluster — a login it rejects, a TLS handshake that fails,
//! a request its ACLs deny — and the pause a member keeps before it asks that
//! cluster again.
//!
//! A refusal does not go away by asking again: a wrong password fails every
//! login until an operator fixes it. So each member keeps, per cluster it cannot
//! log in to (authentication, TLS), a pause that starts at [`FIRST_PAUSE`] and
//! doubles with every refused attempt up to [`MAX_PAUSE`]; while it runs, the
//! member makes no new attempt on that cluster (the coordinator builds no client,
//! a fetcher no consumer, a writer produces no batch there). Refusals that arrive
//! during a pause belong to the attempt that started it (several brokers,
//! several batches of one wave) and do not double it again. The first answer
//! from the cluster ends it. A cluster whose stored settings changed
//! (`kmirrorctl cluster add --replace`) is tried at once.
//!
//! An ACL that denies one topic is no reason to stop the cluster's other topics:
//! such a refusal is only counted ([`ClusterAccess::refused_request`]), and the
//! partition it stopped is retried after the fetcher's `--retry-backoff`.
//!
//! What each member sees is exported (labels: cluster name and cause only):
//! `kmirror_cluster_access_failures_total{cluster,cause}` counts refusals, and
//! `kmirror_cluster_retry_delay_seconds{cluster}` is the current pause, 0 once the
//! cluster answered (or the member no longer uses it).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::metrics::{metrics, Labels};
use crate::types::ClusterName;

/// The pause after a cluster's first refusal.
pub const FIRST_PAUSE: Duration = Duration::from_secs(1);
/// The longest pause: an ACL given back, or a CA the cluster now trusts, is
/// picked up within this long.
pub const MAX_PAUSE: Duration = Duration::from_secs(30);

/// Why a cluster refused a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalCause {
    /// The login was rejected (SASL: wrong password, unknown user, mechanism).
    Authentication,
    /// The TLS handshake failed (a certificate not trusted, or not presented).
    Tls,
    /// The principal may not do what was asked (a missing ACL).
    Authorization,
}

impl RefusalCause {
    /// The cause of a refusal, or `None` for an error that is no refusal (a
    /// broker down, a timeout, ...).
    pub fn of(error: &KafkaError) -> Option<Self> {
        Self::of_code(error.rdkafka_error_code()?)
    }

    pub fn of_code(code: RDKafkaErrorCode) -> Option<Self> {
        use RDKafkaErrorCode as Code;
        match code {
            Code::Authentication | Code::SaslAuthenticationFailed => Some(Self::Authentication),
            Code::SSL => Some(Self::Tls),
            Code::TopicAuthorizationFailed
            | Code::GroupAuthorizationFailed
            | Code::ClusterAuthorizationFailed
            | Code::TransactionalIdAuthorizationFailed
            | Code::DelegationTokenAuthorizationFailed => Some(Self::Authorization),
            _ => None,
        }
    }

    /// Whether the refusal is the whole cluster's (a login, a handshake) rather
    /// than one request's (an ACL): only those pause the cluster.
    pub fn refuses_the_cluster(self) -> bool {
        self != Self::Authorization
    }

    /// The value of the metrics' `cause` label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Authentication => "authentication",
            Self::Tls => "tls",
            Self::Authorization => "authorization",
        }
    }
}

impl fmt::Display for RefusalCause {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.label())
    }
}

/// A cluster that refused this member and has not answered since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pause {
    /// Until when no new attempt is made.
    pub until: Instant,
    /// The pause's full length (it doubles with each refused attempt).
    pub length: Duration,
    pub cause: RefusalCause,
}

impl Pause {
    /// What is left of the pause at `now` (zero once it is over).
    pub fn remaining(&self, now: Instant) -> Duration {
        self.until.saturating_duration_since(now)
    }
}

/// The pauses of every cluster that refused this member. See the module
/// documentation.
pub struct ClusterAccess {
    first: Duration,
    max: Duration,
    pauses: Mutex<HashMap<ClusterName, Pause>>,
    /// Set while any cluster has a pause: [`ClusterAccess::answered`], called for
    /// every delivered or fetched batch, checks it before taking the lock.
    any_paused: AtomicBool,
}

static CLUSTER_ACCESS: LazyLock<ClusterAccess> =
    LazyLock::new(|| ClusterAccess::new(FIRST_PAUSE, MAX_PAUSE));

/// The process's pauses.
pub fn cluster_access() -> &'static ClusterAccess {
    &CLUSTER_ACCESS
}

impl ClusterAccess {
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            pauses: Mutex::new(HashMap::new()),
            any_paused: AtomicBool::new(false),
        }
    }

    /// `cluster` refused an attempt for `cause` at `now`: counted, and the pause
    /// starts (or doubles, when this is a new attempt after an earlier pause).
    /// Returns what is left of the pause.
    pub fn refused(&self, cluster: &ClusterName, cause: RefusalCause, now: Instant) -> Duration {
        self.refused_request(cluster, cause);
        let mut pauses = self.pauses.lock().expect("cluster access lock poisoned");
        let length = match pauses.get(cluster) {
            Some(pause) if pause.until > now => return pause.remaining(now),
            Some(pause) => (pause.length * 2).min(self.max),
            None => self.first,
        };
        pauses.insert(
            cluster.clone(),
            Pause {
                until: now + length,
                length,
                cause,
            },
        );
        self.any_paused.store(true, Ordering::Release);
        metrics()
            .cluster_retry_delay
            .get_or_create(&delay_labels(cluster))
            .set(length.as_secs_f64());
        length
    }

    /// A refusal as what it is: [`ClusterAccess::refused`] when it refuses the
    /// whole cluster, [`ClusterAccess::refused_request`] otherwise.
    pub fn record(&self, cluster: &ClusterName, cause: RefusalCause, now: Instant) {
        if cause.refuses_the_cluster() {
            self.refused(cluster, cause, now);
        } else {
            self.refused_request(cluster, cause);
        }
    }

    /// `cluster` refused one request for `cause` (an ACL denied a topic) while it
    /// answers others: counted, nothing pauses.
    pub fn refused_request(&self, cluster: &ClusterName, cause: RefusalCause) {
        metrics()
            .cluster_access_failures
            .get_or_create(&failure_labels(cluster, cause))
            .inc();
    }

    /// The running pause of `cluster` at `now`, if any: no attempt is made until
    /// it is over.
    pub fn paused(&self, cluster: &ClusterName, now: Instant) -> Option<Pause> {
        if !self.any_paused.load(Ordering::Acquire) {
            return None;
        }
        self.pauses
            .lock()
            .expect("cluster access lock poisoned")
            .get(cluster)
            .filter(|pause| pause.until > now)
            .copied()
    }

    /// This member no longer uses `cluster` (its flows moved away, it was
    /// deleted): a pause would only be a stale figure on the metrics.
    pub fn forget(&self, cluster: &ClusterName) {
        self.answered(cluster);
    }

    /// `cluster` answered: its pause ends and the next refusal starts from the
    /// first pause again.
    pub fn answered(&self, cluster: &ClusterName) {
        if !self.any_paused.load(Ordering::Acquire) {
            return;
        }
        let mut pauses = self.pauses.lock().expect("cluster access lock poisoned");
        if pauses.remove(cluster).is_some() {
            self.any_paused.store(!pauses.is_empty(), Ordering::Release);
            metrics()
                .cluster_retry_delay
                .get_or_create(&delay_labels(cluster))
                .set(0.0);
        }
    }

    /// The settings of `cluster` changed: the next attempt may be made at once
    /// (the pause's length stays, so settings that are still refused keep
    /// doubling it).
    pub fn retry_now(&self, cluster: &ClusterName, now: Instant) {
        if let Some(pause) = self
            .pauses
            .lock()
            .expect("cluster access lock poisoned")
            .get_mut(cluster)
        {
            pause.until = pause.until.min(now);
        }
    }
}

fn failure_labels(cluster: &ClusterName, cause: RefusalCause) -> Labels {
    vec![
        ("cluster", cluster.to_string()),
        ("cause", cause.label().to_string()),
    ]
}

fn delay_labels(cluster: &ClusterName) -> Labels {
    vec![("cluster", cluster.to_string())]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(name: &str) -> ClusterName {
        ClusterName::new(name).unwrap()
    }

    fn delay_gauge(cluster: &ClusterName) -> f64 {
        metrics()
            .cluster_retry_delay
            .get_or_create(&delay_labels(cluster))
            .get()
    }

    fn failures(cluster: &ClusterName, cause: RefusalCause) -> u64 {
        metrics()
            .cluster_access_failures
            .get_or_create(&failure_labels(cluster, cause))
            .get()
    }

    #[test]
    fn refused_attempts_double_the_pause_up_to_the_cap_and_an_answer_ends_it() {
        let access = ClusterAccess::new(Duration::from_secs(1), Duration::from_secs(5));
        let source = cluster("access-doubling");
        let mut now = Instant::now();
        let mut pauses = Vec::new();
        for _ in 0..5 {
            let pause = access.refused(&source, RefusalCause::Authentication, now);
            assert!(access.paused(&source, now).is_some());
            pauses.push(pause.as_secs());
            now += pause;
            assert!(access.paused(&source, now).is_none(), "over at its end");
        }
        assert_eq!(pauses, [1, 2, 4, 5, 5]);
        assert_eq!(failures(&source, RefusalCause::Authentication), 5);
        assert_eq!(delay_gauge(&source), 5.0);

        access.answered(&source);
        assert_eq!(delay_gauge(&source), 0.0);
        assert_eq!(access.refused(&source, RefusalCause::Tls, now).as_secs(), 1);
        assert_eq!(
            access.paused(&source, now).unwrap().cause,
            RefusalCause::Tls
        );
    }

    #[test]
    fn refusals_during_a_pause_are_counted_without_doubling_it() {
        let access = ClusterAccess::new(Duration::from_secs(4), Duration::from_secs(60));
        let dest = cluster("access-wave");
        let now = Instant::now();
        access.refused(&dest, RefusalCause::Authorization, now);
        let later = now + Duration::from_secs(1);
        assert_eq!(
            access.refused(&dest, RefusalCause::Authorization, later),
            Duration::from_secs(3)
        );
        assert_eq!(failures(&dest, RefusalCause::Authorization), 2);
        assert_eq!(delay_gauge(&dest), 4.0);
        assert!(access.paused(&cluster("access-other"), now).is_none());
    }

    #[test]
    fn changed_settings_are_tried_at_once_and_keep_the_pause_growing() {
        let access = ClusterAccess::new(Duration::from_secs(2), Duration::from_secs(60));
        let source = cluster("access-changed");
        let now = Instant::now();
        access.refused(&source, RefusalCause::Authentication, now);
        access.retry_now(&source, now);
        assert!(access.paused(&source, now).is_none());
        assert_eq!(
            access.refused(&source, RefusalCause::Authentication, now),
            Duration::from_secs(4)
        );
    }

    #[test]
    fn only_refusals_have_a_cause() {
        use RDKafkaErrorCode as Code;
        let cause = |code| RefusalCause::of(&KafkaError::MessageConsumption(code));
        assert_eq!(
            cause(Code::Authentication),
            Some(RefusalCause::Authentication)
        );
        assert_eq!(cause(Code::SSL), Some(RefusalCause::Tls));
        assert_eq!(
            RefusalCause::of(&KafkaError::MessageProduction(
                Code::TopicAuthorizationFailed
            )),
            Some(RefusalCause::Authorization)
        );
        assert_eq!(cause(Code::AllBrokersDown), None);
        assert_eq!(cause(Code::MessageTimedOut), None);
        assert_eq!(RefusalCause::of(&KafkaError::Canceled), None);
    }
}
