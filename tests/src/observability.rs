//! What the observability tests look at: the members' registrations (with their
//! metrics address), their `/metrics`, `/healthz` and `/readyz` endpoints (plain
//! HTTP/1.1 over a socket), their gRPC health, an OTLP trace receiver, and an etcd
//! of a test's own that it can stop and start again.

use std::collections::BTreeMap;
use std::net::TcpListener as StdTcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use kmirror_common::schema::{decode, MemberInfo};
use kmirror_common::tls::{PeerRole, Transport};
use kmirror_common::Keys;
use kmirror_proto::tonic::transport::{Channel, Server};
use kmirror_proto::tonic::{Request, Response, Status};
use kmirror_proto::tonic_health::pb::health_check_response::ServingStatus;
use kmirror_proto::tonic_health::pb::health_client::HealthClient;
use kmirror_proto::tonic_health::pb::HealthCheckRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::TcpListenerStream;

use crate::Fleet;

/// The address of the metrics endpoint a member registered.
pub fn metrics_url(member: &MemberInfo) -> Result<&str> {
    member
        .metrics_address
        .as_deref()
        .with_context(|| format!("{} registered no metrics address", member.id))
}

/// How long one HTTP or gRPC health request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Every member of `fleet` registered in etcd, by id.
pub async fn members(fleet: &Fleet) -> Result<BTreeMap<String, MemberInfo>> {
    let prefix = Keys::new(fleet.name()).members();
    let mut etcd = fleet.etcd();
    let response = etcd
        .get(
            prefix.as_str(),
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .with_context(|| format!("cannot list {prefix} in etcd"))?;
    let mut members = BTreeMap::new();
    for entry in response.kvs() {
        let info: MemberInfo = decode(entry.key(), entry.value())?;
        members.insert(info.id.to_string(), info);
    }
    Ok(members)
}

/// A plain `GET` of `url` (`http://host:port`) plus `path`: status and body.
pub async fn http_get(url: &str, path: &str) -> Result<(u16, String)> {
    let authority = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("{url} is not an http:// URL"))?
        .trim_end_matches('/');
    let exchange = async {
        let mut stream = TcpStream::connect(authority).await?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow!("GET {url}{path} timed out"))?
        .with_context(|| format!("GET {url}{path}"))?;
    let response = String::from_utf8(response).context("the response is not UTF-8")?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("GET {url}{path}: no end of headers in {response:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| anyhow!("GET {url}{path}: no status in {head:?}"))?;
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        bail!("GET {url}{path}: chunked responses are not expected");
    }
    Ok((status, body.to_string()))
}

/// `/metrics` of a member, parsed by a Prometheus text format parser.
pub async fn scrape(url: &str) -> Result<prometheus_parse::Scrape> {
    let (status, body) = http_get(url, "/metrics").await?;
    if status != 200 {
        bail!("GET {url}/metrics answered {status}: {body}");
    }
    prometheus_parse::Scrape::parse(body.lines().map(|line| Ok(line.to_string())))
        .with_context(|| format!("{url}/metrics is not in the Prometheus text format"))
}

/// Sum of the samples of `name` whose labels include every one of `labels`.
pub fn sum(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples(scrape, name, labels)
        .iter()
        .map(|sample| sample_value(sample))
        .sum()
}

/// Per member of `fleet` (by id), the [`sum`] of `name`'s samples with
/// `labels` on its `/metrics`; a member whose endpoint does not answer (it is
/// stopping) is left out.
pub async fn member_sums(
    fleet: &Fleet,
    name: &str,
    labels: &[(&str, &str)],
) -> Result<BTreeMap<String, f64>> {
    let mut sums = BTreeMap::new();
    for (id, member) in members(fleet).await? {
        if let Ok(scraped) = scrape(metrics_url(&member)?).await {
            sums.insert(id, sum(&scraped, name, labels));
        }
    }
    Ok(sums)
}

/// The samples of `name` whose labels include every one of `labels`.
pub fn samples<'a>(
    scrape: &'a prometheus_parse::Scrape,
    name: &str,
    labels: &[(&str, &str)],
) -> Vec<&'a prometheus_parse::Sample> {
    scrape
        .samples
        .iter()
        .filter(|sample| sample.metric == name)
        .filter(|sample| {
            labels
                .iter()
                .all(|(label, value)| sample.labels.get(label) == Some(*value))
        })
        .collect()
}

pub fn sample_value(sample: &prometheus_parse::Sample) -> f64 {
    match &sample.value {
        prometheus_parse::Value::Counter(value)
        | prometheus_parse::Value::Gauge(value)
        | prometheus_parse::Value::Untyped(value) => *value,
        prometheus_parse::Value::Histogram(_) | prometheus_parse::Value::Summary(_) => f64::NAN,
    }
}

/// The gRPC health of `service` (`""`: the server as a whole) at a member's
/// registered address, over `transport` (the fleet's TLS, see
/// [`crate::Fleet::client_transport`]), the member being of `role`.
pub async fn grpc_health(
    transport: &Transport,
    role: PeerRole,
    address: &str,
    service: &str,
) -> Result<ServingStatus> {
    let url = if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    };
    let expected: &'static [PeerRole] = match role {
        PeerRole::Fetcher => &[PeerRole::Fetcher],
        PeerRole::Writer => &[PeerRole::Writer],
        _ => &[PeerRole::Coordinator],
    };
    let check = async {
        let channel = transport
            .connect(Channel::from_shared(url.clone())?, expected)
            .await?;
        let answer = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: service.to_string(),
            })
            .await?
            .into_inner();
        Ok::<_, anyhow::Error>(answer.status())
    };
    tokio::time::timeout(REQUEST_TIMEOUT, check)
        .await
        .map_err(|_| anyhow!("health check of {url} timed out"))?
}

