//! A fleet of real processes for one test: coordinator(s), fetchers and writers
//! under a fleet name (etcd prefix) of its own, and `kmirrorctl` against it.
//!
//! Every member logs to `target/e2e-logs/<fleet>/<member>.log` (appended across
//! restarts); failures print those paths. Dropping the fleet kills every process
//! it started, so a failing test leaves nothing behind.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use kmirror_common::schema::{decode, MemberInfo};
use kmirror_common::tls::{PeerRole, Transport};
use kmirror_common::{Keys, MemberId, Role};
use rustix::process::Signal;
use serde_json::Value;
use tokio::time::Instant;

pub use crate::ctl_output::CtlOutput;
pub use crate::fleet_options::FleetOptions;
use crate::kafka::{read_all, Cluster, WatermarkReader};
use crate::member_process::{duration_arg, free_port, log_tail, Member};
use crate::ordering::{assert_complete_in_order, Delivery};
use crate::pki::{TestPki, TlsFiles};
use crate::stack::{self, Stack};
use crate::status::{FlowStatusView, StatusView};
use crate::wait::{FIRST_POLL_INTERVAL, MAX_POLL_INTERVAL};

/// Names under which the fleet knows the stack's two clusters.
pub const SOURCE_CLUSTER: &str = "source";
pub const DEST_CLUSTER: &str = "dest";

/// How long one `kmirrorctl` call may take.
const CTL_TIMEOUT: Duration = Duration::from_secs(60);

/// A running fleet. See the module documentation.
pub struct Fleet {
    name: String,
    stack: &'static Stack,
    options: FleetOptions,
    members: Vec<Member>,
    coordinator_address: String,
    /// Every coordinator's admin address: `ctl` falls back to the next one when a
    /// coordinator cannot be reached (it was killed).
    coordinator_addresses: Vec<String>,
    ctl_binary: PathBuf,
    log_dir: PathBuf,
    etcd: etcd_client::Client,
    etcd_endpoint: String,
    /// The fleet's CA and certificates (`None` when it runs `--insecure`).
    pki_opt: Option<TestPki>,
    /// The certificate kmirrorctl presents: an admin's.
    admin_tls_opt: Option<TlsFiles>,
}

