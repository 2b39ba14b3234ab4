//! The local stack the tests run against: etcd and two Kafka clusters, started by
//! `deploy/local/stack up` once per test process, and the fleet binaries.
//!
//! Ports follow the stack script's environment overrides: `KMIRROR_ETCD_PORT`
//! (2379), `KMIRROR_SOURCE_PORT` (19092), `KMIRROR_DEST_PORT` (29092). Set
//! `KMIRROR_E2E_SKIP_STACK_UP=1` to use servers started some other way;
//! `KMIRROR_BIN_DIR` points at the fleet binaries when they are not in the target
//! directory the tests were built into.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use kmirror_test_support::local_stack::{
    port_from_env, DEFAULT_DEST_PORT, DEFAULT_ETCD_PORT, DEFAULT_SOURCE_PORT, DEST_PORT_VARIABLE,
    ETCD_PORT_VARIABLE, SOURCE_PORT_VARIABLE,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

use crate::kafka::Cluster;

/// How long the servers may take to answer once `stack up` returned.
const SERVER_ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// The fleet's binaries, as `cargo build --workspace --bins` leaves them.
pub const COORDINATOR_BINARY: &str = "kmirror-coordinator";
pub const FETCHER_BINARY: &str = "kmirror-fetcher";
pub const WRITER_BINARY: &str = "kmirror-writer";
pub const CTL_BINARY: &str = "kmirrorctl";

/// Addresses of the running local stack.
#[derive(Debug, Clone)]
pub struct Stack {
    pub workspace_dir: PathBuf,
    pub etcd_endpoint: String,
    pub source_bootstrap: String,
    pub dest_bootstrap: String,
    /// Where the fleet binaries are (`target/debug`).
    pub bin_dir: PathBuf,
    /// Where fleet members write their logs, one folder per fleet.
    pub logs_dir: PathBuf,
}

static STACK: OnceLock<Result<Stack, String>> = OnceLock::new();

/// The local stack, started on first use (once per test process) and checked to
/// answer. Panics with what is wrong when it cannot be had.
///
/// Blocks while the stack starts: call it at the start of a test.
pub fn stack() -> &'static Stack {
    match STACK.get_or_init(start_stack) {
        Ok(stack) => stack,
        Err(message) => panic!("the local stack is not usable: {message}"),
    }
}

impl Stack {
    /// The secrets key file every test fleet's members get
    /// (`--secrets-key-file`), made once in the logs folder.
    pub fn secrets_key_file(&self) -> PathBuf {
        let path = self.logs_dir.join("fleet-secrets.key");
        kmirror_common::secrets::SecretsKey::create_if_missing(&path)
            .unwrap_or_else(|error| panic!("cannot make the test fleets' secrets key: {error}"));
        path
    }

    /// Bootstrap address of a Kafka cluster.
    pub fn bootstrap(&self, cluster: Cluster) -> &str {
        match cluster {
            Cluster::Source => &self.source_bootstrap,
            Cluster::Dest => &self.dest_bootstrap,
            Cluster::Custom(bootstrap) => bootstrap,
            Cluster::Secured(secured) => &secured.bootstrap,
        }
    }

    /// Path of a fleet binary, failing with how to build it when it is missing.
    pub fn binary(&self, name: &str) -> PathBuf {
        let path = self.bin_dir.join(name);
        assert!(
            path.is_file(),
            "fleet binary {} is missing: build the workspace first with `cargo build --workspace --bins`",
            path.display()
        );
        path
    }
}

