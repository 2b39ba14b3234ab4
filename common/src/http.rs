//! The HTTP endpoint every service serves next to its gRPC port:
//!
//! - `GET /metrics`: Prometheus metrics ([`crate::metrics`]);
//! - `GET /healthz`: 200 while the process runs;
//! - `GET /readyz`: 200 while the member is ready (its etcd lease is live and it
//!   is not stopping, see [`crate::health`]), 503 otherwise; the body says why and,
//!   for a coordinator, whether it leads.
//!
//! It binds before the member registers, so the bound address (port 0 picks a free
//! one) is logged and registered in etcd as the member's `metrics_address`. It runs
//! until its `stop` token is cancelled, the last step of the member's stop.

use std::convert::Infallible;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::health::Health;
use crate::metrics::Granularity;
use crate::types::Role;

/// Settings of the metrics and health endpoint, part of every member's flags.
/// `Default` serves no endpoint (members run in-process by tests).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct MetricsArgs {
    /// Address of the HTTP server for /metrics, /healthz and /readyz, or `off`.
    /// Port 0 picks a free port; the bound address is logged and registered in
    /// etcd as the member's metrics_address.
    #[arg(
        long,
        env = "KMIRROR_METRICS_LISTEN",
        value_name = "ADDR|off",
        default_value = "127.0.0.1:0"
    )]
    pub metrics_listen: MetricsListen,

    /// Labels of per-partition metrics: `partition` (flow, topic and partition) or
    /// `topic` (flow and topic, partitions added up: fewer series).
    #[arg(
        long,
        env = "KMIRROR_METRICS_LABELS",
        value_enum,
        default_value = "partition"
    )]
    pub metrics_labels: Granularity,
}

/// Where the metrics endpoint listens, if anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MetricsListen(pub Option<SocketAddr>);

impl FromStr for MetricsListen {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "off" | "none" | "" => Ok(Self(None)),
            address => address
                .parse()
                .map(|address| Self(Some(address)))
                .map_err(|_| {
                    format!("expected a socket address such as 0.0.0.0:9464, or off; got {text:?}")
                }),
        }
    }
}

impl fmt::Display for MetricsListen {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(address) => write!(formatter, "{address}"),
            None => formatter.write_str("off"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {address} for metrics: {source}")]
pub struct ListenError {
    pub address: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// The bound metrics endpoint, not serving yet.
pub struct MetricsEndpoint {
    listener: TcpListener,
    /// The URL to register as the member's `metrics_address`.
    pub url: String,
}

impl MetricsEndpoint {
    /// Serves `/metrics`, `/healthz` and `/readyz` (from `health`) until `stop`.
    pub async fn serve(self, health: Health, stop: CancellationToken) {
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = serve(self.listener, health) => {}
        }
    }
}

/// Installs the metrics of `role` and, unless the endpoint is off, binds it.
/// `advertise_opt` (the member's `--advertise`) names the host when the endpoint
/// listens on every interface.
pub async fn bind(
    metrics_listen: MetricsListen,
    metrics_labels: Granularity,
    role: Role,
    advertise_opt: Option<&str>,
) -> Result<Option<MetricsEndpoint>, ListenError> {
    crate::metrics::install(role, metrics_labels);
    let Some(address) = metrics_listen.0 else {
        return Ok(None);
    };
    let listener = TcpListener::bind(address)
        .await
        .map_err(|source| ListenError { address, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ListenError { address, source })?;
    let url = metrics_url(bound, advertise_opt);
    info!(listen = %bound, url, "serving /metrics, /healthz and /readyz");
    Ok(Some(MetricsEndpoint { listener, url }))
}

async fn serve(listener: TcpListener, health: Health) -> Infallible {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors and the like: try again shortly.
                debug!(%error, "cannot accept a metrics connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let health = health.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let response = respond(request.method(), request.uri().path(), &health);
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                debug!(%error, "metrics connection ended with an error");
            }
        });
    }
}