impl Fleet {
    /// Starts a fleet under a fresh name and waits until it is ready: every member
    /// running, fetchers and writers registered in etcd, the admin API answering.
    pub async fn start(options: FleetOptions) -> Fleet {
        let stack = stack::stack();
        let name = match options.name_is_unique {
            true => options.name.clone(),
            false => crate::unique_name(&options.name),
        };
        let log_dir = stack.logs_dir.join(&name);
        std::fs::create_dir_all(&log_dir)
            .unwrap_or_else(|error| panic!("cannot create {}: {error}", log_dir.display()));
        let etcd_endpoint = options
            .etcd_endpoint
            .clone()
            .unwrap_or_else(|| stack.etcd_endpoint.clone());
        let etcd = etcd_client::Client::connect(
            [etcd_endpoint.as_str()],
            options.etcd_connect_options.clone(),
        )
        .await
        .unwrap_or_else(|error| panic!("cannot connect to etcd at {etcd_endpoint}: {error}"));

        let pki_opt = options
            .tls
            .then(|| TestPki::new(&name, &log_dir.join("tls")));
        let admin_tls_opt = pki_opt
            .as_ref()
            .map(|pki| pki.issue(PeerRole::Admin, "e2e-admin"));
        let common_args = |id: &str, role: Role| -> Vec<String> {
            let transport = match &pki_opt {
                Some(pki) => pki.issue(role.into(), id).args(),
                None => vec!["--insecure".to_string()],
            };
            let mut args: Vec<String> = vec![
                "--etcd".into(),
                etcd_endpoint.clone(),
                "--fleet".into(),
                name.clone(),
                "--id".into(),
                id.to_string(),
                "--lease-ttl".into(),
                duration_arg(options.lease_ttl),
                "--shutdown-grace".into(),
                duration_arg(options.shutdown_grace),
                format!("--secrets-key-file={}", stack.secrets_key_file().display()),
            ];
            args.extend(transport);
            args
        };
        let member = |id: String, role: Role, binary: &str, args: Vec<String>| Member {
            log_path: log_dir.join(format!("{id}.log")),
            binary: stack.binary(binary),
            id,
            role,
            args,
            child: Mutex::new(None),
            started_ms: AtomicI64::new(0),
            env: (options.env.iter().cloned())
                .chain(
                    options
                        .role_env
                        .iter()
                        .filter(|(for_role, ..)| *for_role == role)
                        .map(|(_, name, value)| (name.clone(), value.clone())),
                )
                .collect(),
        };

        let mut members = Vec::new();
        let mut coordinator_addresses = Vec::new();
        for index in 0..options.coordinators {
            let id = format!("coordinator-{index}");
            let port = free_port();
            coordinator_addresses.push(format!("http://127.0.0.1:{port}"));
            let mut args = common_args(&id, Role::Coordinator);
            args.extend([
                "--listen".into(),
                format!("127.0.0.1:{port}"),
                "--refresh-interval".into(),
                duration_arg(options.refresh_interval),
            ]);
            members.push(member(
                id,
                Role::Coordinator,
                stack::COORDINATOR_BINARY,
                args,
            ));
        }
        for index in 0..options.fetchers {
            let id = format!("fetcher-{index}");
            let mut args = common_args(&id, Role::Fetcher);
            args.extend([
                "--listen".into(),
                "127.0.0.1:0".into(),
                "--checkpoint-interval".into(),
                duration_arg(options.checkpoint_interval),
                "--retry-backoff".into(),
                duration_arg(options.retry_backoff),
            ]);
            if let Some(window) = options.max_in_flight_batches {
                args.extend(["--max-in-flight-batches".into(), window.to_string()]);
            }
            members.push(member(id, Role::Fetcher, stack::FETCHER_BINARY, args));
        }
        for index in 0..options.writers {
            let id = format!("writer-{index}");
            let mut args = common_args(&id, Role::Writer);
            args.extend(["--listen".into(), "127.0.0.1:0".into()]);
            for (key, value) in &options.writer_properties {
                args.extend(["--producer-property".into(), format!("{key}={value}")]);
            }
            members.push(member(id, Role::Writer, stack::WRITER_BINARY, args));
        }

        let fleet = Fleet {
            coordinator_address: coordinator_addresses
                .first()
                .cloned()
                .expect("a fleet has at least one coordinator"),
            coordinator_addresses,
            ctl_binary: stack.binary(stack::CTL_BINARY),
            name,
            stack,
            options,
            members,
            log_dir,
            etcd,
            etcd_endpoint,
            pki_opt,
            admin_tls_opt,
        };
        eprintln!("fleet {} logs to {}", fleet.name, fleet.log_dir.display());
        for member in &fleet.members {
            member.start();
        }
        fleet.wait_ready().await;
        fleet
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The source and destination clusters this fleet mirrors between.
    pub fn clusters(&self) -> (Cluster, Cluster) {
        self.options
            .clusters
            .unwrap_or((Cluster::Source, Cluster::Dest))
    }

    pub fn coordinator_address(&self) -> &str {
        &self.coordinator_address
    }

    /// A client of the fleet's etcd.
    pub fn etcd(&self) -> etcd_client::Client {
        self.etcd.clone()
    }

    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    pub fn member_ids(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|member| member.id.clone())
            .collect()
    }

    pub fn is_running(&self, member_id: &str) -> bool {
        self.member(member_id).is_running()
    }

    pub(crate) fn member(&self, member_id: &str) -> &Member {
        self.members
            .iter()
            .find(|member| member.id == member_id)
            .unwrap_or_else(|| panic!("fleet {} has no member {member_id}", self.name))
    }

