//! etcd's load, two ways:
//!
//! - [`EtcdCounters`]: etcd's own counters (`/metrics`): raft proposals committed
//!   (every write: puts, transactions, deletes, lease grants and revocations),
//!   range and transaction requests, lease keep-alives. They count every client of
//!   the etcd, so the run takes the same counters over a window without its fleet
//!   (the background) and subtracts it.
//! - [`FleetWrites`]: a watch on the fleet's prefix that counts the write
//!   transactions (distinct revisions) and the keys they wrote, by section
//!   (`checkpoints/`, `assignments/`, ...): the fleet's own writes, exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use etcd_client::WatchOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Counters read from etcd's `/metrics` at one moment.
#[derive(Debug, Clone, Default)]
pub struct EtcdCounters {
    pub at: Option<Instant>,
    values: BTreeMap<&'static str, f64>,
}

/// A label a counter's samples must carry: (label, value).
type LabelMatch = Option<(&'static str, &'static str)>;

/// The counters kept: (name in the report, metric, label that must match).
const COUNTERS: &[(&str, &str, LabelMatch)] = &[
    ("proposals", "etcd_server_proposals_committed_total", None),
    (
        "range_requests",
        "grpc_server_handled_total",
        Some(("grpc_method", "Range")),
    ),
    (
        "txn_requests",
        "grpc_server_handled_total",
        Some(("grpc_method", "Txn")),
    ),
    (
        "put_requests",
        "grpc_server_handled_total",
        Some(("grpc_method", "Put")),
    ),
    (
        "keepalives",
        "grpc_server_msg_received_total",
        Some(("grpc_method", "LeaseKeepAlive")),
    ),
    ("mvcc_ranges", "etcd_mvcc_range_total", None),
    ("mvcc_txns", "etcd_mvcc_txn_total", None),
];

/// Per-second rates between two readings of [`EtcdCounters`].
#[derive(Debug, Clone, Default)]
pub struct EtcdRates {
    pub seconds: f64,
    pub per_second: BTreeMap<&'static str, f64>,
}

impl EtcdRates {
    pub fn get(&self, name: &str) -> f64 {
        self.per_second.get(name).copied().unwrap_or(0.0)
    }

    /// These rates less `background`'s, never below 0.
    pub fn less(&self, background: &EtcdRates) -> EtcdRates {
        EtcdRates {
            seconds: self.seconds,
            per_second: self
                .per_second
                .iter()
                .map(|(name, rate)| (*name, (rate - background.get(name)).max(0.0)))
                .collect(),
        }
    }

    /// The mean of two sets of rates (the background before and after the run).
    pub fn mean(&self, other: &EtcdRates) -> EtcdRates {
        EtcdRates {
            seconds: self.seconds + other.seconds,
            per_second: self
                .per_second
                .iter()
                .map(|(name, rate)| (*name, (rate + other.get(name)) / 2.0))
                .collect(),
        }
    }
}

impl EtcdCounters {
    /// Reads etcd's `/metrics` at `endpoint` (`http://host:port`).
    pub async fn scrape(endpoint: &str) -> Result<Self> {
        let body = http10_get(endpoint, "/metrics").await?;
        let scrape = prometheus_parse::Scrape::parse(body.lines().map(|line| Ok(line.to_string())))
            .with_context(|| format!("{endpoint}/metrics is not in the Prometheus text format"))?;
        let values = COUNTERS
            .iter()
            .map(|(name, metric, label_opt)| {
                let labels: Vec<(&str, &str)> = label_opt.iter().copied().collect();
                (
                    *name,
                    kmirror_tests::observability::sum(&scrape, metric, &labels),
                )
            })
            .collect();
        Ok(Self {
            at: Some(Instant::now()),
            values,
        })
    }

    /// Rates from `self` (earlier) to `later`.
    pub fn rates_until(&self, later: &EtcdCounters) -> EtcdRates {
        let seconds = match (self.at, later.at) {
            (Some(start), Some(end)) => end.duration_since(start).as_secs_f64().max(1e-3),
            _ => 1.0,
        };
        EtcdRates {
            seconds,
            per_second: self
                .values
                .iter()
                .map(|(name, value)| {
                    let later_value = later.values.get(name).copied().unwrap_or(*value);
                    (*name, (later_value - value) / seconds)
                })
                .collect(),
        }
    }

