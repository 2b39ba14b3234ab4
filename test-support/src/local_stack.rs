//! Addresses of the local stack (`deploy/local/stack up`): etcd and the source
//! and destination Kafka clusters on 127.0.0.1, their ports following the stack
//! script's overrides `KMIRROR_ETCD_PORT` (2379), `KMIRROR_SOURCE_PORT` (19092)
//! and `KMIRROR_DEST_PORT` (29092).

pub const ETCD_PORT_VARIABLE: &str = "KMIRROR_ETCD_PORT";
pub const SOURCE_PORT_VARIABLE: &str = "KMIRROR_SOURCE_PORT";
pub const DEST_PORT_VARIABLE: &str = "KMIRROR_DEST_PORT";
pub const DEFAULT_ETCD_PORT: u16 = 2379;
pub const DEFAULT_SOURCE_PORT: u16 = 19092;
pub const DEFAULT_DEST_PORT: u16 = 29092;

/// The port `variable` names, or `default` when it is not set; Err says what is
/// wrong with a value that is not a port.
pub fn port_from_env(variable: &str, default: u16) -> Result<u16, String> {
    match std::env::var(variable) {
        Ok(value) => value
            .parse()
            .map_err(|error| format!("{variable}={value:?} is not a port: {error}")),
        Err(_) => Ok(default),
    }
}

fn port(variable: &str, default: u16) -> u16 {
    port_from_env(variable, default).unwrap_or_else(|message| panic!("{message}"))
}

/// The local etcd's endpoint, `http://127.0.0.1:PORT`.
pub fn etcd_endpoint() -> String {
    format!(
        "http://127.0.0.1:{}",
        port(ETCD_PORT_VARIABLE, DEFAULT_ETCD_PORT)
    )
}

/// The source Kafka cluster's bootstrap address.
pub fn source_bootstrap() -> String {
    format!(
        "127.0.0.1:{}",
        port(SOURCE_PORT_VARIABLE, DEFAULT_SOURCE_PORT)
    )
}

/// The destination Kafka cluster's bootstrap address.
pub fn dest_bootstrap() -> String {
    format!("127.0.0.1:{}", port(DEST_PORT_VARIABLE, DEFAULT_DEST_PORT))
}