fn respond(method: &Method, path: &str, health: &Health) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".to_string());
    }
    match path {
        "/metrics" => {
            let mut response = Response::new(Full::new(Bytes::from(crate::metrics::render())));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
            );
            response
        }
        "/healthz" => text(StatusCode::OK, "ok\n".to_string()),
        "/readyz" => {
            let health = health.status();
            let code = if health.ready() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            text(code, health.describe())
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz or /readyz\n".to_string(),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The URL others scrape: the bound address, except that an unspecified IP
/// (0.0.0.0, ::) is replaced by the host the member advertises, if any.
pub fn metrics_url(bound: SocketAddr, advertise_opt: Option<&str>) -> String {
    let advertised_host = advertise_opt.and_then(host_of);
    match (bound.ip().is_unspecified(), advertised_host) {
        (true, Some(host)) => format!("http://{host}:{}", bound.port()),
        _ => match bound.ip() {
            IpAddr::V6(ip) => format!("http://[{ip}]:{}", bound.port()),
            IpAddr::V4(ip) => format!("http://{ip}:{}", bound.port()),
        },
    }
}

/// The host of an address such as `http://writer-1.internal:7081` or `10.0.0.5:7081`.
fn host_of(address: &str) -> Option<String> {
    let without_scheme = address.split_once("://").map_or(address, |(_, rest)| rest);
    let authority = without_scheme.split('/').next()?;
    let host = if let Some(bracketed) = authority.strip_prefix('[') {
        format!("[{}]", bracketed.split(']').next()?)
    } else {
        authority
            .rsplit_once(':')
            .map_or(authority, |(host, _)| host)
            .to_string()
    };
    (!host.is_empty()).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listen_flag_takes_an_address_or_off() {
        assert_eq!("off".parse::<MetricsListen>().unwrap(), MetricsListen(None));
        assert_eq!(
            "127.0.0.1:0".parse::<MetricsListen>().unwrap(),
            MetricsListen(Some("127.0.0.1:0".parse().unwrap()))
        );
        assert!("localhost".parse::<MetricsListen>().is_err());
        assert_eq!(MetricsListen(None).to_string(), "off");
    }

    #[test]
    fn the_registered_url_names_a_reachable_host() {
        let loopback: SocketAddr = "127.0.0.1:9464".parse().unwrap();
        assert_eq!(metrics_url(loopback, None), "http://127.0.0.1:9464");
        assert_eq!(
            metrics_url(loopback, Some("http://w.internal:7081")),
            "http://127.0.0.1:9464"
        );
        let any: SocketAddr = "0.0.0.0:9464".parse().unwrap();
        assert_eq!(
            metrics_url(any, Some("http://w.internal:7081")),
            "http://w.internal:9464"
        );
        assert_eq!(
            metrics_url(any, Some("10.0.0.5:7070")),
            "http://10.0.0.5:9464"
        );
        assert_eq!(metrics_url(any, None), "http://0.0.0.0:9464");
        let v6: SocketAddr = "[::1]:9464".parse().unwrap();
        assert_eq!(metrics_url(v6, None), "http://[::1]:9464");
        assert_eq!(
            host_of("http://[fe80::1]:7081"),
            Some("[fe80::1]".to_string())
        );
    }

    #[test]
    fn endpoints_answer_with_the_right_status() {
        let (lease_tx, lease_rx) =
            tokio::sync::watch::channel(crate::lease_keeper::LeaseState::Registering);
        let health = Health::new(lease_rx);
        let key = &health;
        assert_eq!(
            respond(&Method::GET, "/healthz", key).status(),
            StatusCode::OK
        );
        assert_eq!(
            respond(&Method::GET, "/readyz", key).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        lease_tx.send_replace(crate::lease_keeper::LeaseState::Live(
            crate::lease_keeper::Lease {
                id: 1,
                guard: crate::membership::LeaseGuard::always_live(),
                lost: CancellationToken::new(),
            },
        ));
        assert_eq!(
            respond(&Method::GET, "/readyz", key).status(),
            StatusCode::OK
        );
        assert_eq!(
            respond(&Method::GET, "/metrics", key).status(),
            StatusCode::OK
        );
        assert_eq!(
            respond(&Method::POST, "/metrics", key).status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            respond(&Method::GET, "/", key).status(),
            StatusCode::NOT_FOUND
        );
    }
}
