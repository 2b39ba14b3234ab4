//! `kmirror mirror`: MirrorMaker 1's command line, run as a whole kmirror fleet in
//! one process — a coordinator, N fetchers and N writers on the same code paths
//! as the distributed fleet, against the etcd given with `--etcd` or a private
//! etcd child process whose data lives under a state folder.
//!
//! The consumer config's `group.id` names the fleet (the checkpoint namespace),
//! so running the same command again resumes where it stopped.
//!
//! The command line and the client configs are in `args`, the private etcd in
//! `private_etcd`; running the fleet is here.

mod args;
mod private_etcd;

use args::default_state_dir;
pub use args::{
    fleet_name, load_configs, whitelist_regex, KmirrorCli, KmirrorCommand, MirrorArgs,
    MirrorConfigs, MirrorError,
};
pub use private_etcd::PrivateEtcd;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
use kmirror_common::etcd::EtcdSettings;
use kmirror_common::http::MetricsListen;
use kmirror_common::member_config::MemberConfig;
use kmirror_common::schema::{decode, encode, FlowPhase, FlowState};
use kmirror_common::tls::{PeerRole, TransportSettings};
use kmirror_common::types::FlowName;
use kmirror_common::Keys;
use kmirror_coordinator::admin::AdminService;
use kmirror_coordinator::kafka::KafkaClients;
use kmirror_coordinator::{Coordinator, CoordinatorConfig};
use kmirror_fetcher::{Fetcher, FetcherConfig};
use kmirror_proto::v1::{AddClusterRequest, Cluster, CreateFlowRequest, Flow, StatusRequest};
use kmirror_writer::{Writer, WriterConfig};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::console::console;
use crate::progress::{Tracker, Verdict};

/// The names the one-process fleet gives its clusters and its flow.
pub const SOURCE_CLUSTER: &str = "source";
pub const DEST_CLUSTER: &str = "dest";
pub const FLOW: &str = "mirror";

/// What every member of the one-process fleet shares: loopback addresses, no
/// metrics endpoint, the run's lease TTL.
fn member_config(
    endpoints: &[String],
    fleet: &str,
    id: &str,
    args: &MirrorArgs,
    transport: TransportSettings,
) -> MemberConfig {
    MemberConfig {
        etcd: endpoints.to_vec(),
        fleet: fleet.to_string(),
        id: Some(id.to_string()),
        listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        lease_ttl: args.lease_ttl,
        metrics_listen: MetricsListen(None),
        tls_cert: transport.tls_cert,
        tls_key: transport.tls_key,
        tls_ca: transport.tls_ca,
        insecure: transport.insecure,
        etcd_cert: args.etcd_security.etcd_cert.clone(),
        etcd_key: args.etcd_security.etcd_key.clone(),
        etcd_ca: args.etcd_security.etcd_ca.clone(),
        etcd_user: args.etcd_security.etcd_user.clone(),
        etcd_password_file: args.etcd_security.etcd_password_file.clone(),
        ..MemberConfig::default()
    }
}

/// A running member and how to stop it.
struct Running {
    name: String,
    stop: CancellationToken,
    handle: JoinHandle<Result<(), String>>,
}

impl Running {
    async fn stop(self) {
        self.stop.cancel();
        match self.handle.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => warn!(member = %self.name, %error, "member stopped on an error"),
            Err(error) => warn!(member = %self.name, %error, "member task failed"),
        }
    }
}

/// Mirrors until `shutdown` fires (or, with --until-caught-up, until the
/// migration completes), then stops every member in order.
pub async fn run(args: MirrorArgs, shutdown: CancellationToken) -> Result<(), MirrorError> {
    let configs = load_configs(&args)?;
    for note in configs.source.notes.iter().chain(&configs.dest.notes) {
        info!(note = %note, "client config");
    }
    if args.abort_on_send_failure.is_some() {
        info!("abort.on.send.failure ignored: a record that cannot be sent stops its partition, which retries; nothing is skipped");
    }
    // The clusters are stored again at every start (run_fleet), so a key that
    // lives for this run keeps their secrets sealed in etcd, as a fleet's key does.
    if kmirror_common::secrets::installed().is_none() {
        let (_, key) = kmirror_common::secrets::SecretsKey::generate()
            .map_err(|error| MirrorError::Failed(error.to_string()))?;
        kmirror_common::secrets::install(key);
    }
    let fleet = fleet_name(&configs.group_id);
    let mut private_etcd_opt = None;
    let endpoints = if args.etcd.is_empty() {
        let state_dir = args.state_dir.clone().unwrap_or_else(default_state_dir);
        let etcd = PrivateEtcd::start(&state_dir.join(&fleet), &args.etcd_binary).await?;
        let endpoints = vec![etcd.endpoint.clone()];
        private_etcd_opt = Some(etcd);
        endpoints
    } else {
        args.etcd.clone()
    };
    let outcome = run_fleet(&args, &configs, &fleet, &endpoints, shutdown).await;
    if let Some(mut etcd) = private_etcd_opt {
        etcd.stop().await;
    }
    outcome
}

