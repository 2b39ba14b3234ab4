//! In-process tests of the coordinator against a real etcd (and real Kafka clusters
//! where the local stack runs them): the admin API's typed errors, leader election,
//! fencing, destination topic creation and assignment.
//!
//! Each test uses a fleet name of its own, so tests never share etcd state. A test
//! whose servers are not running says so on stderr and passes without checking
//! anything: start the local stack (`deploy/local/stack up`) to run them.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use etcd_client::{Client, GetOptions, LeaderKey, PutOptions, TxnOp};
use kmirror_common::etcd::EtcdSettings;
use kmirror_common::schema::{encode, Assignment, FlowState, MemberInfo};
use kmirror_common::{Keys, MemberId, Role};
use kmirror_coordinator::store::fenced_write;
use kmirror_coordinator::{Config, Coordinator, CoordinatorError};
use kmirror_proto::tonic::transport::Channel;
use kmirror_proto::tonic::Code;
use kmirror_proto::tonic_health::pb::health_check_response::ServingStatus;
use kmirror_proto::tonic_health::pb::health_client::HealthClient;
use kmirror_proto::tonic_health::pb::HealthCheckRequest;
use kmirror_proto::v1::admin_client::AdminClient;
use kmirror_proto::v1::{
    AddClusterRequest, Cluster, CreateFlowRequest, DeleteFlowRequest, Flow, ListMembersRequest,
    Member, StatusRequest,
};
use kmirror_test_support::etcd::forget_fleet;
use kmirror_test_support::local_stack::{dest_bootstrap, etcd_endpoint, source_bootstrap};
use kmirror_test_support::{unique_name, wait_until};
use rdkafka::admin::{AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(30);

fn settings(fleet: &str) -> EtcdSettings {
    EtcdSettings::plain(vec![etcd_endpoint()], fleet)
}

async fn etcd_or_skip(test: &str) -> Option<Client> {
    match tokio::time::timeout(
        Duration::from_secs(5),
        kmirror_common::etcd::connect(&settings("probe")),
    )
    .await
    {
        Ok(Ok(client)) => Some(client),
        _ => {
            eprintln!(
                "skipping {test}: etcd does not answer at {}",
                etcd_endpoint()
            );
            None
        }
    }
}

async fn kafka_reachable(bootstrap: &str) -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect(bootstrap)
        )
        .await,
        Ok(Ok(_))
    )
}

async fn kafka_or_skip(test: &str) -> bool {
    let reachable =
        kafka_reachable(&source_bootstrap()).await && kafka_reachable(&dest_bootstrap()).await;
    if !reachable {
        eprintln!(
            "skipping {test}: Kafka does not answer at {} and {}",
            source_bootstrap(),
            dest_bootstrap()
        );
    }
    reachable
}

struct Running {
    address: SocketAddr,
    stop: CancellationToken,
    handle: JoinHandle<Result<(), CoordinatorError>>,
}

impl Running {
    async fn start(fleet: &str, id: &str) -> Self {
        let config = Config {
            etcd: settings(fleet),
            member_id: MemberId::new(id).unwrap(),
            listen: "127.0.0.1:0".parse().unwrap(),
            advertise_opt: None,
            lease_ttl: Duration::from_secs(3),
            shutdown_grace: Duration::from_secs(10),
            refresh_interval: Duration::from_millis(500),
            debounce: Duration::from_millis(50),
            kafka_timeout: Duration::from_secs(3),
            // No metrics endpoint.
            metrics_listen: Default::default(),
            metrics_labels: Default::default(),
            // The admin API's own behaviour, without TLS (fleet_tls covers it).
            transport: kmirror_common::tls::TransportSettings {
                insecure: true,
                ..Default::default()
            },
        };
        let coordinator = Coordinator::build(config)
            .await
            .expect("coordinator builds");
        let address = coordinator.local_addr();
        let stop = CancellationToken::new();
        let handle = tokio::spawn(coordinator.run(stop.clone()));
        Self {
            address,
            stop,
            handle,
        }
    }

    async fn admin(&self) -> AdminClient<Channel> {
        AdminClient::connect(format!("http://{}", self.address))
            .await
            .expect("the admin API accepts connections")
    }

    async fn stop(self) {
        self.stop.cancel();
        self.handle
            .await
            .expect("the coordinator task does not panic")
            .expect("the coordinator stops cleanly");
    }
}

/// Polls `check` until it returns `Some` (through [`wait_until`]), failing the
/// test at the deadline.
async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    wait_until(DEADLINE, what, || {
        let found = check();
        async move { found.await.ok_or_else(|| "not yet".to_string()) }
    })
    .await
    .unwrap_or_else(|message| panic!("{message}"))
}