    /// Waits until every member runs, every fetcher and writer is registered and
    /// the coordinator's admin API answers with a leader in place.
    async fn wait_ready(&self) {
        let what = format!("fleet {} to be ready", self.name);
        self.wait_until(self.options.ready_timeout, &what, || async {
            let workers = self
                .members
                .iter()
                .filter(|member| member.role != Role::Coordinator);
            for member in workers {
                self.check_registered(member).await?;
            }
            let members = self.ctl(["members", "-o", "json"]).await;
            if !members.success() {
                return Err(format!("admin API not ready: {members}"));
            }
            match serde_json::from_str::<Value>(&members.stdout) {
                Ok(json) if has_no_leader(&json) => Err(format!(
                    "no coordinator leads yet: {}",
                    members.stdout.trim()
                )),
                Ok(_) => Ok(()),
                Err(error) => Err(format!(
                    "`members -o json` did not print JSON ({error}): {members}"
                )),
            }
        })
        .await;
    }

    /// Whether the running process of `member` is registered in etcd. A member
    /// killed with SIGKILL leaves its registration behind until its lease
    /// expires: that one does not count.
    async fn check_registered(&self, member: &Member) -> Result<(), String> {
        let member_id = MemberId::new(member.id.as_str()).map_err(|error| error.to_string())?;
        let key = Keys::new(&self.name).member(member.role, &member_id);
        let mut etcd = self.etcd.clone();
        let response = etcd
            .get(key.as_str(), None)
            .await
            .map_err(|error| format!("cannot read {key} from etcd: {error}"))?;
        let Some(entry) = response.kvs().first() else {
            return Err(format!("{} is not registered in etcd", member.id));
        };
        let info: MemberInfo =
            decode(entry.key(), entry.value()).map_err(|error| format!("{error:#}"))?;
        if info.started_ms < member.started_ms.load(Ordering::SeqCst) {
            return Err(format!(
                "{} is registered by a process started before the running one",
                member.id
            ));
        }
        Ok(())
    }

