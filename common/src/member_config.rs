//! Member config as plain data: [`MemberConfig`] is what every role has (etcd,
//! fleet, identity, addresses, lease, shutdown, threads, metrics), and each role's
//! config holds one as its `member` part beside its own settings. Settings every
//! role needs later (TLS, identities) belong here, once.
//!
//! A config is serde data with `deny_unknown_fields`. Flags and `KMIRROR_*`
//! environment variables (parsed by clap) and the YAML config file both convert
//! into it, see [`crate::config_file`]; `kmirror mirror` and tests write it as
//! values. Scalars are read from text the way the flags are, so a file may say
//! `workerThreads: 2` or `workerThreads: "2"` alike, and `leaseTtl: 6s`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde::Deserialize;

use crate::etcd::{EtcdSecurity, EtcdSettings};
use crate::http::MetricsListen;
use crate::metrics::Granularity;
use crate::tls::TransportSettings;

/// Settings shared by the coordinator, the fetcher and the writer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct MemberConfig {
    /// etcd endpoints.
    #[serde(deserialize_with = "text::list")]
    pub etcd: Vec<String>,
    /// All control state lives under `/kmirror/<fleet>/` in etcd.
    #[serde(deserialize_with = "text::scalar")]
    pub fleet: String,
    /// Unique in the fleet; the role plus a random suffix when absent.
    #[serde(deserialize_with = "text::optional_scalar")]
    pub id: Option<String>,
    /// Address of the gRPC server; each role has its default.
    #[serde(deserialize_with = "text::optional_parsed")]
    pub listen: Option<SocketAddr>,
    /// Address others reach the member at; the listen address when absent.
    #[serde(deserialize_with = "text::optional_scalar")]
    pub advertise: Option<String>,
    #[serde(deserialize_with = "text::duration")]
    pub lease_ttl: Duration,
    #[serde(deserialize_with = "text::duration")]
    pub shutdown_grace: Duration,
    #[serde(deserialize_with = "text::worker_threads")]
    pub worker_threads: u16,
    #[serde(deserialize_with = "text::parsed")]
    pub metrics_listen: MetricsListen,
    #[serde(deserialize_with = "text::value_enum")]
    pub metrics_labels: Granularity,
    // Secrets.
    /// The fleet's secrets key file: cluster secrets are sealed with it in etcd
    /// and opened with it for Kafka clients (see [`crate::secrets`]).
    #[serde(deserialize_with = "text::optional_parsed")]
    pub secrets_key_file: Option<PathBuf>,

    // Transport security (`crate::tls`): mutual TLS with these PEM files, or
    // plaintext only when `insecure` says so.
    /// This member's certificate (chain), PEM.
    #[serde(deserialize_with = "text::optional_path")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key, PEM.
    #[serde(deserialize_with = "text::optional_path")]
    pub tls_key: Option<PathBuf>,
    /// The fleet CA's certificate, PEM: peers must present one it signed.
    #[serde(deserialize_with = "text::optional_path")]
    pub tls_ca: Option<PathBuf>,
    /// Plaintext, unauthenticated connections, asked for by name.
    #[serde(deserialize_with = "text::flag")]
    pub insecure: bool,

    // etcd security (see [`crate::etcd::EtcdSecurity`]).
    /// Client certificate (PEM) presented to an `https://` etcd.
    #[serde(deserialize_with = "text::optional_parsed")]
    pub etcd_cert: Option<PathBuf>,
    /// Private key (PEM) of `etcd_cert`.
    #[serde(deserialize_with = "text::optional_parsed")]
    pub etcd_key: Option<PathBuf>,
    /// CA (PEM) of etcd's server certificate.
    #[serde(deserialize_with = "text::optional_parsed")]
    pub etcd_ca: Option<PathBuf>,
    /// etcd RBAC user.
    #[serde(deserialize_with = "text::optional_scalar")]
    pub etcd_user: Option<String>,
    /// File holding the etcd user's password.
    #[serde(deserialize_with = "text::optional_parsed")]
    pub etcd_password_file: Option<PathBuf>,
}