async fn members(admin: &mut AdminClient<Channel>) -> Vec<Member> {
    admin
        .list_members(ListMembersRequest {})
        .await
        .expect("members can be listed")
        .into_inner()
        .members
}

async fn leader_of(admin: &mut AdminClient<Channel>) -> Option<String> {
    let leaders: Vec<String> = members(admin)
        .await
        .into_iter()
        .filter(|member| member.leader)
        .map(|member| member.id)
        .collect();
    assert!(leaders.len() <= 1, "more than one leader: {leaders:?}");
    leaders.into_iter().next()
}

fn cluster(name: &str, bootstrap: &str) -> AddClusterRequest {
    AddClusterRequest {
        cluster: Some(Cluster {
            name: name.to_string(),
            bootstrap_servers: bootstrap.to_string(),
            properties: Default::default(),
        }),
        replace: false,
        ..AddClusterRequest::default()
    }
}

fn flow(name: &str, source: &str, dest: &str, include: &str) -> CreateFlowRequest {
    CreateFlowRequest {
        flow: Some(Flow {
            name: name.to_string(),
            source_cluster: source.to_string(),
            dest_cluster: dest.to_string(),
            include: include.to_string(),
            exclude: String::new(),
            ..Flow::default()
        }),
        replace: false,
    }
}

/// Registers fake workers bound to a lease: the coordinator only needs their keys.
async fn register_workers(
    client: &mut Client,
    keys: &Keys,
    fetchers: &[&str],
    writers: &[&str],
) -> i64 {
    let lease = client.lease_grant(60, None).await.unwrap().id();
    let all = fetchers
        .iter()
        .map(|id| (Role::Fetcher, id))
        .chain(writers.iter().map(|id| (Role::Writer, id)));
    for (role, id) in all {
        let info = MemberInfo {
            id: MemberId::new(*id).unwrap(),
            role,
            address: "127.0.0.1:1".to_string(),
            version: "test".to_string(),
            started_ms: 0,
            metrics_address: None,
        };
        client
            .put(
                keys.member(role, &info.id),
                encode(&info),
                Some(PutOptions::new().with_lease(lease)),
            )
            .await
            .unwrap();
    }
    lease
}