async fn run_fleet(
    args: &MirrorArgs,
    configs: &MirrorConfigs,
    fleet: &str,
    endpoints: &[String],
    shutdown: CancellationToken,
) -> Result<(), MirrorError> {
    let settings = EtcdSettings {
        endpoints: endpoints.to_vec(),
        fleet: fleet.to_string(),
        security: args.etcd_security.security(),
    };
    let mut client = kmirror_common::etcd::connect(&settings)
        .await
        .map_err(|error| MirrorError::Failed(error.to_string()))?;
    let keys = Keys::new(fleet);
    let admin = AdminService::new(
        client.clone(),
        keys.clone(),
        KafkaClients::new(Duration::from_secs(10)),
    );
    for (name, client_settings) in [
        (SOURCE_CLUSTER, &configs.source),
        (DEST_CLUSTER, &configs.dest),
    ] {
        admin
            .add_cluster(AddClusterRequest {
                cluster: Some(Cluster {
                    name: name.to_string(),
                    bootstrap_servers: client_settings.bootstrap_opt.clone().unwrap_or_default(),
                    properties: client_settings.properties.clone().into_iter().collect(),
                }),
                replace: true,
                ..AddClusterRequest::default()
            })
            .await
            .map_err(|error| MirrorError::Failed(format!("{name} cluster: {error}")))?;
    }
    let flow = Flow {
        name: FLOW.to_string(),
        source_cluster: SOURCE_CLUSTER.to_string(),
        dest_cluster: DEST_CLUSTER.to_string(),
        include: whitelist_regex(&args.whitelist),
        exclude: args.blacklist.clone().unwrap_or_default(),
        start: configs.source.start_opt.clone().unwrap_or_default(),
        until_caught_up: args.until_caught_up,
        ..Flow::default()
    };
    admin
        .create_flow(CreateFlowRequest {
            flow: Some(flow),
            replace: true,
        })
        .await
        .map_err(|error| MirrorError::Config(error.to_string()))?;
    if args.until_caught_up {
        // Before the coordinator runs: its first round must see no capture.
        start_new_migration_capture(&mut client, &keys).await?;
    }

    let mut members: Vec<Running> = Vec::new();
    let state_dir = args.state_dir.clone().unwrap_or_else(default_state_dir);
    let tls = tls::MirrorTls::open(state_dir.join(fleet).join("tls"), fleet)?;
    let coordinator_id = format!("{fleet}-coordinator");
    let coordinator_config = kmirror_coordinator::Config::from_config(&CoordinatorConfig {
        member: member_config(
            endpoints,
            fleet,
            &coordinator_id,
            args,
            tls.member(PeerRole::Coordinator, &coordinator_id)?,
        ),
        refresh_interval: args.refresh_interval,
    })
    .map_err(|error| MirrorError::Failed(error.to_string()))?;
    let coordinator = Coordinator::build(coordinator_config)
        .await
        .map_err(|error| MirrorError::Failed(format!("coordinator: {error}")))?;
    let mut writers = Vec::new();
    for index in 1..=args.num_streams {
        let id = format!("{fleet}-writer-{index}");
        let config = WriterConfig {
            member: member_config(
                endpoints,
                fleet,
                &id,
                args,
                tls.member(PeerRole::Writer, &id)?,
            ),
            ..WriterConfig::default()
        };
        let writer = Writer::build(config)
            .await
            .map_err(|error| MirrorError::Failed(format!("writer {id}: {error}")))?;
        let stop = CancellationToken::new();
        let handle = {
            let stop = stop.clone();
            tokio::spawn(async move { writer.run(stop).await.map_err(|error| error.to_string()) })
        };
        writers.push(Running {
            name: id,
            stop,
            handle,
        });
    }
    for index in 1..=args.num_streams {
        let id = format!("{fleet}-fetcher-{index}");
        let config = FetcherConfig {
            member: member_config(
                endpoints,
                fleet,
                &id,
                args,
                tls.member(PeerRole::Fetcher, &id)?,
            ),
            checkpoint_interval: Duration::from_millis(args.offset_commit_interval_ms.max(10)),
            ..FetcherConfig::default()
        };
        let fetcher = Fetcher::build(config)
            .await
            .map_err(|error| MirrorError::Failed(format!("fetcher {id}: {error}")))?;
        let stop = CancellationToken::new();
        let handle = {
            let stop = stop.clone();
            tokio::spawn(async move { fetcher.run(stop).await.map_err(|error| error.to_string()) })
        };
        members.push(Running {
            name: id,
            stop,
            handle,
        });
    }
    // The coordinator leads once the workers are registered, so its first plan
    // has members to assign to.
    let coordinator_stop = CancellationToken::new();
    let coordinator_handle = {
        let stop = coordinator_stop.clone();
        tokio::spawn(async move {
            coordinator
                .run(stop)
                .await
                .map_err(|error| error.to_string())
        })
    };
    let coordinator = Running {
        name: "coordinator".to_string(),
        stop: coordinator_stop,
        handle: coordinator_handle,
    };

    info!(
        fleet,
        streams = args.num_streams,
        whitelist = %args.whitelist,
        until_caught_up = args.until_caught_up,
        "mirroring"
    );

    let outcome = if args.until_caught_up {
        wait_caught_up(&admin, &shutdown).await
    } else {
        shutdown.cancelled().await;
        Ok(())
    };

    // Fetchers first (they drain through the writers and checkpoint), then the
    // writers, then the coordinator.
    info!("stopping");
    for fetcher in members {
        fetcher.stop().await;
    }
    for writer in writers {
        writer.stop().await;
    }
    coordinator.stop().await;
    outcome
}

