//! An in-memory Kafka for the round's unit tests: clusters with topics,
//! watermarks and configs, answering as [`ClusterClient`](crate::kafka::ClusterClient)
//! does and remembering the writes the round made.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use kmirror_common::schema::ClusterSpec;
use kmirror_common::ClusterName;

use crate::error::CoordinatorError;
use crate::kafka::{ClusterAdmin, KafkaSide, TopicConfigs, TopicListing, TopicToCreate};

/// Clusters by name; a cluster never set up answers as unreachable.
#[derive(Clone, Default)]
pub struct FakeKafka {
    clusters: Arc<Mutex<BTreeMap<ClusterName, Arc<Mutex<FakeCluster>>>>>,
}

/// One cluster's topics, and what the round did to it.
#[derive(Debug, Clone, Default)]
pub struct FakeCluster {
    /// Kafka's cluster id.
    pub id: Option<String>,
    /// Why the cluster cannot be reached, when it cannot.
    pub unreachable_opt: Option<String>,
    pub topics: BTreeMap<String, FakeTopic>,
    /// Topics whose metadata is incomplete, with the reason.
    pub unavailable: BTreeMap<String, String>,
    /// Topics the cluster refuses to create, with the reason.
    pub refused_creations: BTreeMap<String, String>,
    /// Why growing a topic fails, when it does.
    pub refused_growth_opt: Option<String>,
    pub created: Vec<TopicToCreate>,
    /// (topic, new partition count)
    pub grown: Vec<(String, i32)>,
    /// (topic, its dynamic configs as set)
    pub altered: Vec<(String, BTreeMap<String, String>)>,
}

/// A topic: per partition its (low, high) watermarks, its configs.
#[derive(Debug, Clone, Default)]
pub struct FakeTopic {
    pub watermarks: Vec<(i64, i64)>,
    /// The configs a copy of the topic carries over.
    pub configs: Vec<(String, String)>,
    /// The configs set on the topic itself.
    pub dynamic_configs: BTreeMap<String, String>,
    /// Per partition, the offset of the first record at or after a timestamp:
    /// (timestamp, offset) pairs in timestamp order.
    pub offsets_by_time: BTreeMap<i32, Vec<(i64, i64)>>,
}

impl FakeTopic {
    /// A topic whose partitions hold `low..high`.
    pub fn with_watermarks(watermarks: &[(i64, i64)]) -> Self {
        Self {
            watermarks: watermarks.to_vec(),
            ..Self::default()
        }
    }

    /// A topic of `partitions` empty partitions.
    pub fn empty(partitions: i32) -> Self {
        Self::with_watermarks(&vec![(0, 0); partitions.max(0) as usize])
    }
}

impl FakeKafka {
    pub fn with_cluster(self, name: &str, cluster: FakeCluster) -> Self {
        self.clusters.lock().unwrap().insert(
            ClusterName::new(name).unwrap(),
            Arc::new(Mutex::new(cluster)),
        );
        self
    }

    /// The cluster as it is now.
    pub fn cluster_now(&self, name: &str) -> FakeCluster {
        self.clusters.lock().unwrap()[&ClusterName::new(name).unwrap()]
            .lock()
            .unwrap()
            .clone()
    }
}

impl KafkaSide for FakeKafka {
    type Cluster = FakeClusterClient;

    fn cluster(&self, spec: &ClusterSpec) -> Result<FakeClusterClient, CoordinatorError> {
        let mut clusters = self.clusters.lock().unwrap();
        let cluster = clusters
            .entry(spec.name.clone())
            .or_insert_with(|| {
                Arc::new(Mutex::new(FakeCluster {
                    unreachable_opt: Some("no such cluster".to_string()),
                    ..FakeCluster::default()
                }))
            })
            .clone();
        Ok(FakeClusterClient {
            name: spec.name.clone(),
            cluster,
        })
    }
}

/// A client of one fake cluster.
pub struct FakeClusterClient {
    name: ClusterName,
    cluster: Arc<Mutex<FakeCluster>>,
}

impl FakeClusterClient {
    fn unreachable(&self, cause: &str) -> CoordinatorError {
        CoordinatorError::ClusterUnreachable {
            cluster: self.name.to_string(),
            bootstrap: "fake".to_string(),
            cause: cause.to_string(),
        }
    }

    /// Answers with `answer(cluster)`, or as unreachable.
    fn reachable<T>(
        &self,
        answer: impl FnOnce(&mut FakeCluster) -> T,
    ) -> Result<T, CoordinatorError> {
        let mut cluster = self.cluster.lock().unwrap();
        match &cluster.unreachable_opt {
            Some(cause) => Err(self.unreachable(cause)),
            None => Ok(answer(&mut cluster)),
        }
    }
}

impl ClusterAdmin for FakeClusterClient {
    fn cluster_id(&self) -> impl Future<Output = Option<String>> + Send {
        let id = self.reachable(|cluster| cluster.id.clone()).ok().flatten();
        async move { id }
    }

