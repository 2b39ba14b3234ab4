//! Kafka client configs written for the Java client (`.properties` files, as
//! MirrorMaker and its users have them), turned into librdkafka properties.
//!
//! Rules, in order, for each key:
//! - `bootstrap.servers` becomes the cluster's bootstrap address, `group.id` (consumer)
//!   the checkpoint namespace, `auto.offset.reset` (consumer) the start position;
//! - Java keys with a librdkafka equivalent are translated: `sasl.jaas.config`
//!   (PLAIN, SCRAM and Kerberos login modules) into `sasl.username` and
//!   `sasl.password` (or the Kerberos keytab and principal), PEM truststores into
//!   `ssl.ca.location`, PKCS#12 keystores kept as they are, `max.request.size` into
//!   `message.max.bytes`, `buffer.memory` into `queue.buffering.max.kbytes`, an
//!   empty `ssl.endpoint.identification.algorithm` into `none`;
//! - Java keys that mean nothing to a byte-for-byte mirror (serializers of bytes,
//!   consumer group settings) are dropped with a note saying why;
//! - keys that cannot work are errors naming the key and what to use instead
//!   (`zookeeper.connect` without `bootstrap.servers`, JKS stores, interceptors);
//! - every other key must be a librdkafka property (librdkafka checks the name and
//!   value); an unknown key is an error, never silently ignored;
//! - a producer file must leave the writers' idempotent `acks=all` producer
//!   possible: `acks=1`, `enable.idempotence=false` and the like are errors saying
//!   what to set instead ([`check_writer_producer`]).
//!
//! Values of secret keys never appear in notes or errors.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use kmirror_common::kafka::is_secret_property;
use kmirror_writer::producer::{PRODUCER_DEFAULTS, PRODUCER_REQUIRED};

/// Which client a file configures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientRole {
    Consumer,
    Producer,
    /// Settings shared by every client of a cluster (MirrorMaker 2's `A.<key>`).
    Any,
}

/// A client config translated for librdkafka.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientSettings {
    pub bootstrap_opt: Option<String>,
    pub group_id_opt: Option<String>,
    /// `earliest` or `latest`, from `auto.offset.reset`.
    pub start_opt: Option<String>,
    /// librdkafka properties (without `bootstrap.servers`).
    pub properties: BTreeMap<String, String>,
    /// Keys dropped or translated, and why (shown to the operator).
    pub notes: Vec<String>,
}

/// A key that cannot be used, and what to do instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropertyError {
    pub key: String,
    pub message: String,
}

impl fmt::Display for PropertyError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}: {}", self.key, self.message)
    }
}