fn start_stack() -> Result<Stack, String> {
    let workspace_dir = workspace_dir();
    let etcd_port = port_from_env(ETCD_PORT_VARIABLE, DEFAULT_ETCD_PORT)?;
    let source_port = port_from_env(SOURCE_PORT_VARIABLE, DEFAULT_SOURCE_PORT)?;
    let dest_port = port_from_env(DEST_PORT_VARIABLE, DEFAULT_DEST_PORT)?;
    let bin_dir = bin_dir();
    let logs_dir = logs_dir();
    let stack = Stack {
        etcd_endpoint: format!("http://127.0.0.1:{etcd_port}"),
        source_bootstrap: format!("127.0.0.1:{source_port}"),
        dest_bootstrap: format!("127.0.0.1:{dest_port}"),
        bin_dir,
        logs_dir,
        workspace_dir,
    };

    if std::env::var_os("KMIRROR_E2E_SKIP_STACK_UP").is_none() {
        run_stack_up(&stack.workspace_dir)?;
    }
    check_etcd_answers(etcd_port)?;
    check_kafka_answers("source", &stack.source_bootstrap)?;
    check_kafka_answers("destination", &stack.dest_bootstrap)?;
    Ok(stack)
}

/// Where fleet members log, one folder per fleet: `KMIRROR_E2E_LOG_DIR`, or
/// `e2e-logs` beside the fleet binaries' `target/debug`.
pub fn logs_dir() -> PathBuf {
    std::env::var_os("KMIRROR_E2E_LOG_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            bin_dir()
                .parent()
                .map(|target_dir| target_dir.join("e2e-logs"))
                .unwrap_or_else(|| workspace_dir().join("target/e2e-logs"))
        })
}

/// The workspace root: this crate lives in `<workspace>/tests`.
pub fn workspace_dir() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// `target/debug` of the build these tests come from: test executables live in
/// `target/debug/deps`, the fleet binaries one level up. This follows
/// `CARGO_TARGET_DIR` without reading it.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KMIRROR_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let from_test_executable = std::env::current_exe().ok().and_then(|executable| {
        let deps_dir = executable.parent()?;
        if deps_dir.file_name()? == "deps" {
            Some(deps_dir.parent()?.to_path_buf())
        } else {
            None
        }
    });
    from_test_executable.unwrap_or_else(|| workspace_dir().join("target/debug"))
}

fn run_stack_up(workspace_dir: &Path) -> Result<(), String> {
    let script = workspace_dir.join("deploy/local/stack");
    if !script.is_file() {
        return Err(format!(
            "{} is missing: it starts etcd and the two Kafka clusters",
            script.display()
        ));
    }
    eprintln!("starting the local stack with {} up", script.display());
    let output = Command::new(&script)
        .arg("up")
        .current_dir(workspace_dir)
        .output()
        .map_err(|error| format!("cannot run {}: {error}", script.display()))?;
    if !output.status.success() {
        return Err(format!(
            "`{} up` failed ({}):\n{}{}",
            script.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(())
}

/// etcd answers `GET /health` on its client port with `{"health":"true",...}`.
fn check_etcd_answers(port: u16) -> Result<(), String> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + SERVER_ANSWER_TIMEOUT;
    loop {
        let last_error = match etcd_health(address) {
            Ok(body) if body.contains(r#""health":"true""#) => return Ok(()),
            Ok(body) => format!("unhealthy: {body}"),
            Err(error) => error.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(format!(
                "etcd at {address} does not answer after {SERVER_ANSWER_TIMEOUT:?}: {last_error} \
                 (start it with deploy/local/stack up; its log is under the stack's state folder)"
            ));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn etcd_health(address: SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

/// A Kafka cluster answers when it returns metadata with at least one broker.
fn check_kafka_answers(which: &str, bootstrap: &str) -> Result<(), String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("allow.auto.create.topics", "false")
        .create()
        .map_err(|error| format!("cannot create a Kafka client for {bootstrap}: {error}"))?;
    let deadline = Instant::now() + SERVER_ANSWER_TIMEOUT;
    loop {
        let last_error = match consumer.fetch_metadata(None, Duration::from_secs(5)) {
            Ok(metadata) if !metadata.brokers().is_empty() => return Ok(()),
            Ok(_) => "no broker in the metadata".to_string(),
            Err(error) => error.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(format!(
                "the {which} Kafka cluster at {bootstrap} does not answer after \
                 {SERVER_ANSWER_TIMEOUT:?}: {last_error} (start it with deploy/local/stack up)"
            ));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