    fn list_topics(&self) -> impl Future<Output = Result<TopicListing, CoordinatorError>> + Send {
        let listing = self.reachable(|cluster| TopicListing {
            partitions: cluster
                .topics
                .iter()
                .map(|(name, topic)| (name.clone(), topic.watermarks.len() as i32))
                .collect(),
            unavailable: cluster.unavailable.clone(),
        });
        async move { listing }
    }

    fn topic_configs(
        &self,
        topics: &[String],
    ) -> impl Future<Output = Result<TopicConfigs<Vec<(String, String)>>, CoordinatorError>> + Send
    {
        let configs = self.reachable(|cluster| {
            topics
                .iter()
                .map(|name| {
                    let configs = cluster
                        .topics
                        .get(name)
                        .map(|topic| topic.configs.clone())
                        .ok_or_else(|| "Unknown topic or partition".to_string());
                    (name.clone(), configs)
                })
                .collect()
        });
        async move { configs }
    }

    fn dynamic_topic_configs(
        &self,
        topics: &[String],
    ) -> impl Future<Output = Result<TopicConfigs<BTreeMap<String, String>>, CoordinatorError>> + Send
    {
        let configs = self.reachable(|cluster| {
            topics
                .iter()
                .map(|name| {
                    let configs = cluster
                        .topics
                        .get(name)
                        .map(|topic| topic.dynamic_configs.clone())
                        .ok_or_else(|| "Unknown topic or partition".to_string());
                    (name.clone(), configs)
                })
                .collect()
        });
        async move { configs }
    }

    fn replace_topic_configs(
        &self,
        topic: &str,
        configs: &BTreeMap<String, String>,
    ) -> impl Future<Output = Result<(), String>> + Send {
        let outcome = self
            .reachable(|cluster| match cluster.topics.get_mut(topic) {
                Some(found) => {
                    found.dynamic_configs = configs.clone();
                    cluster.altered.push((topic.to_string(), configs.clone()));
                    Ok(())
                }
                None => Err("Unknown topic or partition".to_string()),
            })
            .map_err(|error| error.to_string())
            .and_then(|outcome| outcome);
        async move { outcome }
    }

    fn offsets_for_time(
        &self,
        partitions: Vec<(String, i32)>,
        timestamp_ms: i64,
    ) -> impl Future<Output = Result<Vec<i64>, CoordinatorError>> + Send {
        let offsets = self.reachable(|cluster| {
            partitions
                .iter()
                .map(|(topic, partition)| {
                    cluster
                        .topics
                        .get(topic)
                        .and_then(|topic| topic.offsets_by_time.get(partition))
                        .and_then(|by_time| {
                            by_time
                                .iter()
                                .find(|(at_ms, _)| *at_ms >= timestamp_ms)
                                .map(|(_, offset)| *offset)
                        })
                        .unwrap_or(-1)
                })
                .collect()
        });
        async move { offsets }
    }

    fn create_topics(
        &self,
        topics: &[TopicToCreate],
    ) -> impl Future<Output = Result<BTreeMap<String, Result<(), String>>, CoordinatorError>> + Send
    {
        let outcomes = self.reachable(|cluster| {
            topics
                .iter()
                .map(|topic| {
                    if let Some(cause) = cluster.refused_creations.get(&topic.name) {
                        return (topic.name.clone(), Err(cause.clone()));
                    }
                    cluster.created.push(topic.clone());
                    let created = FakeTopic {
                        dynamic_configs: topic.configs.iter().cloned().collect(),
                        ..FakeTopic::empty(topic.partitions)
                    };
                    cluster.topics.entry(topic.name.clone()).or_insert(created);
                    (topic.name.clone(), Ok(()))
                })
                .collect()
        });
        async move { outcomes }
    }

    fn create_partitions(
        &self,
        topic: &str,
        count: i32,
    ) -> impl Future<Output = Result<(), String>> + Send {
        let outcome = self
            .reachable(|cluster| {
                if let Some(cause) = &cluster.refused_growth_opt {
                    return Err(cause.clone());
                }
                let found = cluster
                    .topics
                    .get_mut(topic)
                    .ok_or_else(|| "Unknown topic or partition".to_string())?;
                found.watermarks.resize(count.max(0) as usize, (0, 0));
                cluster.grown.push((topic.to_string(), count));
                Ok(())
            })
            .map_err(|error| error.to_string())
            .and_then(|outcome| outcome);
        async move { outcome }
    }

    fn watermarks(
        &self,
        partitions: Vec<(String, i32)>,
    ) -> impl Future<Output = Vec<Option<(i64, i64)>>> + Send {
        let watermarks = self
            .reachable(|cluster| {
                partitions
                    .iter()
                    .map(|(topic, partition)| {
                        cluster
                            .topics
                            .get(topic)
                            .and_then(|topic| topic.watermarks.get(*partition as usize))
                            .copied()
                    })
                    .collect()
            })
            .unwrap_or_else(|_| vec![None; partitions.len()]);
        async move { watermarks }
    }
}