/// Every problem of one file, for one error message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    pub source: String,
    pub errors: Vec<PropertyError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "invalid client config {}:", self.source)?;
        for error in &self.errors {
            write!(formatter, "\n  {error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Reads a `.properties` file: `key=value`, `key: value` or `key value` lines, `#`
/// and `!` comments, `\` line continuations and escapes, as Java reads them.
pub fn parse_properties(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut entries = Vec::new();
    // Java reads `.properties` as ISO-8859-1; client configs are written in UTF-8
    // today (passwords, paths), which ISO-8859-1 would garble.
    java_properties::PropertiesIter::new_with_encoding(text.as_bytes(), encoding_rs::UTF_8)
        .read_into(|key, value| entries.push((key, value)))
        .map_err(|error| match error.line_number() {
            Some(line) => format!("line {line}: {error}"),
            None => error.to_string(),
        })?;
    Ok(entries)
}

/// Reads and translates a client config file.
pub fn load_client_config(path: &Path, role: ClientRole) -> Result<ClientSettings, ConfigErrors> {
    let source = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|error| ConfigErrors {
        source: source.clone(),
        errors: vec![PropertyError {
            key: "(file)".to_string(),
            message: format!("cannot read it: {error}"),
        }],
    })?;
    let entries = parse_properties(&text).map_err(|message| ConfigErrors {
        source: source.clone(),
        errors: vec![PropertyError {
            key: "(syntax)".to_string(),
            message,
        }],
    })?;
    translate(&entries, role).map_err(|errors| ConfigErrors { source, errors })
}

/// Java consumer and producer keys a mirror has no use for, and why.
const DROPPED: &[(&str, &str)] = &[
    (
        "partition.assignment.strategy",
        "kmirror assigns partitions itself (no consumer group)",
    ),
    (
        "enable.auto.commit",
        "kmirror checkpoints in etcd, never in the source cluster",
    ),
    (
        "auto.commit.interval.ms",
        "kmirror checkpoints in etcd, never in the source cluster",
    ),
    (
        "exclude.internal.topics",
        "internal topics (__*) are never mirrored",
    ),
    (
        "client.dns.lookup",
        "librdkafka resolves every address itself",
    ),
    ("max.poll.records", "fetchers read whole batches"),
    (
        "max.poll.interval.ms",
        "fetchers do not join a consumer group",
    ),
    (
        "session.timeout.ms",
        "fetchers do not join a consumer group",
    ),
    (
        "heartbeat.interval.ms",
        "fetchers do not join a consumer group",
    ),
    (
        "max.block.ms",
        "writers wait out a full queue without a limit",
    ),
    (
        "metric.reporters",
        "kmirror serves Prometheus metrics itself",
    ),
    (
        "ssl.protocol",
        "librdkafka negotiates the TLS version itself",
    ),
    (
        "ssl.enabled.protocols",
        "librdkafka negotiates the TLS version itself",
    ),
    ("ssl.truststore.type", "read with ssl.truststore.location"),
    ("ssl.keystore.type", "read with ssl.keystore.location"),
    (
        "ssl.truststore.password",
        "read with ssl.truststore.location",
    ),
    (
        "ssl.keystore.password",
        "a PEM keystore has no store password (an encrypted key's is ssl.key.password)",
    ),
];

const BYTE_SERDES: &[&str] = &[
    "org.apache.kafka.common.serialization.ByteArraySerializer",
    "org.apache.kafka.common.serialization.ByteArrayDeserializer",
    "org.apache.kafka.common.serialization.BytesSerializer",
    "org.apache.kafka.common.serialization.BytesDeserializer",
];

/// Translates Java client properties (see the module documentation).
pub fn translate(
    entries: &[(String, String)],
    role: ClientRole,
) -> Result<ClientSettings, Vec<PropertyError>> {
    let map: BTreeMap<&str, &str> = entries
        .iter()
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .collect();
    let mut settings = ClientSettings::default();
    let mut errors = Vec::new();
    let mut error = |key: &str, message: String| {
        errors.push(PropertyError {
            key: key.to_string(),
            message,
        })
    };
    for (&key, &value) in &map {
        let value = value.trim();
        match key {
            "bootstrap.servers" => settings.bootstrap_opt = Some(value.to_string()),
            "group.id" => match role {
                ClientRole::Producer => settings
                    .notes
                    .push("group.id dropped: producers have no group".to_string()),
                _ => settings.group_id_opt = Some(value.to_string()),
            },
            "zookeeper.connect" => {
                if map.contains_key("bootstrap.servers") {
                    settings.notes.push(
                        "zookeeper.connect dropped: kmirror talks to the brokers given in bootstrap.servers"
                            .to_string(),
                    );
                } else {
                    error(
                        key,
                        "kmirror talks to the Kafka brokers, never to ZooKeeper: set bootstrap.servers to the cluster's brokers (host:9092,...) instead".to_string(),
                    );
                }
            }
            "auto.offset.reset" => match (role, value) {
                (ClientRole::Producer, _) => settings
                    .notes
                    .push("auto.offset.reset dropped: a producer setting has no start".to_string()),
                (_, "earliest" | "smallest") => settings.start_opt = Some("earliest".to_string()),
                (_, "latest" | "largest") => settings.start_opt = Some("latest".to_string()),
                (_, other) => error(
                    key,
                    format!("{other:?} is not a start position: use earliest or latest"),
                ),
            },
            "key.serializer" | "value.serializer" | "key.deserializer" | "value.deserializer" => {
                if BYTE_SERDES.contains(&value) {
                    settings.notes.push(format!(
                        "{key} dropped: kmirror copies keys and values as bytes"
                    ));
                } else {
                    error(
                        key,
                        format!("kmirror copies keys and values byte for byte and cannot run {value}: remove it"),
                    );
                }
            }
            "interceptor.classes" => error(
                key,
                "Java interceptors cannot run in kmirror: remove it".to_string(),
            ),
            "sasl.jaas.config" => match jaas_credentials(value, map.get("sasl.mechanism").copied())
            {
                Ok(credentials) => {
                    for (name, credential) in credentials {
                        settings.properties.insert(name.to_string(), credential);
                    }
                    settings.notes.push(
                        "sasl.jaas.config translated into librdkafka's sasl.* properties"
                            .to_string(),
                    );
                }
                Err(message) => error(key, message),
            },
            "ssl.truststore.location" => {
                let store_type = map
                    .get("ssl.truststore.type")
                    .map(|store_type| store_type.trim().to_ascii_uppercase())
                    .unwrap_or_else(|| "JKS".to_string());
                if store_type == "PEM" {
                    settings
                        .properties
                        .insert("ssl.ca.location".to_string(), value.to_string());
                    settings.notes.push(
                        "ssl.truststore.location (PEM) translated into ssl.ca.location".to_string(),
                    );
                } else {
                    error(
                        key,
                        format!(
                            "librdkafka cannot read a {store_type} truststore: export the CA certificates as PEM (keytool -exportcert -rfc -keystore {value} ...) and set ssl.ca.location to that file"
                        ),
                    );
                }
            }
            "ssl.keystore.location" => {
                let store_type = map
                    .get("ssl.keystore.type")
                    .map(|store_type| store_type.trim().to_ascii_uppercase())
                    .unwrap_or_else(|| "JKS".to_string());
                match store_type.as_str() {
                    "PKCS12" => {
                        settings
                            .properties
                            .insert(key.to_string(), value.to_string());
                    }
                    "PEM" => {
                        // Java's PEM keystore is one file with the private key
                        // and the certificate chain; librdkafka reads each from
                        // it, skipping the other's blocks. A separate
                        // ssl.key.location wins.
                        settings
                            .properties
                            .insert("ssl.certificate.location".to_string(), value.to_string());
                        if !map.contains_key("ssl.key.location") {
                            settings
                                .properties
                                .insert("ssl.key.location".to_string(), value.to_string());
                        }
                        settings.notes.push(
                            "ssl.keystore.location (PEM) translated into ssl.certificate.location and ssl.key.location".to_string(),
                        );
                    }
                    _ => error(
                        key,
                        format!(
                            "librdkafka cannot read a {store_type} keystore: convert it to PKCS#12 (keytool -importkeystore -deststoretype PKCS12) and set ssl.keystore.type=PKCS12, or use PEM files with ssl.certificate.location and ssl.key.location"
                        ),
                    ),
                }
            }
            // Java's inline PEM stores.
            "ssl.truststore.certificates"
            | "ssl.keystore.certificate.chain"
            | "ssl.keystore.key" => {
                let librdkafka_key = match key {
                    "ssl.truststore.certificates" => "ssl.ca.pem",
                    "ssl.keystore.certificate.chain" => "ssl.certificate.pem",
                    _ => "ssl.key.pem",
                };
                settings
                    .properties
                    .insert(librdkafka_key.to_string(), value.to_string());
                settings
                    .notes
                    .push(format!("{key} translated into {librdkafka_key}"));
            }
            "ssl.endpoint.identification.algorithm" => {
                let algorithm = if value.is_empty() { "none" } else { value };
                settings
                    .properties
                    .insert(key.to_string(), algorithm.to_string());
            }
            "max.request.size" => {
                settings
                    .properties
                    .insert("message.max.bytes".to_string(), value.to_string());
                settings
                    .notes
                    .push("max.request.size translated into message.max.bytes".to_string());
            }
            "buffer.memory" => match value.parse::<u64>() {
                Ok(bytes) => {
                    settings.properties.insert(
                        "queue.buffering.max.kbytes".to_string(),
                        bytes.div_ceil(1024).max(1).to_string(),
                    );
                    settings.notes.push(
                        "buffer.memory translated into queue.buffering.max.kbytes".to_string(),
                    );
                }
                Err(_) => error(key, "expected a number of bytes".to_string()),
            },
            _ => match DROPPED.iter().find(|(dropped, _)| *dropped == key) {
                Some((_, why)) => settings.notes.push(format!("{key} dropped: {why}")),
                None => {
                    settings
                        .properties
                        .insert(key.to_string(), value.to_string());
                }
            },
        }
    }
    // Whatever is left must be a librdkafka property with a valid value.
    for (key, value) in &settings.properties {
        if let Err(message) = check_librdkafka_property(key, value) {
            errors.push(PropertyError {
                key: key.clone(),
                message,
            });
        }
    }
    if role == ClientRole::Producer && errors.is_empty() {
        errors.extend(check_writer_producer(&settings.properties));
    }
    if errors.is_empty() {
        Ok(settings)
    } else {
        Err(errors)
    }
}

/// Producer settings the writers cannot run with, each with the fix.
///
/// A writer produces with an idempotent producer and `acks=all`
/// ([`PRODUCER_REQUIRED`]), which is what keeps each partition's order and writes
/// no duplicate when a produce is retried; the writer sets them whatever the
/// operator's properties say, so a MirrorMaker 1 producer file with `acks=1` is
/// refused here rather than silently not doing what it says. Known keys get a
/// message of their own; librdkafka then checks the combination the writer
/// would build.
pub fn check_writer_producer(properties: &BTreeMap<String, String>) -> Vec<PropertyError> {
    let mut errors = Vec::new();
    let refuse = |errors: &mut Vec<PropertyError>, key: &str, message: String| {
        errors.push(PropertyError {
            key: key.to_string(),
            message,
        })
    };
    for (key, value) in properties {
        let value = value.trim();
        match key.as_str() {
            "acks" | "request.required.acks" if !matches!(value, "all" | "-1") => refuse(
                &mut errors,
                key,
                format!(
                    "{key}={value} cannot work: kmirror's writers produce with an idempotent producer, which needs acks=all (a record counts as written once every in-sync replica has it); set {key}=all or remove the line"
                ),
            ),
            "enable.idempotence" if value.eq_ignore_ascii_case("false") => refuse(
                &mut errors,
                key,
                "enable.idempotence=false cannot work: kmirror's writers need the idempotent producer to keep each partition's order and write no duplicate when a produce is retried; remove the line".to_string(),
            ),
            "max.in.flight.requests.per.connection" | "max.in.flight"
                if value.parse::<u32>().is_ok_and(|requests| requests > 5) =>
            {
                refuse(
                    &mut errors,
                    key,
                    format!("{key}={value} cannot work: the idempotent producer allows at most 5 requests in flight; set {key}=5 or remove the line"),
                )
            }
            "retries" | "message.send.max.retries" if value == "0" => refuse(
                &mut errors,
                key,
                format!("{key}=0 cannot work: the idempotent producer needs retries; remove the line"),
            ),
            "transactional.id" => refuse(
                &mut errors,
                key,
                "kmirror's writers do not produce in transactions (each batch is acknowledged once Kafka has it, and progress is checkpointed in etcd): remove the line".to_string(),
            ),
            _ => {}
        }
    }
    if !errors.is_empty() {
        return errors;
    }
    let mut config = rdkafka::ClientConfig::new();
    for (key, value) in PRODUCER_DEFAULTS {
        config.set(*key, *value);
    }
    for (key, value) in properties {
        config.set(key, value);
    }
    for (key, value) in PRODUCER_REQUIRED {
        config.set(*key, *value);
    }
    // Only the settings are checked: no broker is contacted, nothing is logged.
    config.set("log_level", "0");
    config.remove("bootstrap.servers");
    if let Err(error) = config.create::<rdkafka::producer::BaseProducer>() {
        let message = match error {
            rdkafka::error::KafkaError::ClientCreation(description) => description,
            other => other.to_string(),
        };
        refuse(
            &mut errors,
            "(producer settings)",
            format!(
                "kmirror's writers cannot create their producer with these settings: {message}"
            ),
        );
    }
    errors
}

/// Asks librdkafka whether it knows `key` and accepts `value`.
pub fn check_librdkafka_property(key: &str, value: &str) -> Result<(), String> {
    let mut config = rdkafka::ClientConfig::new();
    config.set(key, value);
    match config.create_native_config() {
        Ok(_) => Ok(()),
        Err(rdkafka::error::KafkaError::ClientConfig(_, description, _, _)) => {
            if description.contains("No such configuration property") {
                Err("unknown property: neither a librdkafka property nor a Java client property kmirror translates".to_string())
            } else if is_secret_property(key) {
                Err("invalid value".to_string())
            } else {
                Err(description)
            }
        }
        Err(other) => Err(other.to_string()),
    }
}

/// `sasl.username`/`sasl.password` (PLAIN, SCRAM) or the Kerberos keytab and
/// principal out of a JAAS login module line.
fn jaas_credentials(
    jaas: &str,
    mechanism_opt: Option<&str>,
) -> Result<Vec<(&'static str, String)>, String> {
    let module = jaas.split_whitespace().next().unwrap_or_default();
    let options = jaas_options(jaas);
    let option = |name: &str| options.get(name).cloned();
    let mechanism = mechanism_opt.map(str::trim).unwrap_or_default();
    if module.ends_with("PlainLoginModule") || module.ends_with("ScramLoginModule") {
        let (Some(username), Some(password)) = (option("username"), option("password")) else {
            return Err(format!(
                "{module} needs username=\"...\" and password=\"...\""
            ));
        };
        let mut credentials = vec![("sasl.username", username), ("sasl.password", password)];
        if module.ends_with("PlainLoginModule") && mechanism.is_empty() {
            credentials.push(("sasl.mechanism", "PLAIN".to_string()));
        }
        if module.ends_with("ScramLoginModule") && !mechanism.starts_with("SCRAM-SHA-") {
            return Err(
                "ScramLoginModule needs sasl.mechanism=SCRAM-SHA-256 or SCRAM-SHA-512".to_string(),
            );
        }
        Ok(credentials)
    } else if module.ends_with("Krb5LoginModule") {
        let mut credentials = Vec::new();
        if let Some(keytab) = option("keyTab") {
            credentials.push(("sasl.kerberos.keytab", keytab));
        }
        if let Some(principal) = option("principal") {
            credentials.push(("sasl.kerberos.principal", principal));
        }
        Ok(credentials)
    } else if module.ends_with("OAuthBearerLoginModule") {
        Err("OAUTHBEARER logins cannot be translated: set librdkafka's sasl.oauthbearer.method=oidc and sasl.oauthbearer.* properties instead".to_string())
    } else {
        Err(format!(
            "login module {module:?} cannot be translated: use PlainLoginModule, ScramLoginModule or Krb5LoginModule, or librdkafka's sasl.* properties"
        ))
    }
}

/// `name="value"` and `name=value` options of a JAAS line.
fn jaas_options(jaas: &str) -> BTreeMap<String, String> {
    let mut options = BTreeMap::new();
    let body = jaas.trim().trim_end_matches(';');
    let mut rest = body
        .split_once(char::is_whitespace)
        .map(|(_, rest)| rest)
        .unwrap_or("");
    while let Some(equals) = rest.find('=') {
        let name = rest[..equals]
            .split_whitespace()
            .last()
            .unwrap_or_default()
            .to_string();
        let after = rest[equals + 1..].trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (quoted[..end].to_string(), &quoted[end + 1..]),
                None => (quoted.to_string(), ""),
            }
        } else {
            let end = after.find(char::is_whitespace).unwrap_or(after.len());
            (after[..end].to_string(), &after[end..])
        };
        options.insert(name, value);
        rest = remaining;
    }
    options
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(text: &str) -> Vec<(String, String)> {
        parse_properties(text).unwrap()
    }

    #[test]
    fn java_properties_syntax_is_read_like_java() {
        let parsed = entries(
            "# comment\n! other comment\nbootstrap.servers = a:9092,\\\n    b:9092\ngroup.id:mirror\nclient.id mirror-1\nkey\\=with\\:seps=x\\ty\n",
        );
        assert_eq!(
            parsed,
            vec![
                ("bootstrap.servers".to_string(), "a:9092,b:9092".to_string()),
                ("group.id".to_string(), "mirror".to_string()),
                ("client.id".to_string(), "mirror-1".to_string()),
                ("key=with:seps".to_string(), "x\ty".to_string()),
            ]
        );
    }

    #[test]
    fn utf8_values_and_unicode_escapes_are_kept() {
        assert_eq!(
            entries("sasl.password=p\u{e4}ss\\u00e9\nclient.id=caf\u{e9}\n"),
            vec![
                ("sasl.password".to_string(), "p\u{e4}ss\u{e9}".to_string()),
                ("client.id".to_string(), "caf\u{e9}".to_string()),
            ]
        );
    }

    #[test]
    fn librdkafka_keys_pass_through_and_bootstrap_and_group_are_taken_out() {
        let settings = translate(
            &entries("bootstrap.servers=h:9092\ngroup.id=g\nclient.id=c\nfetch.min.bytes=1\n"),
            ClientRole::Consumer,
        )
        .unwrap();
        assert_eq!(settings.bootstrap_opt.as_deref(), Some("h:9092"));
        assert_eq!(settings.group_id_opt.as_deref(), Some("g"));
        assert_eq!(
            settings.properties,
            BTreeMap::from([
                ("client.id".to_string(), "c".to_string()),
                ("fetch.min.bytes".to_string(), "1".to_string()),
            ])
        );
    }

    #[test]
    fn zookeeper_connect_alone_is_an_error_that_says_what_to_use() {
        let errors = translate(
            &entries("zookeeper.connect=zk:2181\ngroup.id=g\n"),
            ClientRole::Consumer,
        )
        .unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].key, "zookeeper.connect");
        assert!(
            errors[0].message.contains("bootstrap.servers"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn jaas_plain_and_scram_become_username_and_password() {
        let settings = translate(
            &entries(
                "bootstrap.servers=h:9093\nsecurity.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\nsasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"mirror\" password=\"s3cret\";\n",
            ),
            ClientRole::Producer,
        )
        .unwrap();
        assert_eq!(settings.properties["sasl.username"], "mirror");
        assert_eq!(settings.properties["sasl.password"], "s3cret");
        let plain = translate(
            &entries("sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username=u password=p;\n"),
            ClientRole::Consumer,
        )
        .unwrap();
        assert_eq!(plain.properties["sasl.mechanism"], "PLAIN");
        assert_eq!(plain.properties["sasl.password"], "p");
    }

    #[test]
    fn jks_stores_are_errors_that_point_to_pem() {
        let errors = translate(
            &entries("ssl.truststore.location=/etc/kafka/truststore.jks\nssl.truststore.password=changeit\n"),
            ClientRole::Consumer,
        )
        .unwrap_err();
        assert_eq!(errors[0].key, "ssl.truststore.location");
        assert!(errors[0].message.contains("ssl.ca.location"));
        assert!(!errors[0].message.contains("changeit"));
        let pem = translate(
            &entries("ssl.truststore.type=PEM\nssl.truststore.location=/etc/ca.pem\n"),
            ClientRole::Consumer,
        )
        .unwrap();
        assert_eq!(pem.properties["ssl.ca.location"], "/etc/ca.pem");
    }

    #[test]
    fn pem_stores_become_librdkafka_locations() {
        let settings = translate(
            &entries("security.protocol=SSL\nssl.truststore.type=PEM\nssl.truststore.location=/s/ca.pem\nssl.keystore.type=PEM\nssl.keystore.location=/s/kmirror-keystore.pem\n"),
            ClientRole::Consumer,
        )
        .unwrap();
        assert_eq!(settings.properties["ssl.ca.location"], "/s/ca.pem");
        assert_eq!(
            settings.properties["ssl.certificate.location"],
            "/s/kmirror-keystore.pem"
        );
        assert_eq!(
            settings.properties["ssl.key.location"],
            "/s/kmirror-keystore.pem"
        );
        let separate_key = translate(
            &entries("ssl.keystore.type=PEM\nssl.keystore.location=/s/cert.pem\nssl.key.location=/s/key.pem\nssl.key.password=kp\n"),
            ClientRole::Consumer,
        )
        .unwrap();
        assert_eq!(separate_key.properties["ssl.key.location"], "/s/key.pem");
        assert_eq!(separate_key.properties["ssl.key.password"], "kp");
    }

    #[test]
    fn sasl_ssl_scram_sha_256_and_plain_files_translate() {
        for (mechanism, module) in [
            (
                "SCRAM-SHA-256",
                "org.apache.kafka.common.security.scram.ScramLoginModule",
            ),
            (
                "PLAIN",
                "org.apache.kafka.common.security.plain.PlainLoginModule",
            ),
        ] {
            let settings = translate(
                &entries(&format!("bootstrap.servers=127.0.0.1:9093\nsecurity.protocol=SASL_SSL\nsasl.mechanism={mechanism}\nsasl.jaas.config={module} required username=\"kmirror\" password=\"pw\";\nssl.truststore.type=PEM\nssl.truststore.location=/s/ca.pem\ngroup.id=g\n")),
                ClientRole::Consumer,
            )
            .unwrap();
            assert_eq!(settings.properties["sasl.mechanism"], mechanism);
            assert_eq!(settings.properties["sasl.username"], "kmirror");
            assert_eq!(settings.properties["sasl.password"], "pw");
            assert_eq!(settings.properties["security.protocol"], "SASL_SSL");
        }
    }

    #[test]
    fn unknown_keys_are_errors_and_secret_values_never_shown() {
        let errors = translate(
            &entries("no.such.thing=1\nsasl.password=\n"),
            ClientRole::Consumer,
        )
        .unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].key, "no.such.thing");
        assert!(errors[0].message.contains("unknown property"));
    }

    #[test]
    fn producer_settings_the_writers_cannot_run_with_are_refused_with_the_fix() {
        let errors = translate(
            &entries("bootstrap.servers=h:9092\nacks=1\ncompression.type=lz4\n"),
            ClientRole::Producer,
        )
        .unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].key, "acks");
        assert!(errors[0].message.contains("set acks=all"), "{}", errors[0]);
        let errors = translate(&entries("acks=0\n"), ClientRole::Producer).unwrap_err();
        assert_eq!(errors[0].key, "acks");
        let errors = translate(
            &entries("enable.idempotence=false\nacks=1\n"),
            ClientRole::Producer,
        )
        .unwrap_err();
        let keys: Vec<&str> = errors.iter().map(|error| error.key.as_str()).collect();
        assert_eq!(keys, vec!["acks", "enable.idempotence"]);
        let errors = translate(
            &entries("max.in.flight.requests.per.connection=10\ntransactional.id=mm\n"),
            ClientRole::Producer,
        )
        .unwrap_err();
        let keys: Vec<&str> = errors.iter().map(|error| error.key.as_str()).collect();
        assert_eq!(
            keys,
            vec!["max.in.flight.requests.per.connection", "transactional.id"]
        );
        // librdkafka checks what the writer would build from the rest.
        let errors =
            translate(&entries("queuing.strategy=lifo\n"), ClientRole::Producer).unwrap_err();
        assert!(
            errors[0].message.contains("queuing.strategy"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn producer_settings_the_writers_run_with_are_accepted() {
        let settings = translate(
            &entries("bootstrap.servers=h:9092\nacks=all\nenable.idempotence=true\nretries=10\nmax.in.flight.requests.per.connection=5\nlinger.ms=20\n"),
            ClientRole::Producer,
        )
        .unwrap();
        assert_eq!(settings.properties["acks"], "all");
        assert!(translate(&entries("acks=-1\n"), ClientRole::Producer).is_ok());
        // A consumer file's acks is not the writer's business.
        assert!(translate(&entries("acks=1\n"), ClientRole::Consumer).is_ok());
    }

    #[test]
    fn java_only_settings_are_dropped_with_a_reason() {
        let settings = translate(
            &entries("partition.assignment.strategy=org.apache.kafka.clients.consumer.RangeAssignor\nkey.deserializer=org.apache.kafka.common.serialization.ByteArrayDeserializer\nauto.offset.reset=latest\nmax.request.size=2000000\n"),
            ClientRole::Consumer,
        )
        .unwrap();
        assert_eq!(settings.start_opt.as_deref(), Some("latest"));
        assert_eq!(settings.properties["message.max.bytes"], "2000000");
        assert!(settings
            .notes
            .iter()
            .any(|note| note.starts_with("partition.assignment.strategy dropped")));
        let errors = translate(
            &entries("value.deserializer=com.example.AvroDeserializer\n"),
            ClientRole::Consumer,
        )
        .unwrap_err();
        assert_eq!(errors[0].key, "value.deserializer");
    }

    mod generated {
        use proptest::prelude::*;

        use super::*;

        /// A secret no generated line can hold.
        const SECRET: &str = "Zq9-never-shown";

        /// Text with what Java's reader treats specially: separators, escapes,
        /// continuations, comments.
        fn properties_text() -> impl Strategy<Value = String> {
            prop::collection::vec(
                prop_oneof![
                    "\\PC{0,12}",
                    Just("\\".to_string()),
                    Just("\\u".to_string()),
                    Just("\\u00".to_string()),
                    Just("\\uzzzz".to_string()),
                    Just("=".to_string()),
                    Just(":".to_string()),
                    Just("\n".to_string()),
                    Just("\r\n".to_string()),
                    Just("#".to_string()),
                    Just(" ".to_string()),
                ],
                0..24,
            )
            .prop_map(|parts| parts.concat())
        }

        /// Lines of keys a client file may have, with values that may be wrong.
        fn client_lines() -> impl Strategy<Value = Vec<(String, String)>> {
            let key = prop_oneof![
                Just("bootstrap.servers"),
                Just("group.id"),
                Just("zookeeper.connect"),
                Just("auto.offset.reset"),
                Just("key.deserializer"),
                Just("interceptor.classes"),
                Just("sasl.mechanism"),
                Just("sasl.jaas.config"),
                Just("ssl.truststore.location"),
                Just("ssl.truststore.type"),
                Just("ssl.keystore.location"),
                Just("ssl.keystore.type"),
                Just("ssl.endpoint.identification.algorithm"),
                Just("max.request.size"),
                Just("buffer.memory"),
                Just("fetch.min.bytes"),
                Just("security.protocol"),
                Just("no.such.thing"),
            ];
            let value = prop_oneof![
                Just("".to_string()),
                Just("PEM".to_string()),
                Just("earliest".to_string()),
                Just("org.apache.kafka.common.security.plain.PlainLoginModule required username=\"u\" password=\"p".to_string()),
                Just("org.apache.kafka.common.security.scram.ScramLoginModule required".to_string()),
                "[ -~]{0,16}",
            ];
            prop::collection::vec((key.prop_map(str::to_string), value), 0..6)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn arbitrary_text_never_panics_the_java_properties_reader(text in properties_text()) {
                match parse_properties(&text) {
                    Ok(entries) => {
                        if let Err(errors) = translate(&entries, ClientRole::Consumer) {
                            prop_assert!(!errors.is_empty());
                            prop_assert!(errors.iter().all(|error| !error.message.is_empty()));
                        }
                    }
                    Err(message) => prop_assert!(!message.is_empty()),
                }
            }

            #[test]
            fn wrong_client_settings_are_errors_naming_the_key_never_the_secret(
                lines in client_lines(),
            ) {
                let mut entries = lines;
                entries.push(("sasl.password".to_string(), SECRET.to_string()));
                let keys: Vec<&str> = entries.iter().map(|(key, _)| key.as_str()).collect();
                if let Err(errors) = translate(&entries, ClientRole::Any) {
                    for error in &errors {
                        prop_assert!(!error.to_string().contains(SECRET), "{}", error);
                        // The key named is the file's, or the librdkafka key it became.
                        prop_assert!(
                            keys.contains(&error.key.as_str())
                                || error.key.starts_with("ssl.")
                                || error.key.starts_with("sasl.")
                                || error.key == "message.max.bytes"
                                || error.key == "queue.buffering.max.kbytes",
                            "{}", error
                        );
                    }
                }
            }
        }

        proptest! {
            // Each case creates a librdkafka producer to check the settings.
            #![proptest_config(ProptestConfig::with_cases(24))]

            #[test]
            fn wrong_producer_settings_are_refused_with_the_key(
                key in prop_oneof![
                    Just("acks"),
                    Just("enable.idempotence"),
                    Just("max.in.flight.requests.per.connection"),
                    Just("retries"),
                    Just("transactional.id"),
                    Just("linger.ms"),
                ],
                value in prop_oneof![Just("0".to_string()), Just("false".to_string()), "[ -~]{0,8}"],
            ) {
                let entries = vec![(key.to_string(), value)];
                if let Err(errors) = translate(&entries, ClientRole::Producer) {
                    prop_assert!(errors
                        .iter()
                        .all(|error| error.key == key || error.key == "(producer settings)"));
                }
            }
        }
    }
}