/// A span an OTLP receiver got, with the service that sent it.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub service: String,
    pub span: Span,
}

impl ReceivedSpan {
    pub fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }

    pub fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }

    pub fn parent_span_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }

    /// An attribute's value as text (numbers and booleans printed).
    pub fn attribute(&self, key: &str) -> Option<String> {
        attribute(&self.span.attributes, key)
    }
}

fn attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    let value = attributes
        .iter()
        .find(|attribute| attribute.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()?;
    Some(match value {
        Value::StringValue(text) => text.clone(),
        Value::IntValue(number) => number.to_string(),
        Value::BoolValue(flag) => flag.to_string(),
        Value::DoubleValue(number) => number.to_string(),
        other => format!("{other:?}"),
    })
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A real OTLP/gRPC trace receiver on 127.0.0.1 (a port of its own) that keeps
/// every span it is sent.
pub struct OtlpReceiver {
    pub endpoint: String,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    stop: tokio_util::sync::CancellationToken,
}

impl OtlpReceiver {
    pub async fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let spans = Arc::new(Mutex::new(Vec::new()));
        let stop = tokio_util::sync::CancellationToken::new();
        let service = Collector {
            spans: spans.clone(),
        };
        let server = Server::builder()
            .add_service(TraceServiceServer::new(service))
            .serve_with_incoming_shutdown(
                TcpListenerStream::new(listener),
                stop.clone().cancelled_owned(),
            );
        tokio::spawn(server);
        Ok(Self {
            endpoint,
            spans,
            stop,
        })
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().expect("receiver lock").clone()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

struct Collector {
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
}

#[kmirror_proto::tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut received = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .as_ref()
                .and_then(|resource| attribute(&resource.attributes, "service.name"))
                .unwrap_or_default();
            for scope_spans in resource_spans.scope_spans {
                received.extend(scope_spans.spans.into_iter().map(|span| ReceivedSpan {
                    service: service.clone(),
                    span,
                }));
            }
        }
        self.spans.lock().expect("receiver lock").extend(received);
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// An etcd server of a test's own (Debian's `/usr/bin/etcd`), on ports and in a
/// data folder of its own, that the test stops and starts again.
pub struct PrivateEtcd {
    pub endpoint: String,
    name: String,
    data_dir: PathBuf,
    log_path: PathBuf,
    peer_port: u16,
    child: Mutex<Option<Child>>,
}

impl PrivateEtcd {
    /// Starts it and waits until it answers.
    pub async fn start(name: &str, log_dir: &std::path::Path) -> Result<Self> {
        let data_dir = std::env::temp_dir().join(crate::unique_name(name));
        std::fs::create_dir_all(log_dir)?;
        let (client_port, peer_port) = (free_port()?, free_port()?);
        let etcd = Self {
            endpoint: format!("http://127.0.0.1:{client_port}"),
            name: name.to_string(),
            log_path: log_dir.join(format!("{name}.log")),
            data_dir,
            peer_port,
            child: Mutex::new(None),
        };
        etcd.resume().await?;
        Ok(etcd)
    }

    /// Stops it (SIGKILL: as abrupt as a crash; its data stays).
    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().expect("etcd lock").take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same ports and data, and waits until it answers.
    pub async fn resume(&self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new(etcd_binary())
            .args([
                "--name",
                &self.name,
                "--data-dir",
                &self.data_dir.display().to_string(),
                "--listen-client-urls",
                &self.endpoint,
                "--advertise-client-urls",
                &self.endpoint,
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
                "--initial-cluster",
                &format!("{}={peer_url}", self.name),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", etcd_binary()))?;
        *self.child.lock().expect("etcd lock") = Some(child);
        let endpoint = self.endpoint.clone();
        crate::wait_until(
            Duration::from_secs(30),
            "the private etcd to answer",
            || {
                let endpoint = endpoint.clone();
                async move {
                    let options =
                        etcd_client::ConnectOptions::new().with_timeout(Duration::from_secs(2));
                    let mut client =
                        etcd_client::Client::connect([endpoint.as_str()], Some(options))
                            .await
                            .map_err(|error| error.to_string())?;
                    client
                        .status()
                        .await
                        .map(|_| ())
                        .map_err(|error| error.to_string())
                }
            },
        )
        .await
        .map_err(|error| anyhow!("{error} (log: {})", self.log_path.display()))?;
        Ok(())
    }
}

impl Drop for PrivateEtcd {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

fn etcd_binary() -> String {
    std::env::var("KMIRROR_ETCD_BINARY").unwrap_or_else(|_| "/usr/bin/etcd".to_string())
}

/// A free port below the kernel's ephemeral range, so that it stays free for a
/// server that stops and starts again (no other process gets it from `bind(0)`).
fn free_port() -> Result<u16> {
    let ephemeral_start: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .filter(|start| *start > 11_000)
        .unwrap_or(32_768);
    for _ in 0..1_000 {
        let random = uuid::Uuid::new_v4().as_u128();
        let port = 10_000 + (random % u128::from(ephemeral_start - 10_000)) as u16;
        if StdTcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port below {ephemeral_start}")
}