impl MemberConfig {
    /// The settings of this part, as a config file names them (camelCase): a
    /// flat file's keys are sorted into the `member` part by this list.
    pub const FIELDS: &'static [&'static str] = &[
        "etcd",
        "fleet",
        "id",
        "listen",
        "advertise",
        "leaseTtl",
        "shutdownGrace",
        "workerThreads",
        "metricsListen",
        "metricsLabels",
        "secretsKeyFile",
        "tlsCert",
        "tlsKey",
        "tlsCa",
        "insecure",
        // etcd security.
        "etcdCert",
        "etcdKey",
        "etcdCa",
        "etcdUser",
        "etcdPasswordFile",
    ];

    /// The transport settings, to be resolved with the member's role.
    pub fn transport_settings(&self) -> TransportSettings {
        TransportSettings {
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            tls_ca: self.tls_ca.clone(),
            insecure: self.insecure,
        }
    }

    pub fn etcd_settings(&self) -> EtcdSettings {
        EtcdSettings {
            endpoints: self.etcd.clone(),
            fleet: self.fleet.clone(),
            security: EtcdSecurity {
                cert: self.etcd_cert.clone(),
                key: self.etcd_key.clone(),
                ca: self.etcd_ca.clone(),
                user: self.etcd_user.clone(),
                password_file: self.etcd_password_file.clone(),
            },
        }
    }

    /// Runs a member's `main` to its end on a runtime of `worker_threads`
    /// threads, with telemetry for `service` set up before it and flushed after.
    pub fn run(
        &self,
        service: &str,
        main: impl std::future::Future<Output = ExitCode>,
    ) -> ExitCode {
        if let Err(error) = crate::secrets::install_from_file(self.secrets_key_file.as_deref()) {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
        match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(self.worker_threads.into())
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(async {
                let telemetry = crate::telemetry::init(service);
                let exit_code = main.await;
                telemetry.shutdown().await;
                exit_code
            }),
            Err(error) => {
                eprintln!(
                    "error: cannot start a runtime of {} worker threads: {error}",
                    self.worker_threads
                );
                ExitCode::FAILURE
            }
        }
    }
}

impl Default for MemberConfig {
    /// The flags' defaults (a unit test keeps the two equal).
    fn default() -> Self {
        Self {
            etcd: vec!["http://127.0.0.1:2379".to_string()],
            fleet: "local".to_string(),
            id: None,
            listen: None,
            advertise: None,
            lease_ttl: Duration::from_secs(6),
            shutdown_grace: Duration::from_secs(20),
            worker_threads: 1,
            metrics_listen: MetricsListen(Some(SocketAddr::from(([127, 0, 0, 1], 0)))),
            metrics_labels: Granularity::Partition,
            secrets_key_file: None,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            insecure: false,
            etcd_cert: None,
            etcd_key: None,
            etcd_ca: None,
            etcd_user: None,
            etcd_password_file: None,
        }
    }
}

/// Deserializers that read a setting from text as its flag does, whether the
/// file wrote it as a string, a number or a boolean.
pub mod text {
    use std::fmt::Display;
    use std::str::FromStr;
    use std::time::Duration;