/// Makes this run's migration copy up to the source's end offsets of now.
///
/// The leader captures a migration's end offsets once, when it first sees the
/// flow, and keeps the flow completed once they are reached. The flow of an
/// earlier run of the same `group.id` is the same flow, so without this a second
/// `--until-caught-up` run would find the first run's capture (or completion)
/// and leave whatever arrived since behind. Forgetting the capture makes the
/// leader's first round capture again; the checkpoints stay, so the new capture
/// starts where the last run stopped.
async fn start_new_migration_capture(client: &mut Client, keys: &Keys) -> Result<(), MirrorError> {
    let flow = FlowName::new(FLOW).expect("the mirror's flow name is valid");
    let state_key = keys.flow_state(&flow);
    let failed = |error: String| {
        MirrorError::Failed(format!(
            "cannot start a new migration of flow {flow}: {error}"
        ))
    };
    let response = client
        .get(state_key.as_str(), None)
        .await
        .map_err(|error| failed(error.to_string()))?;
    let Some(stored) = response.kvs().first() else {
        return Ok(());
    };
    let state: FlowState =
        decode(stored.key(), stored.value()).map_err(|error| failed(error.to_string()))?;
    let Some(fresh) = without_migration_capture(state) else {
        return Ok(());
    };
    // Compared with what was read: a leader of this fleet still running elsewhere
    // (the same group.id in another process) would be overwritten otherwise.
    let written = client
        .txn(
            Txn::new()
                .when([Compare::mod_revision(
                    state_key.as_str(),
                    CompareOp::Equal,
                    stored.mod_revision(),
                )])
                .and_then([TxnOp::put(state_key.as_str(), encode(&fresh), None)]),
        )
        .await
        .map_err(|error| failed(error.to_string()))?;
    if !written.succeeded() {
        return Err(failed(
            "its state changed meanwhile: is another kmirror mirror running with the same group.id?"
                .to_string(),
        ));
    }
    info!(flow = %flow, "previous migration forgotten: this run captures the current end offsets");
    Ok(())
}

/// A flow's state with its migration capture and completion removed, or `None`
/// when it holds none (the leader then captures in its first round anyway).
fn without_migration_capture(state: FlowState) -> Option<FlowState> {
    if state.started_ms.is_none() && state.completed_ms.is_none() && state.targets.is_empty() {
        return None;
    }
    Some(FlowState {
        phase: FlowPhase::Running,
        started_ms: None,
        targets: BTreeMap::new(),
        completed_ms: None,
        ..state
    })
}