#[tokio::test]
async fn admin_api_rejects_bad_input_with_typed_errors() {
    let Some(mut etcd) = etcd_or_skip("admin_api_rejects_bad_input_with_typed_errors").await else {
        return;
    };
    let fleet = unique_name("coord-errors");
    let coordinator = Running::start(&fleet, "coordinator-errors").await;
    let mut admin = coordinator.admin().await;

    let unreachable = admin
        .add_cluster(cluster("bad", "127.0.0.1:1"))
        .await
        .unwrap_err();
    assert_eq!(unreachable.code(), Code::Unavailable);
    assert!(
        unreachable
            .message()
            .starts_with("cannot reach cluster bad at 127.0.0.1:1: "),
        "{}",
        unreachable.message()
    );

    let invalid_name = admin
        .add_cluster(cluster("a/b", "127.0.0.1:1"))
        .await
        .unwrap_err();
    assert_eq!(invalid_name.code(), Code::InvalidArgument);
    assert!(invalid_name.message().contains("invalid cluster name"));

    let unknown_cluster = admin
        .create_flow(flow("dr", "nope", "other", ".*"))
        .await
        .unwrap_err();
    assert_eq!(unknown_cluster.code(), Code::NotFound);
    assert_eq!(unknown_cluster.message(), "source cluster nope not found");

    let bad_regex = admin
        .create_flow(flow("dr", "a", "b", "orders("))
        .await
        .unwrap_err();
    assert_eq!(bad_regex.code(), Code::InvalidArgument);
    assert!(bad_regex
        .message()
        .starts_with("invalid include regex \"orders(\""));

    let unknown_flow = admin
        .delete_flow(DeleteFlowRequest {
            name: "ghost".to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown_flow.code(), Code::NotFound);
    assert_eq!(unknown_flow.message(), "flow ghost not found");

    let unknown_status = admin
        .status(StatusRequest {
            flow: "ghost".to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown_status.code(), Code::NotFound);

    if kafka_or_skip("the Kafka half of admin_api_rejects_bad_input_with_typed_errors").await {
        admin
            .add_cluster(cluster("src", &source_bootstrap()))
            .await
            .unwrap();
        admin
            .add_cluster(cluster("dst", &dest_bootstrap()))
            .await
            .unwrap();
        let again = admin
            .add_cluster(cluster("src", &source_bootstrap()))
            .await
            .unwrap_err();
        assert_eq!(again.code(), Code::AlreadyExists);
        assert_eq!(again.message(), "cluster src already exists");

        let unknown_dest = admin
            .create_flow(flow("dr", "src", "nope", ".*"))
            .await
            .unwrap_err();
        assert_eq!(unknown_dest.message(), "destination cluster nope not found");

        let same_cluster = admin
            .create_flow(flow("dr", "src", "src", ".*"))
            .await
            .unwrap_err();
        assert_eq!(same_cluster.code(), Code::InvalidArgument);

        // A pattern no topic matches keeps this test away from real topics.
        let include = unique_name("no-such-topic");
        admin
            .create_flow(flow("dr", "src", "dst", &include))
            .await
            .unwrap();
        let duplicate = admin
            .create_flow(flow("dr", "src", "dst", &include))
            .await
            .unwrap_err();
        assert_eq!(duplicate.code(), Code::AlreadyExists);
        assert_eq!(duplicate.message(), "flow dr already exists");
    }

    // The coordinator is still serving after all of that, health included.
    assert!(!members(&mut admin).await.is_empty());
    let channel = Channel::from_shared(format!("http://{}", coordinator.address))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    for service in ["", "kmirror.v1.Admin"] {
        let answer = health
            .check(HealthCheckRequest {
                service: service.to_string(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            answer.status(),
            ServingStatus::Serving,
            "service {service:?}"
        );
    }
    coordinator.stop().await;
    forget_fleet(&mut etcd, &fleet).await;
}

#[tokio::test]
async fn one_coordinator_leads_and_another_takes_over_when_it_stops() {
    let Some(mut etcd) =
        etcd_or_skip("one_coordinator_leads_and_another_takes_over_when_it_stops").await
    else {
        return;
    };
    let fleet = unique_name("coord-election");
    let keys = Keys::new(&fleet);
    let first = Running::start(&fleet, "coordinator-first").await;
    let second = Running::start(&fleet, "coordinator-second").await;
    let mut admin = second.admin().await;

    let leader = wait_for("a leader", || {
        let mut admin = admin.clone();
        async move { leader_of(&mut admin).await }
    })
    .await;
    let (leading, following) = if leader == "coordinator-first" {
        (first, second)
    } else {
        (second, first)
    };
    leading.stop().await;
    admin = following.admin().await;
    let new_leader = wait_for("the other coordinator to lead", || {
        let mut admin = admin.clone();
        let previous = leader.clone();
        async move { leader_of(&mut admin).await.filter(|id| *id != previous) }
    })
    .await;
    assert_ne!(new_leader, leader);

    // A leadership key that is not (or no longer) the elected one fences every write.
    let stale = LeaderKey::new()
        .with_name(keys.election())
        .with_key(format!("{}/stale", keys.election()))
        .with_rev(1);
    let write = TxnOp::put(format!("{}fenced", keys.root()), "x", None);
    let outcome = fenced_write(&mut etcd, &stale, vec![write]).await;
    assert!(
        matches!(outcome, Err(CoordinatorError::Deposed)),
        "{outcome:?}"
    );
    let written = etcd
        .get(format!("{}fenced", keys.root()), None)
        .await
        .unwrap();
    assert_eq!(written.count(), 0);

    following.stop().await;
    let left = etcd
        .get(keys.members(), Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(
        left.count(),
        0,
        "a stopped coordinator revokes its registration"
    );
}

#[tokio::test]
async fn the_leader_creates_destination_topics_and_assigns_every_partition() {
    let test = "the_leader_creates_destination_topics_and_assigns_every_partition";
    let Some(mut etcd) = etcd_or_skip(test).await else {
        return;
    };
    if !kafka_or_skip(test).await {
        return;
    }
    let fleet = unique_name("coord-assign");
    let keys = Keys::new(&fleet);
    let topic = unique_name("coord-topic");

    let source_admin: rdkafka::admin::AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", source_bootstrap())
        .create()
        .unwrap();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let new_topic = NewTopic::new(&topic, 3, TopicReplication::Fixed(1))
        .set("retention.ms", "4321000")
        .set("cleanup.policy", "compact");
    let created = source_admin
        .create_topics([&new_topic], &options)
        .await
        .unwrap();
    assert!(created.iter().all(Result::is_ok), "{created:?}");

    let coordinator = Running::start(&fleet, "coordinator-assign").await;
    let mut admin = coordinator.admin().await;
    register_workers(&mut etcd, &keys, &["fetcher-1", "fetcher-2"], &["writer-1"]).await;
    admin
        .add_cluster(cluster("src", &source_bootstrap()))
        .await
        .unwrap();
    admin
        .add_cluster(cluster("dst", &dest_bootstrap()))
        .await
        .unwrap();
    admin
        .create_flow(flow("dr", "src", "dst", &regex::escape(&topic)))
        .await
        .unwrap();

    let assignments = wait_for("every partition assigned", || {
        let mut etcd = etcd.clone();
        let prefix = keys.flow_assignments(&kmirror_common::FlowName::new("dr").unwrap());
        async move {
            let response = etcd
                .get(prefix, Some(GetOptions::new().with_prefix()))
                .await
                .ok()?;
            let assignments: Vec<Assignment> = response
                .kvs()
                .iter()
                .map(|kv| serde_json::from_slice(kv.value()).unwrap())
                .collect();
            (assignments.len() == 3).then_some(assignments)
        }
    })
    .await;
    let epoch = assignments[0].epoch;
    for assignment in &assignments {
        assert_eq!(assignment.writer.as_str(), "writer-1");
        assert_eq!(
            (assignment.source_partitions, assignment.dest_partitions),
            (3, 3)
        );
        assert_eq!(assignment.epoch, epoch);
    }
    let per_fetcher = assignments
        .iter()
        .filter(|a| a.fetcher.as_str() == "fetcher-1")
        .count();
    assert!(
        per_fetcher == 1 || per_fetcher == 2,
        "unbalanced: {assignments:?}"
    );

    // The destination topic exists with the source's partitions and configs.
    let dest_admin: rdkafka::admin::AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", dest_bootstrap())
        .create()
        .unwrap();
    // Created with the source's configs; a broker under load may describe a
    // topic it has just created before its configs are in place.
    let described = |name: &str| {
        let (dest_admin, options, topic) = (&dest_admin, &options, &topic);
        let name = name.to_string();
        async move {
            let configs = dest_admin
                .describe_configs([&ResourceSpecifier::Topic(topic)], options)
                .await
                .ok()?;
            let resource = configs.into_iter().next()?.ok()?;
            resource.get(&name).and_then(|entry| entry.value.clone())
        }
    };
    wait_for(
        "the destination topic's retention.ms to be the source's",
        || {
            let read = described("retention.ms");
            async move { read.await.filter(|value| value == "4321000") }
        },
    )
    .await;
    assert_eq!(
        described("cleanup.policy").await.as_deref(),
        Some("compact")
    );
    let dest_partitions = dest_admin
        .inner()
        .fetch_metadata(Some(&topic), Duration::from_secs(5))
        .unwrap()
        .topics()[0]
        .partitions()
        .len();
    assert_eq!(dest_partitions, 3);

    // A round's error (a source that answered late under load) is reported and
    // retried: the flow runs once a round goes through.
    let status = wait_until(DEADLINE, "the flow to run", || {
        let mut admin = admin.clone();
        async move {
            let status = admin
                .status(StatusRequest {
                    flow: "dr".to_string(),
                })
                .await
                .map_err(|error| error.to_string())?
                .into_inner();
            match status.flows.first() {
                Some(flow) if flow.state == "running" => Ok(status),
                _ => Err(format!("{status:?}")),
            }
        }
    })
    .await
    .unwrap_or_else(|message| panic!("{message}"));
    let flow_status = &status.flows[0];
    assert_eq!(flow_status.partitions.len(), 3);
    assert!(flow_status
        .partitions
        .iter()
        .all(|p| p.log_end_offset == 0 && p.lag == 0));

    let flow_state: FlowState = wait_for("the flow state", || {
        let mut etcd = etcd.clone();
        let key = keys.flow_state(&kmirror_common::FlowName::new("dr").unwrap());
        async move {
            let response = etcd.get(key, None).await.ok()?;
            let kv = response.kvs().first()?;
            serde_json::from_slice(kv.value()).ok()
        }
    })
    .await;
    assert_eq!(flow_state.topics, vec![topic.clone()]);
    assert_eq!(flow_state.error, "");

    // Deleting the flow removes everything the leader wrote for it.
    admin
        .delete_flow(DeleteFlowRequest {
            name: "dr".to_string(),
        })
        .await
        .unwrap();
    wait_for("the flow's assignments and state to go", || {
        let mut etcd = etcd.clone();
        let assignments = keys.assignments();
        let states = keys.flow_states();
        async move {
            let assigned = etcd
                .get(assignments, Some(GetOptions::new().with_prefix()))
                .await
                .ok()?;
            let stated = etcd
                .get(states, Some(GetOptions::new().with_prefix()))
                .await
                .ok()?;
            (assigned.count() == 0 && stated.count() == 0).then_some(())
        }
    })
    .await;
    coordinator.stop().await;

    let _ = source_admin.delete_topics(&[&topic], &options).await;
    let _ = dest_admin.delete_topics(&[&topic], &options).await;
    forget_fleet(&mut etcd, &fleet).await;
}