    use serde::de::Error;
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Text(String),
        Unsigned(u64),
        Signed(i64),
        Float(f64),
        Flag(bool),
    }

    impl Scalar {
        fn into_text(self) -> String {
            match self {
                Scalar::Text(text) => text,
                Scalar::Unsigned(number) => number.to_string(),
                Scalar::Signed(number) => number.to_string(),
                Scalar::Float(number) => number.to_string(),
                Scalar::Flag(flag) => flag.to_string(),
            }
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ScalarOrList {
        List(Vec<Scalar>),
        One(Scalar),
    }

    /// A scalar as its text.
    pub fn scalar<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
        Scalar::deserialize(deserializer).map(Scalar::into_text)
    }

    pub fn optional_scalar<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<String>, D::Error> {
        scalar(deserializer).map(Some)
    }

    /// A value parsed from its text, as the flag parses it.
    pub fn parsed<'de, D, T>(deserializer: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: FromStr,
        T::Err: Display,
    {
        let text = scalar(deserializer)?;
        text.parse()
            .map_err(|error| D::Error::custom(format!("{text:?}: {error}")))
    }

    pub fn optional_parsed<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: FromStr,
        T::Err: Display,
    {
        parsed(deserializer).map(Some)
    }

    /// A path, as its text.
    pub fn optional_path<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<std::path::PathBuf>, D::Error> {
        scalar(deserializer).map(|text| Some(std::path::PathBuf::from(text)))
    }

    /// A boolean as a flag's variable may say it: `true`/`false`, `1`/`0`,
    /// `yes`/`no`, `on`/`off`.
    pub fn flag<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
        let text = scalar(deserializer)?;
        match text.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" | "" => Ok(false),
            _ => Err(D::Error::custom(format!("{text:?} is not a boolean"))),
        }
    }

    /// A human duration such as `6s` or `750ms`.
    pub fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = scalar(deserializer)?;
        humantime::parse_duration(&text)
            .map_err(|error| D::Error::custom(format!("{text:?}: {error}")))
    }

    /// One of a flag's named values (`partition`, `zstd`, ...).
    pub fn value_enum<'de, D, T>(deserializer: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: clap::ValueEnum,
    {
        let text = scalar(deserializer)?;
        T::from_str(&text, false).map_err(|error| D::Error::custom(format!("{text:?}: {error}")))
    }

    /// A list, or one comma-separated text (as `--etcd a,b`).
    pub fn list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
        let items = match ScalarOrList::deserialize(deserializer)? {
            ScalarOrList::List(items) => items.into_iter().map(Scalar::into_text).collect(),
            ScalarOrList::One(item) => vec![item.into_text()],
        };
        Ok(items
            .iter()
            .flat_map(|item| item.split(','))
            .map(str::to_string)
            .collect())
    }

    /// A number in `min..=max`, as a flag with a range checks it.
    pub fn number_in<'de, D, T>(deserializer: D, min: T, max: T) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: FromStr + PartialOrd + Display + Copy,
        T::Err: Display,
    {
        let number: T = parsed(deserializer)?;
        if number < min || number > max {
            return Err(D::Error::custom(format!(
                "{number} is not in {min}..={max}"
            )));
        }
        Ok(number)
    }

    pub fn worker_threads<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u16, D::Error> {
        number_in(deserializer, 1, 1024)
    }

    /// `KEY=VALUE` pairs: a mapping, a list of `KEY=VALUE` texts, or one.
    pub fn properties<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<(String, String)>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Properties {
            Map(ordered::Pairs),
            Texts(ScalarOrList),
        }
        match Properties::deserialize(deserializer)? {
            Properties::Map(pairs) => Ok(pairs.0),
            Properties::Texts(texts) => {
                let texts: Vec<String> = match texts {
                    ScalarOrList::List(items) => items.into_iter().map(Scalar::into_text).collect(),
                    ScalarOrList::One(item) => vec![item.into_text()],
                };
                texts
                    .iter()
                    .map(|text| parse_property(text).map_err(D::Error::custom))
                    .collect()
            }
        }
    }

    /// `KEY=VALUE`, the key trimmed and not empty.
    pub fn parse_property(text: &str) -> Result<(String, String), String> {
        match text.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                Ok((key.trim().to_string(), value.to_string()))
            }
            _ => Err(format!("expected KEY=VALUE, got {text:?}")),
        }
    }

    /// A mapping read in the file's order, its values as text.
    mod ordered {
        use std::fmt;

        use serde::de::{MapAccess, Visitor};
        use serde::{Deserialize, Deserializer};

        use super::Scalar;

        pub struct Pairs(pub Vec<(String, String)>);

        impl<'de> Deserialize<'de> for Pairs {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct PairsVisitor;
                impl<'de> Visitor<'de> for PairsVisitor {
                    type Value = Pairs;
                    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                        formatter.write_str("a mapping of properties")
                    }
                    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Pairs, A::Error> {
                        let mut pairs = Vec::new();
                        while let Some((key, value)) = map.next_entry::<String, Scalar>()? {
                            pairs.push((key, value.into_text()));
                        }
                        Ok(Pairs(pairs))
                    }
                }
                deserializer.deserialize_map(PairsVisitor)
            }
        }
    }
}
