//! Series that come and go with the fleet's state: a stopped partition shows in
//! `kmirror_partition_stopped` with its reason, and a deleted flow's series leave
//! every member's `/metrics`.

use std::time::Duration;

use anyhow::Result;
use kmirror_tests::kafka::{create_topic, produce, Cluster, OutRecord};
use kmirror_tests::observability::{http_get, members, scrape};
use kmirror_tests::{unique_name, Fleet, FleetOptions};

const TIMEOUT: Duration = Duration::from_secs(120);

/// The `/metrics` URL of every fetcher and writer of the fleet.
async fn worker_metrics_urls(fleet: &Fleet) -> Result<Vec<(String, String)>> {
    Ok(members(fleet)
        .await?
        .into_values()
        .filter(|info| info.role.to_string() != "coordinator")
        .filter_map(|info| {
            info.metrics_address
                .map(|address| (info.id.to_string(), address))
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_partition_is_a_series_with_its_reason_and_a_deleted_flow_leaves_no_series(
) -> Result<()> {
    let topic = unique_name("metrics-life");
    let flow = unique_name("metrics-life-flow");
    create_topic(Cluster::Source, &topic, 1, &[]).await?;
    create_topic(Cluster::Dest, &topic, 1, &[("max.message.bytes", "20000")]).await?;
    let record = |size: usize| OutRecord {
        partition: Some(0),
        key: Some(b"k".to_vec()),
        value: Some(vec![b'x'; size]),
        ..OutRecord::default()
    };
    produce(Cluster::Source, &topic, vec![record(100), record(50_000)]).await?;
    let fleet = Fleet::start(FleetOptions {
        fetchers: 1,
        writers: 1,
        ..FleetOptions::new("metrics-life")
    })
    .await;
    fleet.add_clusters().await;
    fleet.create_flow(&flow, &regex::escape(&topic), None).await;
    let urls = worker_metrics_urls(&fleet).await?;
    assert_eq!(urls.len(), 2, "{urls:?}");

    fleet
        .wait_until(TIMEOUT, "the stopped partition's series", || async {
            // The reason holds commas and parentheses, which the test's parser
            // splits on: read the exposition lines themselves.
            let series_start = format!(
                r#"kmirror_partition_stopped{{flow="{flow}",topic="{topic}",partition="0",reason="record at offset 1 of"#
            );
            for (_, url) in &urls {
                let (_, body) = http_get(url, "/metrics")
                    .await
                    .map_err(|error| format!("{error:#}"))?;
                let stopped: Vec<&str> = body
                    .lines()
                    .filter(|line| line.starts_with("kmirror_partition_stopped{"))
                    .collect();
                if let [line] = stopped.as_slice() {
                    return if line.starts_with(&series_start)
                        && line.contains("(max.message.bytes=20000)")
                        && line.ends_with("} 1")
                    {
                        Ok(())
                    } else {
                        Err(line.to_string())
                    };
                }
            }
            Err("no kmirror_partition_stopped series of the partition".to_string())
        })
        .await;

    fleet.ctl(["flow", "delete", &flow]).await.assert_success();
    fleet
        .wait_until(
            TIMEOUT,
            "no series of the deleted flow on any member",
            || async {
                for (id, url) in &urls {
                    let scraped = scrape(url).await.map_err(|error| format!("{error:#}"))?;
                    let left: Vec<&str> = scraped
                        .samples
                        .iter()
                        .filter(|sample| sample.labels.get("flow") == Some(flow.as_str()))
                        .map(|sample| sample.metric.as_str())
                        .collect();
                    if !left.is_empty() {
                        return Err(format!("{id} still has {left:?}"));
                    }
                }
                Ok(())
            },
        )
        .await;
    Ok(())
}