/// Follows the flow until its migration completes, printing progress on stderr.
async fn wait_caught_up(
    admin: &AdminService,
    shutdown: &CancellationToken,
) -> Result<(), MirrorError> {
    let console = console();
    let terminal = console.is_terminal();
    let mut tracker = Tracker::new(FLOW, Duration::from_secs(300));
    let mut last_line = Instant::now() - Duration::from_secs(60);
    loop {
        let status = admin
            .status(StatusRequest {
                flow: FLOW.to_string(),
            })
            .await
            .map_err(|error| MirrorError::Failed(error.to_string()))?
            .into_iter()
            .next();
        if let Some(status) = status {
            let verdict = tracker.observe(&status, Instant::now());
            if terminal
                || last_line.elapsed() >= Duration::from_secs(5)
                || verdict != Verdict::Waiting
            {
                console.show_bar(&tracker.line(&status, terminal));
                last_line = Instant::now();
            }
            match verdict {
                Verdict::Done(message) => {
                    console.finish_bar();
                    console.line(&message);
                    return Ok(());
                }
                Verdict::Failed(reason) => {
                    console.finish_bar();
                    return Err(MirrorError::Failed(reason));
                }
                Verdict::Waiting => {}
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => {
                console.finish_bar();
                return Err(MirrorError::Failed("stopped before the migration completed (run the same command again to go on)".to_string()));
            }
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

mod tls;

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn the_command_line_is_mirror_makers() {
        use clap::CommandFactory;
        KmirrorCli::command().debug_assert();
        let cli = KmirrorCli::try_parse_from([
            "kmirror",
            "mirror",
            "--consumer.config",
            "c.properties",
            "--producer.config",
            "p.properties",
            "--whitelist",
            "testtopic",
            "--num.streams",
            "4",
        ])
        .unwrap();
        let KmirrorCommand::Mirror(args) = cli.command;
        assert_eq!(args.num_streams, 4);
        assert_eq!(args.whitelist, "testtopic");
        let cli = KmirrorCli::try_parse_from([
            "kmirror",
            "mirror",
            "--consumer.config",
            "c",
            "--producer.config",
            "p",
            "--include",
            "a,b",
            "--until-caught-up",
        ])
        .unwrap();
        let KmirrorCommand::Mirror(args) = cli.command;
        assert!(args.until_caught_up);
        assert_eq!(whitelist_regex(&args.whitelist), "a|b");
    }

    #[test]
    fn a_new_migration_run_forgets_the_last_capture_and_keeps_the_rest() {
        use kmirror_common::schema::OffsetRange;
        let completed = FlowState {
            error: String::new(),
            topics: vec!["orders".to_string()],
            updated_ms: 5,
            phase: FlowPhase::Completed,
            started_ms: Some(1),
            targets: BTreeMap::from([(
                "orders".to_string(),
                BTreeMap::from([(0, OffsetRange { start: 0, end: 10 })]),
            )]),
            completed_ms: Some(4),
            source_configs: BTreeMap::from([("orders".to_string(), BTreeMap::new())]),
        };
        let fresh = without_migration_capture(completed).expect("a capture to forget");
        assert_eq!(fresh.phase, FlowPhase::Running);
        assert_eq!(fresh.started_ms, None);
        assert_eq!(fresh.completed_ms, None);
        assert!(fresh.targets.is_empty());
        assert_eq!(fresh.topics, vec!["orders".to_string()]);
        assert_eq!(fresh.source_configs.len(), 1);
        assert!(without_migration_capture(fresh).is_none());
    }

    #[test]
    fn a_consumer_config_with_only_zookeeper_connect_is_refused_clearly() {
        let dir = std::env::temp_dir().join(format!("kmirror-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let consumer = dir.join("consumer.properties");
        let producer = dir.join("producer.properties");
        std::fs::write(
            &consumer,
            "zookeeper.connect=zk:2181\ngroup.id=mirrorgroup\n",
        )
        .unwrap();
        std::fs::write(&producer, "bootstrap.servers=h:9092\n").unwrap();
        let args = MirrorArgs::clone(&match KmirrorCli::try_parse_from([
            "kmirror",
            "mirror",
            "--consumer.config",
            consumer.to_str().unwrap(),
            "--producer.config",
            producer.to_str().unwrap(),
            "--whitelist",
            "t",
        ])
        .unwrap()
        .command
        {
            KmirrorCommand::Mirror(args) => args,
        });
        let Err(MirrorError::Config(message)) = load_configs(&args) else {
            panic!("accepted a config without bootstrap.servers");
        };
        assert!(message.contains("zookeeper.connect"), "{message}");
        assert!(message.contains("bootstrap.servers"), "{message}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