    /// Runs `kmirrorctl --coordinator <this fleet's coordinator> ARGS`, trying the
    /// fleet's other coordinators when one cannot be reached.
    pub async fn ctl<I, S>(&self, args: I) -> CtlOutput
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let args: Vec<String> = args
            .into_iter()
            .map(|arg| arg.as_ref().to_string())
            .collect();
        let mut output_opt = None;
        for address in &self.coordinator_addresses {
            let output = self.ctl_at(address, &args).await;
            let unreachable =
                output.code == Some(1) && output.stderr.contains("cannot reach the coordinator");
            output_opt = Some(output);
            if !unreachable {
                break;
            }
        }
        output_opt.expect("a fleet has at least one coordinator")
    }

    /// Sends SIGSTOP to a member: it stays alive but does nothing (a long pause).
    pub fn pause(&self, member_id: &str) {
        assert!(
            self.member(member_id).signal(Signal::STOP),
            "member {member_id} is not running"
        );
    }

    /// Sends SIGCONT to a member paused with [`Fleet::pause`].
    pub fn unpause(&self, member_id: &str) {
        assert!(
            self.member(member_id).signal(Signal::CONT),
            "member {member_id} is not running"
        );
    }

    /// Runs `kmirrorctl --coordinator ADDRESS ARGS` as the fleet's admin.
    pub async fn ctl_at(&self, address: &str, args: &[String]) -> CtlOutput {
        self.ctl_with(address, self.admin_tls_opt.as_ref(), args)
            .await
    }

    /// How a test's own gRPC client reaches the members: with the fleet
    /// admin's certificate, or plaintext for an `--insecure` fleet.
    pub fn client_transport(&self) -> Transport {
        match &self.admin_tls_opt {
            Some(files) => Transport::Tls(
                kmirror_common::tls::TlsFiles::load(
                    kmirror_common::tls::TlsPaths {
                        cert: files.cert.clone(),
                        key: files.key.clone(),
                        ca: files.ca.clone(),
                    },
                    None,
                    &[],
                )
                .expect("the fleet's admin certificate loads"),
            ),
            None => Transport::Insecure,
        }
    }

    /// The fleet's CA and certificates (`None` for an `--insecure` fleet).
    pub fn pki(&self) -> Option<&TestPki> {
        self.pki_opt.as_ref()
    }

    /// Every coordinator's admin address.
    pub fn coordinator_addresses(&self) -> &[String] {
        &self.coordinator_addresses
    }

    /// Runs `kmirrorctl` against the first coordinator presenting `tls_opt`'s
    /// certificate (none: `--insecure`).
    pub async fn ctl_as<I, S>(&self, tls_opt: Option<&TlsFiles>, args: I) -> CtlOutput
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let args: Vec<String> = args
            .into_iter()
            .map(|arg| arg.as_ref().to_string())
            .collect();
        self.ctl_with(&self.coordinator_address, tls_opt, &args)
            .await
    }

    async fn ctl_with(
        &self,
        address: &str,
        tls_opt: Option<&TlsFiles>,
        args: &[String],
    ) -> CtlOutput {
        let args = args.to_vec();
        let mut command = tokio::process::Command::new(&self.ctl_binary);
        let transport = match tls_opt {
            Some(files) => files.args(),
            None => vec!["--insecure".to_string()],
        };
        command
            .arg("--coordinator")
            .arg(address)
            .args(transport)
            // The tester's own contexts stay out of it.
            .env("KMIRRORCTL_CONFIG", "/dev/null")
            .args(&args)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let output = match tokio::time::timeout(CTL_TIMEOUT, command.output()).await {
            Ok(Ok(output)) => output,
            Ok(Err(error)) => panic!("cannot run {}: {error}", self.ctl_binary.display()),
            Err(_) => panic!(
                "`kmirrorctl {}` did not finish within {CTL_TIMEOUT:?}\n{}",
                args.join(" "),
                self.log_paths()
            ),
        };
        CtlOutput {
            args,
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Registers the stack's clusters as [`SOURCE_CLUSTER`] and [`DEST_CLUSTER`].
    pub async fn add_clusters(&self) {
        let (source, dest) = self.clusters();
        for (name, cluster) in [(SOURCE_CLUSTER, source), (DEST_CLUSTER, dest)] {
            self.ctl([
                "cluster",
                "add",
                name,
                "--bootstrap",
                self.stack.bootstrap(cluster),
            ])
            .await
            .assert_success();
        }
    }

    /// Creates a flow from [`SOURCE_CLUSTER`] to [`DEST_CLUSTER`].
    pub async fn create_flow(&self, flow: &str, include: &str, exclude: Option<&str>) {
        let exclude_args = exclude.map(|exclude| ["--exclude", exclude]);
        self.create_flow_with(
            flow,
            include,
            exclude_args.as_ref().map_or(&[][..], |args| &args[..]),
        )
        .await;
    }

    /// Creates a flow from [`SOURCE_CLUSTER`] to [`DEST_CLUSTER`] with more
    /// `flow create` options (e.g. `--exactly-once`).
    pub async fn create_flow_with(&self, flow: &str, include: &str, options: &[&str]) {
        let mut args = vec![
            "flow",
            "create",
            flow,
            "--source",
            SOURCE_CLUSTER,
            "--dest",
            DEST_CLUSTER,
            "--include",
            include,
        ];
        args.extend_from_slice(options);
        self.ctl(args).await.assert_success();
    }

    /// `status --flow FLOW -o json` as JSON; an error when the call fails.
    pub async fn status_json(&self, flow: &str) -> Result<Value, String> {
        let output = self.ctl(["status", "--flow", flow, "-o", "json"]).await;
        if !output.success() && !output.is_degraded_status() {
            return Err(output.to_string());
        }
        serde_json::from_str(&output.stdout)
            .map_err(|error| format!("status is not JSON ({error}): {output}"))
    }

    /// One flow's status, parsed ([`crate::status`]); an error when the call or
    /// the parsing fails.
    pub async fn flow_status(&self, flow: &str) -> Result<FlowStatusView, String> {
        let output = self.ctl(["status", "--flow", flow, "-o", "json"]).await;
        if !output.success() && !output.is_degraded_status() {
            return Err(output.to_string());
        }
        let status = StatusView::parse(&output.stdout).map_err(|error| format!("{error:#}"))?;
        status
            .flow(flow)
            .cloned()
            .map_err(|error| format!("{error:#}: {output}"))
    }

    /// Sends SIGTERM to every running member and waits until all have exited
    /// (within the shutdown grace plus a margin). Returns each one's exit status.
    pub async fn sigterm_all(&self) -> Vec<(String, ExitStatus)> {
        let stopping: Vec<&Member> = self
            .members
            .iter()
            .filter(|member| member.signal(Signal::TERM))
            .collect();
        self.wait_for_exits(&stopping).await
    }

    /// Sends SIGTERM to one member and waits until it has exited.
    pub async fn sigterm(&self, member_id: &str) -> ExitStatus {
        let member = self.member(member_id);
        assert!(
            member.signal(Signal::TERM),
            "member {member_id} is not running"
        );
        self.wait_for_exits(&[member]).await.remove(0).1
    }

    async fn wait_for_exits(&self, stopping: &[&Member]) -> Vec<(String, ExitStatus)> {
        let timeout = self.options.shutdown_grace + Duration::from_secs(15);
        let deadline = Instant::now() + timeout;
        let mut exits: Vec<(String, ExitStatus)> = Vec::new();
        let mut waiting: Vec<&Member> = stopping.to_vec();
        while !waiting.is_empty() {
            waiting.retain(|member| match member.reap() {
                Some(status) => {
                    exits.push((member.id.clone(), status));
                    false
                }
                None => true,
            });
            if waiting.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                let stuck: Vec<String> = waiting.iter().map(|member| member.id.clone()).collect();
                for member in &waiting {
                    member.kill_and_reap();
                }
                panic!(
                    "members {stuck:?} of fleet {} did not stop within {timeout:?} of SIGTERM (killed them)\n{}",
                    self.name,
                    self.log_paths()
                );
            }
            tokio::time::sleep(FIRST_POLL_INTERVAL).await;
        }
        exits
    }

    /// Kills one member with SIGKILL (no graceful stop) and reaps it.
    pub fn kill(&self, member_id: &str) {
        let member = self.member(member_id);
        assert!(
            member.kill_and_reap().is_some(),
            "member {member_id} of fleet {} was not running",
            self.name
        );
    }

    /// Starts one stopped member again (no wait).
    pub fn start_member(&self, member_id: &str) {
        self.member(member_id).start();
    }

    /// Starts every stopped member again with the same arguments and waits until
    /// the fleet is ready.
    pub async fn restart(&self) {
        for member in &self.members {
            let stopped = member.child.lock().expect("member lock").is_none();
            if stopped {
                member.start();
            }
        }
        self.wait_ready().await;
    }

    /// Waits until `condition` holds (see [`crate::wait::wait_until`]). Fails at
    /// once when a member dies unexpectedly, and on timeout, with the status of
    /// every flow and the paths of the members' logs.
    pub async fn wait_until<Condition, Check>(
        &self,
        timeout: Duration,
        what: &str,
        condition: Condition,
    ) where
        Condition: FnMut() -> Check,
        Check: Future<Output = Result<(), String>>,
    {
        self.poll_until(
            timeout,
            FIRST_POLL_INTERVAL,
            MAX_POLL_INTERVAL,
            what,
            condition,
        )
        .await;
    }

    /// [`Fleet::wait_until`] checking every `poll_interval`, for moments that
    /// must be caught closely (stopping the fleet while records still flow).
    pub async fn wait_until_every<Condition, Check>(
        &self,
        timeout: Duration,
        poll_interval: Duration,
        what: &str,
        condition: Condition,
    ) where
        Condition: FnMut() -> Check,
        Check: Future<Output = Result<(), String>>,
    {
        self.poll_until(timeout, poll_interval, poll_interval, what, condition)
            .await;
    }

    async fn poll_until<Condition, Check>(
        &self,
        timeout: Duration,
        first_poll_interval: Duration,
        max_poll_interval: Duration,
        what: &str,
        mut condition: Condition,
    ) where
        Condition: FnMut() -> Check,
        Check: Future<Output = Result<(), String>>,
    {
        let deadline = Instant::now() + timeout;
        let mut poll_interval = first_poll_interval;
        loop {
            self.fail_on_unexpected_exit(what);
            let last_state = match condition().await {
                Ok(()) => return,
                Err(state) => state,
            };
            let now = Instant::now();
            if now >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}\nlast state: {last_state}\n{}",
                    self.diagnostics().await
                );
            }
            tokio::time::sleep(poll_interval.min(deadline - now)).await;
            poll_interval = (poll_interval * 2).min(max_poll_interval);
        }
    }

    fn fail_on_unexpected_exit(&self, what: &str) {
        for member in &self.members {
            if let Some(status) = member.unexpected_exit() {
                panic!(
                    "member {} of fleet {} exited ({status}) while waiting for {what}\nlast lines of {}:\n{}",
                    member.id,
                    self.name,
                    member.log_path.display(),
                    log_tail(&member.log_path)
                );
            }
        }
    }

    /// Waits until the destination copy of `topic` holds at least `expected`
    /// records (watermarks: the destination has no transaction markers). Returns
    /// the count then seen. On timeout, fails with the flow's status and the logs.
    pub async fn wait_for_mirror(&self, topic: &str, expected: i64, timeout: Duration) -> i64 {
        let reader =
            WatermarkReader::new(self.clusters().1).unwrap_or_else(|error| panic!("{error:#}"));
        let what = format!(
            "{expected} records of {topic} in the destination (fleet {})",
            self.name
        );
        self.wait_until(timeout, &what, || {
            let reader = reader.clone();
            async move {
                match reader.offset_count(topic).await {
                    Ok(count) if count >= expected => Ok(()),
                    Ok(count) => Err(format!("{count} of {expected} records in the destination")),
                    Err(error) => Err(format!("{error:#}")),
                }
            }
        })
        .await;
        reader
            .offset_count(topic)
            .await
            .unwrap_or_else(|error| panic!("{error:#}"))
    }

    /// Waits until `status` shows every one of the `partitions` partitions of
    /// `topic` in `flow` mirrored to its source end, without error.
    pub async fn wait_caught_up(
        &self,
        flow: &str,
        topic: &str,
        partitions: i32,
        timeout: Duration,
    ) {
        let what = format!("flow {flow} to catch up on {topic}");
        self.wait_until(timeout, &what, || async {
            self.flow_status(flow)
                .await?
                .topic_caught_up(topic, partitions)
        })
        .await;
    }

    /// Waits until `flow` caught up on `topic` in the stack's clusters, then
    /// asserts that the destination holds every one of the `produced` source
    /// records, first copies in source order (see [`assert_complete_in_order`]).
    pub async fn assert_mirrored_in_order(
        &self,
        flow: &str,
        topic: &str,
        partitions: i32,
        produced: u64,
        timeout: Duration,
    ) -> anyhow::Result<Delivery> {
        self.wait_caught_up(flow, topic, partitions, timeout).await;
        let source = read_all(Cluster::Source, topic).await?;
        let dest = read_all(Cluster::Dest, topic).await?;
        let delivery = assert_complete_in_order(&source, &dest);
        assert_eq!(delivery.records as u64, produced);
        Ok(delivery)
    }

    /// Waits until the log of each of `members` holds `text` (e.g. "lease lost").
    pub async fn wait_logged(&self, members: &[&str], text: &str, timeout: Duration) {
        let what = format!("{members:?} to log {text:?}");
        self.wait_until(timeout, &what, || async {
            for member in members {
                let log = std::fs::read_to_string(self.log_dir().join(format!("{member}.log")))
                    .unwrap_or_default();
                if !log.contains(text) {
                    return Err(format!("{member} has not"));
                }
            }
            Ok(())
        })
        .await;
    }

    /// Where to look when something failed: every member's log path and state, and
    /// the status of every flow (best effort).
    pub async fn diagnostics(&self) -> String {
        let status = self.ctl(["status", "-o", "json"]).await;
        format!("{}\nstatus of every flow: {status}", self.log_paths())
    }

    /// Log paths of every member, with whether it runs.
    pub fn log_paths(&self) -> String {
        let mut lines = vec![format!("logs of fleet {}:", self.name)];
        for member in &self.members {
            let state = if member.is_running() {
                "running"
            } else {
                "stopped"
            };
            lines.push(format!(
                "  {} ({state}): {}",
                member.id,
                member.log_path.display()
            ));
        }
        lines.join("\n")
    }
}

