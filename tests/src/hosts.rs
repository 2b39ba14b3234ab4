//! A whole kmirror deployment on simulated hosts ([`crate::netns`]): etcd, a
//! source and a destination Kafka broker (KRaft, from the local stack's jars), two
//! coordinators, three fetchers and three writers, each on a host of its own and
//! advertising that host's address, plus a client host from which every producer,
//! consumer, `kmirrorctl` and `etcdctl` call runs.
//!
//! Records carry their sequence number: partition `p`'s `n`-th record has the value
//! `p:n`, so [`check_sequences`] tells from the destination alone what was lost,
//! reordered or written twice.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context as _, Result};
use serde_json::Value;

use crate::ctl_output::CtlOutput;
use crate::host_producer::produce_on;
pub use crate::host_producer::{check_sequences, parse_sequences, Producer, SequenceCheck};
use crate::netns::Network;
use crate::pki::{TestPki, TlsFiles};
use crate::stack;
use crate::status::{FlowStatusView, StatusView};
use kmirror_common::tls::PeerRole;

pub const CLIENT: &str = "client";
pub const ETCD: &str = "etcd";
pub const SOURCE: &str = "source";
pub const DEST: &str = "dest";
pub const COORDINATORS: [&str; 2] = ["coordinator-0", "coordinator-1"];
pub const FETCHERS: [&str; 3] = ["fetcher-0", "fetcher-1", "fetcher-2"];
pub const WRITERS: [&str; 3] = ["writer-0", "writer-1", "writer-2"];

pub const LEASE_TTL: Duration = Duration::from_secs(4);
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(200);
/// The writers' `message.timeout.ms`: how long a record waits for a destination
/// that does not answer before the writer gives its partitions away.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
const KAFKA_PORT: u16 = 9092;
const CONTROLLER_PORT: u16 = 9093;
const ETCD_PORT: u16 = 2379;
const ETCD_PEER_PORT: u16 = 2380;
const MEMBER_PORT: u16 = 7070;
const METRICS_PORT: u16 = 9100;
const SERVERS_READY_TIMEOUT: Duration = Duration::from_secs(120);
const FLEET_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Every host of a deployment, the client first.
fn host_names() -> Vec<&'static str> {
    let mut names = vec![CLIENT, ETCD, SOURCE, DEST];
    names.extend(COORDINATORS);
    names.extend(FETCHERS);
    names.extend(WRITERS);
    names
}

/// A running deployment. Dropping it stops every process and removes the hosts.
pub struct Deployment {
    network: Network,
    pub fleet: String,
    pub topic: String,
    pub flow: String,
    pub partitions: i32,
    log_dir: PathBuf,
    bin_dir: PathBuf,
    classpath: String,
    pub etcd_endpoint: String,
    pub source_bootstrap: String,
    pub dest_bootstrap: String,
    /// Admin addresses `kmirrorctl` tries, in order (a test puts a coordinator
    /// that can still reach etcd first).
    coordinator_list: std::sync::Mutex<String>,
    /// The fleet's CA; every member and kmirrorctl run with mutual TLS.
    pki: TestPki,
    /// kmirrorctl's (admin) certificate.
    admin_tls: TlsFiles,
}