    /// Reads the counters over `window` and returns their rates.
    pub async fn rates_over(endpoint: &str, window: Duration) -> Result<EtcdRates> {
        let start = Self::scrape(endpoint).await?;
        tokio::time::sleep(window).await;
        Ok(start.rates_until(&Self::scrape(endpoint).await?))
    }
}

/// A plain HTTP/1.0 `GET` (etcd answers HTTP/1.1 clients in chunks; 1.0 clients
/// get the body as is, until the connection closes).
async fn http10_get(endpoint: &str, path: &str) -> Result<String> {
    let authority = endpoint
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("{endpoint} is not an http:// URL"))?
        .trim_end_matches('/');
    let exchange = async {
        let mut stream = TcpStream::connect(authority).await?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| anyhow!("GET {endpoint}{path} timed out"))?
        .with_context(|| format!("GET {endpoint}{path}"))?;
    let response = String::from_utf8(response).context("the response is not UTF-8")?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("GET {endpoint}{path}: no end of headers"))?;
    if !head.starts_with("HTTP/1.") || !head.contains(" 200 ") {
        bail!(
            "GET {endpoint}{path}: {}",
            head.lines().next().unwrap_or_default()
        );
    }
    Ok(body.to_string())
}

/// The fleet's own writes over a window, from a watch on its prefix.
#[derive(Debug, Clone, Default)]
pub struct FleetWriteCounts {
    pub seconds: f64,
    /// Distinct revisions: write transactions (a transaction writing many keys
    /// makes one revision).
    pub transactions: u64,
    /// Keys written (puts and deletes).
    pub keys: u64,
    /// Write transactions by the section they touched (`checkpoints`, ...).
    pub transactions_by_section: BTreeMap<String, u64>,
}

impl FleetWriteCounts {
    pub fn transactions_per_second(&self) -> f64 {
        self.transactions as f64 / self.seconds.max(1e-3)
    }

    pub fn keys_per_second(&self) -> f64 {
        self.keys as f64 / self.seconds.max(1e-3)
    }
}

/// What the watch saw: revisions, keys written, revisions by section.
type WatchedWrites = (BTreeSet<i64>, u64, BTreeMap<String, BTreeSet<i64>>);

/// Counts the fleet's writes until [`FleetWrites::finish`].
pub struct FleetWrites {
    cancel: CancellationToken,
    started: Instant,
    handle: JoinHandle<Result<WatchedWrites>>,
}

impl FleetWrites {
    pub async fn start(mut etcd: etcd_client::Client, root: &str) -> Result<Self> {
        let mut stream = etcd
            .watch(root, Some(WatchOptions::new().with_prefix()))
            .await
            .with_context(|| format!("cannot watch {root}"))?;
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        let root = root.to_string();
        let handle = tokio::spawn(async move {
            let mut revisions = BTreeSet::new();
            let mut by_section: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
            let mut keys = 0u64;
            loop {
                let message = tokio::select! {
                    _ = stop.cancelled() => break,
                    message = stream.message() => message,
                };
                let Some(response) = message.context("the watch on the fleet's prefix failed")?
                else {
                    bail!("the watch on the fleet's prefix ended");
                };
                for event in response.events() {
                    let Some(kv) = event.kv() else { continue };
                    keys += 1;
                    revisions.insert(kv.mod_revision());
                    let key = String::from_utf8_lossy(kv.key());
                    let section = key
                        .strip_prefix(&root)
                        .and_then(|rest| rest.split('/').next())
                        .unwrap_or("other")
                        .to_string();
                    by_section
                        .entry(section)
                        .or_default()
                        .insert(kv.mod_revision());
                }
            }
            Ok((revisions, keys, by_section))
        });
        Ok(Self {
            cancel,
            started: Instant::now(),
            handle,
        })
    }

    pub async fn finish(self) -> Result<FleetWriteCounts> {
        let seconds = self.started.elapsed().as_secs_f64();
        self.cancel.cancel();
        let (revisions, keys, by_section) = self
            .handle
            .await
            .map_err(|error| anyhow!("the watch task failed: {error}"))??;
        Ok(FleetWriteCounts {
            seconds,
            transactions: revisions.len() as u64,
            keys,
            transactions_by_section: by_section
                .into_iter()
                .map(|(section, revisions)| (section, revisions.len() as u64))
                .collect(),
        })
    }
}