impl Drop for Fleet {
    /// Kills every member. After a passing test the fleet's etcd prefix is
    /// deleted too; after a failing one it stays, with the logs, for inspection.
    fn drop(&mut self) {
        for member in &self.members {
            member.kill_and_reap();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.log_paths());
        } else {
            delete_etcd_prefix(&self.etcd_endpoint, Keys::new(&self.name).root());
        }
    }
}

/// Best effort, bounded: a test that passed must not fail while tidying up.
fn delete_etcd_prefix(endpoint: &str, prefix: &str) {
    let (endpoint, owned_prefix) = (endpoint.to_string(), prefix.to_string());
    // Drop cannot await; a thread of its own keeps this off the test's runtime.
    let tidy_up = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        runtime.block_on(async {
            let options = etcd_client::ConnectOptions::new()
                .with_connect_timeout(Duration::from_secs(2))
                .with_timeout(Duration::from_secs(5));
            let mut etcd = etcd_client::Client::connect([endpoint.as_str()], Some(options))
                .await
                .ok()?;
            etcd.delete(
                owned_prefix.as_str(),
                Some(etcd_client::DeleteOptions::new().with_prefix()),
            )
            .await
            .ok()
        })
    });
    if tidy_up.join().ok().flatten().is_none() {
        eprintln!("could not delete etcd prefix {prefix} after the test");
    }
}

/// Whether `members -o json` lists members with a `leader` flag and none is set.
/// Output without any `leader` field is not held against the fleet.
fn has_no_leader(json: &Value) -> bool {
    fn leader_flags(value: &Value, flags: &mut Vec<bool>) {
        match value {
            Value::Object(object) => {
                for (key, field) in object {
                    if key == "leader" {
                        flags.push(field.as_bool().unwrap_or(false));
                    } else {
                        leader_flags(field, flags);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| leader_flags(item, flags)),
            _ => {}
        }
    }
    let mut flags = Vec::new();
    leader_flags(json, &mut flags);
    !flags.is_empty() && !flags.contains(&true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leader_check_reads_any_shape_and_tolerates_missing_flags() {
        let with_leader =
            serde_json::json!({"members":[{"id":"c","leader":true},{"id":"f","leader":false}]});
        let without_leader = serde_json::json!([{"id":"c","leader":false}]);
        let no_flags = serde_json::json!([{"id":"c"}]);
        assert!(!has_no_leader(&with_leader));
        assert!(has_no_leader(&without_leader));
        assert!(!has_no_leader(&no_flags));
    }
}