impl Deployment {
    /// Starts every server and member on its host, then a flow mirroring one
    /// topic of `partitions` partitions, and waits until the fleet is ready.
    pub async fn start(name: &str, partitions: i32) -> Result<Deployment> {
        let fleet = crate::unique_name(name);
        let log_dir = stack::logs_dir().join(&fleet);
        std::fs::create_dir_all(&log_dir)
            .with_context(|| format!("cannot create {}", log_dir.display()))?;
        eprintln!(
            "multi-host deployment {fleet} logs to {}",
            log_dir.display()
        );
        let classpath = kafka_classpath(&log_dir)?;
        let network = Network::create(&host_names())?;
        let address = |host: &str| network.host(host).address;
        let pki = TestPki::new(&fleet, &log_dir.join("tls"));
        let admin_tls = pki.issue(PeerRole::Admin, "e2e-admin");
        let deployment = Deployment {
            pki,
            admin_tls,
            etcd_endpoint: format!("http://{}:{ETCD_PORT}", address(ETCD)),
            source_bootstrap: format!("{}:{KAFKA_PORT}", address(SOURCE)),
            dest_bootstrap: format!("{}:{KAFKA_PORT}", address(DEST)),
            coordinator_list: std::sync::Mutex::new(
                COORDINATORS
                    .iter()
                    .map(|host| format!("http://{}:{MEMBER_PORT}", address(host)))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            topic: crate::unique_name(name),
            flow: crate::unique_name(&format!("{name}-flow")),
            partitions,
            fleet,
            network,
            log_dir,
            bin_dir: stack::bin_dir(),
            classpath,
        };
        deployment.start_servers().await?;
        deployment.wait_fleet_ready().await?;
        deployment.create_flow().await?;
        Ok(deployment)
    }

    pub fn network(&self) -> &Network {
        &self.network
    }

    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// Starts etcd, the brokers and the fleet's members; waits until etcd and
    /// the brokers answer.
    async fn start_servers(&self) -> Result<()> {
        let log4j = self.log_dir.join("log4j2-broker.properties");
        std::fs::write(&log4j, BROKER_LOG4J)?;
        let etcd_url = |port: u16| format!("http://{}:{port}", self.network.host(ETCD).address);
        let mut etcd = self.network.command(ETCD, Path::new("etcd"));
        etcd.args(["--name", "etcd", "--data-dir"])
            .arg(self.log_dir.join("etcd-data"))
            .args(["--listen-client-urls", &etcd_url(ETCD_PORT)])
            .args(["--advertise-client-urls", &etcd_url(ETCD_PORT)])
            .args(["--listen-peer-urls", &etcd_url(ETCD_PEER_PORT)])
            .args(["--initial-advertise-peer-urls", &etcd_url(ETCD_PEER_PORT)])
            .args([
                "--initial-cluster",
                &format!("etcd={}", etcd_url(ETCD_PEER_PORT)),
            ])
            .args(["--initial-cluster-state", "new"])
            .args(["--logger", "zap", "--log-outputs", "stderr"]);
        self.network
            .spawn(ETCD, ETCD, etcd, &self.log_dir.join("etcd.log"))?;
        let (source_format, dest_format) =
            tokio::join!(self.format_kafka(SOURCE), self.format_kafka(DEST));
        source_format?;
        dest_format?;
        for broker in [SOURCE, DEST] {
            let mut java = self.network.command(broker, &java());
            java.args(["-Xms256m", "-Xmx512m", "-XX:+UseG1GC"])
                .arg("-Djava.awt.headless=true")
                .arg(format!("-Dlog4j2.configurationFile={}", log4j.display()))
                .arg(format!("-Dkafka.logs.dir={}", self.log_dir.display()))
                .args(["-cp", &self.classpath, "kafka.Kafka"])
                .arg(self.broker_config(broker));
            self.network.spawn(
                broker,
                broker,
                java,
                &self.log_dir.join(format!("{broker}.log")),
            )?;
        }
        self.wait_until(SERVERS_READY_TIMEOUT, "etcd to answer", || async {
            self.etcdctl(&["endpoint", "health"]).await.map(drop)
        })
        .await?;
        // Members need only etcd to start; they join while the brokers start.
        self.start_members()?;
        for (broker, bootstrap) in [
            (SOURCE, &self.source_bootstrap),
            (DEST, &self.dest_bootstrap),
        ] {
            let what = format!("the {broker} broker to answer");
            self.wait_until(SERVERS_READY_TIMEOUT, &what, || async {
                let metadata = self
                    .client(Path::new("kcat"), &["-L", "-b", bootstrap, "-m", "3"])
                    .await?;
                if metadata.contains(" 1 brokers:") {
                    Ok(())
                } else {
                    Err(format!("metadata lists no broker yet: {metadata}"))
                }
            })
            .await?;
        }
        Ok(())
    }

    /// Writes the broker's configuration (listening on its host's address only)
    /// and returns its path.
    fn broker_config(&self, broker: &str) -> PathBuf {
        let address = self.network.host(broker).address;
        let dir = self.log_dir.join(broker);
        let path = dir.join("server.properties");
        let config = format!(
            "process.roles=broker,controller\n\
             node.id=1\n\
             controller.quorum.voters=1@{address}:{CONTROLLER_PORT}\n\
             listeners=PLAINTEXT://{address}:{KAFKA_PORT},CONTROLLER://{address}:{CONTROLLER_PORT}\n\
             advertised.listeners=PLAINTEXT://{address}:{KAFKA_PORT}\n\
             inter.broker.listener.name=PLAINTEXT\n\
             controller.listener.names=CONTROLLER\n\
             listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n\
             log.dirs={}\n\
             auto.create.topics.enable=false\n\
             num.partitions=1\n\
             default.replication.factor=1\n\
             min.insync.replicas=1\n\
             offsets.topic.replication.factor=1\n\
             offsets.topic.num.partitions=4\n\
             transaction.state.log.replication.factor=1\n\
             transaction.state.log.min.isr=1\n\
             transaction.state.log.num.partitions=4\n\
             share.coordinator.state.topic.replication.factor=1\n\
             share.coordinator.state.topic.min.isr=1\n\
             group.initial.rebalance.delay.ms=0\n\
             num.network.threads=2\n\
             num.io.threads=2\n",
            dir.join("data").display()
        );
        std::fs::create_dir_all(&dir).expect("broker folder");
        std::fs::write(&path, config).expect("broker configuration");
        path
    }

    async fn format_kafka(&self, broker: &str) -> Result<()> {
        let config = self.broker_config(broker);
        let args: Vec<String> = [
            "-Xmx256m",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-cp",
            &self.classpath,
            "kafka.tools.StorageTool",
            "format",
            "--config",
            &config.display().to_string(),
            &format!("--cluster-id={}", kafka_cluster_id()),
        ]
        .map(str::to_string)
        .to_vec();
        let output = self.network.output(broker, &java(), &args).await?;
        ensure!(
            output.status.success(),
            "formatting the {broker} broker's storage failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    }

    fn start_members(&self) -> Result<()> {
        let etcd_endpoint = self.etcd_endpoint.clone();
        let member = |host: &str, binary: &str, extra: &[&str]| -> Result<()> {
            let address = self.network.host(host).address;
            let role = match binary {
                stack::COORDINATOR_BINARY => PeerRole::Coordinator,
                stack::FETCHER_BINARY => PeerRole::Fetcher,
                _ => PeerRole::Writer,
            };
            let tls = self.pki.issue(role, host);
            let mut command = self.network.command(host, &self.bin_dir.join(binary));
            command
                .args([
                    "--etcd",
                    &etcd_endpoint,
                    "--fleet",
                    &self.fleet,
                    "--id",
                    host,
                ])
                .args(["--listen", &format!("{address}:{MEMBER_PORT}")])
                .args(["--metrics-listen", &format!("{address}:{METRICS_PORT}")])
                .args(["--lease-ttl", &format!("{}ms", LEASE_TTL.as_millis())])
                .args(["--shutdown-grace", "10s"])
                .args(tls.args())
                .args(extra);
            if let Ok(filter) = std::env::var("KMIRROR_E2E_RUST_LOG") {
                command.env("RUST_LOG", filter);
            }
            self.network.spawn(
                host,
                host,
                command,
                &self.log_dir.join(format!("{host}.log")),
            )
        };
        for host in COORDINATORS {
            member(
                host,
                stack::COORDINATOR_BINARY,
                &["--refresh-interval", "1s"],
            )?;
        }
        let checkpoint_interval = format!("{}ms", CHECKPOINT_INTERVAL.as_millis());
        for host in FETCHERS {
            member(
                host,
                stack::FETCHER_BINARY,
                &[
                    "--checkpoint-interval",
                    &checkpoint_interval,
                    "--retry-backoff",
                    "1s",
                ],
            )?;
        }
        let delivery_timeout = format!("message.timeout.ms={}", DELIVERY_TIMEOUT.as_millis());
        for host in WRITERS {
            member(
                host,
                stack::WRITER_BINARY,
                &["--producer-property", &delivery_timeout],
            )?;
        }
        Ok(())
    }

    async fn wait_fleet_ready(&self) -> Result<()> {
        self.wait_until(FLEET_READY_TIMEOUT, "every member to register", || async {
            let members = self.ctl(&["members", "-o", "json"]).await;
            if !members.success() {
                return Err(format!("admin API not ready: {members}"));
            }
            for id in FETCHERS.iter().chain(&WRITERS) {
                if !members.stdout.contains(&format!("\"{id}\"")) {
                    return Err(format!("{id} is not registered: {}", members.stdout));
                }
            }
            match leader_in(&members.stdout) {
                Some(_) => Ok(()),
                None => Err(format!("no coordinator leads yet: {}", members.stdout)),
            }
        })
        .await
    }

    async fn create_flow(&self) -> Result<()> {
        let args: Vec<String> = [
            "-Xmx256m",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-cp",
            &self.classpath,
            "org.apache.kafka.tools.TopicCommand",
            "--bootstrap-server",
            &self.source_bootstrap,
            "--create",
            "--topic",
            &self.topic,
            "--partitions",
            &self.partitions.to_string(),
            "--replication-factor",
            "1",
        ]
        .map(str::to_string)
        .to_vec();
        let output = self.network.output(CLIENT, &java(), &args).await?;
        ensure!(
            output.status.success(),
            "cannot create topic {}: {}",
            self.topic,
            String::from_utf8_lossy(&output.stderr)
        );
        for (name, bootstrap) in [
            ("source", &self.source_bootstrap),
            ("dest", &self.dest_bootstrap),
        ] {
            let added = self
                .ctl(&["cluster", "add", name, "--bootstrap", bootstrap])
                .await;
            ensure!(added.success(), "{added}");
        }
        let created = self
            .ctl(&[
                "flow",
                "create",
                &self.flow,
                "--source",
                "source",
                "--dest",
                "dest",
                "--include",
                &self.topic,
            ])
            .await;
        ensure!(created.success(), "{created}");
        Ok(())
    }

    /// Makes `kmirrorctl` ask the coordinator on `host` first: one cut from etcd
    /// still accepts connections but cannot answer.
    pub fn prefer_coordinator(&self, host: &str) {
        let mut list = vec![self.coordinator_address(host)];
        list.extend(
            COORDINATORS
                .iter()
                .filter(|other| **other != host)
                .map(|other| self.coordinator_address(other)),
        );
        *self.coordinator_list.lock().expect("coordinator list") = list.join(",");
    }

    fn coordinator_address(&self, host: &str) -> String {
        format!("http://{}:{MEMBER_PORT}", self.network.host(host).address)
    }

    /// Runs `kmirrorctl --coordinator <both coordinators> ARGS` on the client host.
    pub async fn ctl(&self, args: &[&str]) -> CtlOutput {
        let coordinators = self
            .coordinator_list
            .lock()
            .expect("coordinator list")
            .clone();
        let mut full_args = vec!["--coordinator".to_string(), coordinators];
        full_args.extend(self.admin_tls.args());
        full_args.extend(args.iter().map(|arg| arg.to_string()));
        let ctl = self.bin_dir.join(stack::CTL_BINARY);
        match self.network.output(CLIENT, &ctl, &full_args).await {
            Ok(output) => CtlOutput {
                args: full_args,
                code: output.status.code(),
                stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            },
            Err(error) => CtlOutput {
                args: full_args,
                code: None,
                stdout: String::new(),
                stderr: format!("{error:#}"),
            },
        }
    }

    /// Runs `etcdctl --endpoints <etcd> ARGS` on the client host; its output.
    pub async fn etcdctl(&self, args: &[&str]) -> Result<String, String> {
        let mut full_args = vec![
            "--endpoints",
            &self.etcd_endpoint,
            "--dial-timeout",
            "2s",
            "--command-timeout",
            "5s",
        ];
        full_args.extend_from_slice(args);
        self.client(Path::new("etcdctl"), &full_args).await
    }

    /// Runs a client program on the client host; its standard output, or an error
    /// with its standard error when it failed.
    pub async fn client(&self, program: &Path, args: &[&str]) -> Result<String, String> {
        let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
        let output = self
            .network
            .output(CLIENT, program, &args)
            .await
            .map_err(|error| format!("{error:#}"))?;
        if !output.status.success() {
            return Err(format!(
                "{} {} failed ({}): {}",
                program.display(),
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// etcd's current revision.
    pub async fn etcd_revision(&self) -> Result<i64, String> {
        let output = self.etcdctl(&["get", "/", "-w", "json"]).await?;
        let json: Value = serde_json::from_str(&output).map_err(|error| error.to_string())?;
        json["header"]["revision"]
            .as_i64()
            .ok_or_else(|| format!("no revision in {output}"))
    }

    /// Every checkpoint write of the flow after etcd revision `revision`, oldest
    /// first: (topic, partition, epoch). Read with `etcdctl watch --rev`, which
    /// replays the history and is then stopped.
    pub async fn checkpoint_writes_since(&self, revision: i64) -> Result<Vec<(String, i64, i64)>> {
        let flow = kmirror_common::types::FlowName::new(&self.flow)?;
        let prefix = kmirror_common::Keys::new(&self.fleet).flow_checkpoints(&flow);
        let args: Vec<String> = [
            "5",
            "etcdctl",
            "--endpoints",
            &self.etcd_endpoint,
            "watch",
            "--prefix",
            &prefix,
            "--rev",
            &(revision + 1).to_string(),
        ]
        .map(str::to_string)
        .to_vec();
        let output = self
            .network
            .output(CLIENT, Path::new("timeout"), &args)
            .await?;
        // `timeout` ends the watch: exit code 124 is the expected end.
        ensure!(
            output.status.code() == Some(124),
            "etcdctl watch failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8_lossy(&output.stdout);
        let mut lines = text.lines();
        let mut writes = Vec::new();
        while let Some(event) = lines.next() {
            let key = lines.next().context("watch event without a key")?;
            if event != "PUT" {
                continue;
            }
            let value = lines.next().context("PUT without a value")?;
            let mut parts = key.rsplit('/');
            let partition: i64 = parts.next().unwrap_or_default().parse()?;
            let topic = parts.next().unwrap_or_default().to_string();
            let checkpoint: Value = serde_json::from_str(value)
                .with_context(|| format!("checkpoint {key} is not JSON: {value}"))?;
            let epoch = checkpoint["epoch"]
                .as_i64()
                .with_context(|| format!("checkpoint {key} has no epoch: {value}"))?;
            writes.push((topic, partition, epoch));
        }
        Ok(writes)
    }

    /// What a member wrote to its log so far.
    pub fn member_log(&self, member: &str) -> String {
        std::fs::read_to_string(self.log_dir.join(format!("{member}.log"))).unwrap_or_default()
    }

    /// The flow's status, through `kmirrorctl status`.
    pub async fn status(&self) -> Result<FlowStatusView, String> {
        let output = self
            .ctl(&["status", "--flow", &self.flow, "-o", "json"])
            .await;
        if !output.success() && !output.is_degraded_status() {
            return Err(output.to_string());
        }
        let status = StatusView::parse(&output.stdout).map_err(|error| format!("{error:#}"))?;
        status
            .flow(&self.flow)
            .cloned()
            .map_err(|error| format!("{error:#}"))
    }

    /// The coordinator that leads, as `members` shows it.
    pub async fn leader(&self) -> Option<String> {
        let output = self.ctl(&["members", "-o", "json"]).await;
        if !output.success() {
            return None;
        }
        leader_in(&output.stdout)
    }

    /// Produces records `from..to` of every partition (values `p:n`) with one kcat
    /// per partition on the client host, waiting until each delivered them.
    pub async fn produce(&self, from: u64, to: u64) -> Result<()> {
        produce_on(self.producer(), from, to).await
    }

    /// What a background task needs to produce.
    pub fn producer(&self) -> Producer {
        Producer {
            namespace: self.network.host(CLIENT).namespace.clone(),
            bootstrap: self.source_bootstrap.clone(),
            topic: self.topic.clone(),
            partitions: self.partitions,
        }
    }

    /// Every record of the topic in `bootstrap`'s cluster, as sequence numbers per
    /// partition in offset order.
    pub async fn read_sequences(&self, bootstrap: &str) -> Result<BTreeMap<i32, Vec<u64>>> {
        let output = self
            .client(
                Path::new("kcat"),
                &[
                    "-C",
                    "-b",
                    bootstrap,
                    "-t",
                    &self.topic,
                    "-o",
                    "beginning",
                    "-e",
                    "-q",
                    "-f",
                    "%p\t%o\t%s\n",
                ],
            )
            .await
            .map_err(anyhow::Error::msg)?;
        parse_sequences(&output)
    }

    /// Records in the destination topic (end offsets added up; it holds no
    /// transaction markers).
    pub async fn dest_count(&self) -> Result<i64, String> {
        let mut args = vec![
            "-Q".to_string(),
            "-b".to_string(),
            self.dest_bootstrap.clone(),
        ];
        for partition in 0..self.partitions {
            args.extend(["-t".to_string(), format!("{}:{partition}:-1", self.topic)]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = self.client(Path::new("kcat"), &args).await?;
        let mut total = 0;
        let mut seen = 0;
        for line in output.lines() {
            if let Some(offset) = line.rsplit_once(" offset ").map(|(_, offset)| offset) {
                total += offset
                    .trim()
                    .parse::<i64>()
                    .map_err(|error| error.to_string())?;
                seen += 1;
            }
        }
        if seen != self.partitions {
            return Err(format!("end offsets of {seen} partitions: {output}"));
        }
        Ok(total)
    }

    /// Waits until the destination holds every record the source does (by
    /// status: every partition mirrored to its source end, without error).
    pub async fn wait_caught_up(&self, timeout: Duration) -> Result<()> {
        self.wait_until(timeout, "the flow to catch up", || async {
            self.status()
                .await?
                .topic_caught_up(&self.topic, self.partitions)
        })
        .await
    }

    /// Waits until `condition` holds (see [`crate::wait::wait_until`]); fails at
    /// once when a server or member exited, naming the log folder.
    pub async fn wait_until<Condition, Check>(
        &self,
        timeout: Duration,
        what: &str,
        mut condition: Condition,
    ) -> Result<()>
    where
        Condition: FnMut() -> Check,
        Check: std::future::Future<Output = Result<(), String>>,
    {
        // A process that died ends the wait at once; the cell says which.
        let exited_cell = std::cell::RefCell::new(None);
        let result = crate::wait_until(timeout, what, || {
            let exited = self.exited_process();
            let check = condition();
            let exited_cell = &exited_cell;
            async move {
                if let Some(exited) = exited {
                    *exited_cell.borrow_mut() = Some(exited);
                    return Ok(());
                }
                check.await
            }
        })
        .await;
        if let Some(exited) = exited_cell.into_inner() {
            bail!(
                "{exited} while waiting for {what}; logs in {}",
                self.log_dir.display()
            );
        }
        result.map_err(|error| anyhow::anyhow!("{error}; logs in {}", self.log_dir.display()))
    }

    fn exited_process(&self) -> Option<String> {
        let mut ids = vec![ETCD, SOURCE, DEST];
        ids.extend(COORDINATORS);
        ids.extend(FETCHERS);
        ids.extend(WRITERS);
        ids.into_iter().find_map(|id| {
            self.network
                .exited(id)
                .map(|status| format!("{id} exited ({status})"))
        })
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "logs of multi-host deployment {}: {}",
                self.fleet,
                self.log_dir.display()
            );
        }
    }
}

/// The id of the member marked as leader in `members -o json`.
fn leader_in(members_json: &str) -> Option<String> {
    let json: Value = serde_json::from_str(members_json).ok()?;
    json["members"]
        .as_array()?
        .iter()
        .find(|member| member["leader"].as_bool() == Some(true))
        .and_then(|member| member["id"].as_str())
        .map(str::to_string)
}

fn java() -> PathBuf {
    match std::env::var_os("JAVA_HOME") {
        Some(home) => PathBuf::from(home).join("bin/java"),
        None => PathBuf::from("java"),
    }
}

/// The Kafka jars of the local stack (fetched on first use), as a classpath.
fn kafka_classpath(log_dir: &Path) -> Result<String> {
    let script = stack::workspace_dir().join("deploy/local/stack");
    let output = Command::new(&script)
        .arg("classpath")
        .env("KMIRROR_STATE_DIR", log_dir.join("stack-state"))
        .output()
        .with_context(|| format!("cannot run {}", script.display()))?;
    ensure!(
        output.status.success(),
        "`deploy/local/stack classpath` failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// A Kafka cluster id: 16 random bytes in URL-safe base64 without padding.
fn kafka_cluster_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bits = uuid::Uuid::new_v4().as_u128();
    // 22 characters of 6 bits hold 132 bits: the first holds the top 2 bits.
    (0..22)
        .map(|index| {
            let shift: i32 = 126 - 6 * index;
            let sextet = if shift >= 0 {
                (bits >> shift) & 0x3f
            } else {
                (bits << -shift) & 0x3f
            };
            ALPHABET[sextet as usize] as char
        })
        .collect()
}

const BROKER_LOG4J: &str = "\
status = warn
name = kmirror-multi-host-broker
appender.out.type = Console
appender.out.name = out
appender.out.target = SYSTEM_OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = out
logger.request.name = kafka.request.logger
logger.request.level = warn
logger.clients.name = org.apache.kafka.clients
logger.clients.level = warn
logger.network.name = kafka.network
logger.network.level = warn
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ids_are_22_url_safe_characters() {
        let id = kafka_cluster_id();
        assert_eq!(id.len(), 22);
        assert!(id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_ne!(id, kafka_cluster_id());
    }
}
