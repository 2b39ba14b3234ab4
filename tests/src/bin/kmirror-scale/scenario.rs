//! The run, phase by phase: etcd's background load, topics and fleet, the flow
//! and the load, the settled fleet, the steady window, the kill, the loss check,
//! the background again and the clean-up (topics, offset map, etcd prefix) also
//! when a phase failed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use kmirror_common::Role;
use kmirror_tests::fleet::{DEST_CLUSTER, SOURCE_CLUSTER};
use kmirror_tests::kafka::{create_topic, delete_topic, read_all, WatermarkReader};
use kmirror_tests::observability::{samples, scrape, sum};
use kmirror_tests::status::StatusView;
use kmirror_tests::{stack, unique_name, Cluster, Fleet, FleetOptions};
use serde_json::Value;

use crate::etcd_load::{EtcdCounters, FleetWrites};
use crate::load::{preload, probe, SteadyLoad};
use crate::memory::MemoryLog;
use crate::positions::{Partition, Positions};
use crate::report::{LossCheck, Recovery, Report};
use crate::Args;

/// How often memory is sampled during the window.
const MEMORY_SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// The whole run; `Ok(false)` when a check failed (records lost, status not clean).
pub async fn run(args: Args) -> Result<bool> {
    let started = Instant::now();
    let stack = stack();
    let run_name = unique_name("scale");
    let topics: Vec<String> = (0..args.topics)
        .map(|index| format!("{run_name}-t{index:02}"))
        .collect();
    let partitions: Vec<Partition> = topics
        .iter()
        .flat_map(|topic| {
            (0..args.partitions_per_topic).map(move |partition| (topic.clone(), partition))
        })
        .collect();

    eprintln!("scale: etcd's background load over {:?}", args.background);
    let background_before = EtcdCounters::rates_over(&stack.etcd_endpoint, args.background).await?;
    eprintln!(
        "scale: creating {} topics of {} partitions",
        args.topics, args.partitions_per_topic
    );
    for topic in &topics {
        create_topic(Cluster::Source, topic, args.partitions_per_topic, &[]).await?;
    }
    let backlog = match args.backlog {
        0 => 0,
        per_partition => {
            eprintln!("scale: loading a backlog of {per_partition} records per partition");
            preload(
                &stack.source_bootstrap,
                partitions.clone(),
                per_partition,
                args.value_size,
            )
            .await?
        }
    };
    eprintln!(
        "scale: starting {} coordinators, {} fetchers, {} writers",
        args.coordinators, args.fetchers, args.writers
    );
    let fleet = Fleet::start(fleet_options(&args)).await;
    let mut report = Report {
        partitions: partitions.len(),
        ..Report::default()
    };
    let outcome = measure(&args, &fleet, &run_name, &partitions, backlog, &mut report).await;
    if outcome.is_ok() {
        eprintln!("scale: stopping the fleet");
        fleet.sigterm_all().await;
        eprintln!(
            "scale: etcd's background load again over {:?}",
            args.background
        );
        match EtcdCounters::rates_over(&stack.etcd_endpoint, args.background).await {
            Ok(after) => report.etcd_background = background_before.mean(&after),
            Err(error) => eprintln!("scale: cannot read etcd's load after the run: {error:#}"),
        }
    }
    let map_topic = kmirror_common::offset_map::map_topic(fleet.name());
    let keep = args.keep_failed && matches!(outcome, Ok(false));
    if keep {
        eprintln!("scale: a check failed: the topics {run_name}-t* stay for inspection");
    }
    for (cluster, topic) in topics
        .iter()
        .filter(|_| !keep)
        .flat_map(|topic| [(Cluster::Source, topic), (Cluster::Dest, topic)])
        .chain([(Cluster::Dest, &map_topic)])
    {
        if let Err(error) = delete_topic(cluster, topic).await {
            eprintln!("scale: {error:#}");
        }
    }
    if outcome.is_err() {
        eprintln!("{}", fleet.log_paths());
    }
    drop(fleet);
    let passed = outcome?;
    report.total = started.elapsed();
    report.title = format!(
        "kmirror scale run: {} coordinators, {} fetchers, {} writers, {} partitions",
        args.coordinators,
        args.fetchers,
        args.writers,
        partitions.len()
    );
    report.settings = settings(&args);
    let page = report.markdown();
    println!("{page}");
    let out = args.out.clone().unwrap_or_else(|| {
        stack.workspace_dir.join(format!(
            "bench/results/scale-{}f{}w-{}p.md",
            args.fetchers,
            args.writers,
            partitions.len()
        ))
    });
    std::fs::write(&out, page).with_context(|| format!("cannot write {}", out.display()))?;
    eprintln!("scale: wrote {}", out.display());
    Ok(passed)
}

fn fleet_options(args: &Args) -> FleetOptions {
    let role_env = [
        (Role::Fetcher, &args.fetcher_env),
        (Role::Writer, &args.writer_env),
    ]
    .into_iter()
    .flat_map(|(role, env)| {
        env.iter()
            .map(move |(name, value)| (role, name.clone(), value.clone()))
    })
    .collect();
    FleetOptions {
        coordinators: args.coordinators,
        fetchers: args.fetchers,
        writers: args.writers,
        refresh_interval: args.refresh_interval,
        checkpoint_interval: args.checkpoint_interval,
        retry_backoff: args.retry_backoff,
        lease_ttl: args.lease_ttl,
        writer_properties: args.producer_properties.clone(),
        ready_timeout: Duration::from_secs(600),
        env: args.env.clone(),
        role_env,
        tls: !args.insecure,
        ..FleetOptions::new("scale")
    }
}

fn settings(args: &Args) -> Vec<(String, String)> {
    let pairs = |pairs: &[(String, String)]| match pairs.is_empty() {
        true => "defaults".to_string(),
        false => pairs
            .iter()
            .map(|(key, value)| format!("`{key}={value}`"))
            .collect::<Vec<_>>()
            .join(", "),
    };
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(&stack().workspace_dir)
        .output()
        .ok()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string())
        .unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut settings = vec![
        ("command".to_string(), format!("`bench/scale {}`", std::env::args().skip(1).collect::<Vec<_>>().join(" "))),
        ("commit".to_string(), commit),
        (
            "machine".to_string(),
            format!(
                "{} cores, load average at the end {} (shared with other builds), {}",
                std::thread::available_parallelism().map_or(0, |cores| cores.get()),
                load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
                std::env::var("KMIRROR_BIN_DIR").map_or("debug build".to_string(), |dir| format!("members from {dir}"))
            ),
        ),
        (
            "members".to_string(),
            format!(
                "{} coordinators, {} fetchers, {} writers, {}",
                args.coordinators,
                args.fetchers,
                args.writers,
                if args.insecure { "plaintext" } else { "mutual TLS" }
            ),
        ),
        (
            "partitions".to_string(),
            format!("{} topics x {} partitions", args.topics, args.partitions_per_topic),
        ),
        (
            "load".to_string(),
            format!(
                "{} records/s of {} B values over all partitions, {} at a time per partition, after a backlog of {} records per partition; {}",
                args.rate,
                args.value_size,
                args.load_burst,
                args.backlog,
                args.load_producers.map_or("one producer per 250 partitions".to_string(), |count| format!("{count} producers"))
            ),
        ),
        (
            "timings".to_string(),
            format!(
                "lease TTL {:?}, checkpoint interval {:?}, refresh interval {:?}, retry backoff {:?}, window {:?}",
                args.lease_ttl, args.checkpoint_interval, args.refresh_interval, args.retry_backoff, args.window
            ),
        ),
        ("source (consumer) properties".to_string(), pairs(&args.source_properties)),
        ("producer properties".to_string(), pairs(&args.producer_properties)),
        ("fetcher environment".to_string(), pairs(&args.fetcher_env)),
        ("writer environment".to_string(), pairs(&args.writer_env)),
        ("every member's environment".to_string(), pairs(&args.env)),
    ];
    if !args.note.is_empty() {
        settings.insert(0, ("what for".to_string(), args.note.clone()));
    }
    settings
}

/// Everything between the fleet's start and its stop.
async fn measure(
    args: &Args,
    fleet: &Fleet,
    run_name: &str,
    partitions: &[Partition],
    backlog: u64,
    report: &mut Report,
) -> Result<bool> {
    let stack = stack();
    let mut source_add = vec![
        "cluster".to_string(),
        "add".to_string(),
        SOURCE_CLUSTER.to_string(),
        "--bootstrap".to_string(),
        stack.source_bootstrap.clone(),
    ];
    for (key, value) in &args.source_properties {
        source_add.extend(["--property".to_string(), format!("{key}={value}")]);
    }
    fleet.ctl(&source_add).await.assert_success();
    fleet
        .ctl([
            "cluster",
            "add",
            DEST_CLUSTER,
            "--bootstrap",
            &stack.dest_bootstrap,
        ])
        .await
        .assert_success();
    let flow = format!("{run_name}-flow");
    let load = SteadyLoad::start(
        &stack.source_bootstrap,
        partitions.to_vec(),
        args.rate,
        args.value_size,
        args.load_burst,
        args.load_producers,
    )?;
    let load_started = Instant::now();
    let flow_created = Instant::now();
    fleet
        .create_flow(&flow, &format!("^{run_name}-t[0-9]+$"), None)
        .await;
    let positions = Positions::new(fleet.etcd(), fleet.name(), &flow)?;
    let all: BTreeSet<Partition> = partitions.iter().cloned().collect();
    eprintln!("scale: waiting for {} partitions to run", all.len());
    positions
        .wait_running_past(
            &all,
            &BTreeMap::new(),
            &BTreeSet::new(),
            flow_created,
            Duration::from_secs(900),
        )
        .await?;
    report.start_to_running = flow_created.elapsed();
    eprintln!(
        "scale: every partition runs after {:.1?}; waiting for the assignments to settle",
        report.start_to_running
    );
    wait_settled(&positions, args.settle, Duration::from_secs(600)).await?;

    steady_window(args, fleet, report).await?;
    if args.kill_fetchers + args.kill_writers > 0 {
        report.recovery_opt =
            Some(kill_and_recover(args, fleet, &positions, &load, &mut report.memory).await?);
    }
    report.memory.sample(fleet);

    report.load_latency = load.latencies_since(load_started);
    report.load_producers = load.producers;
    eprintln!("scale: stopping the load");
    let probes = report
        .recovery_opt
        .as_ref()
        .map_or(0, |recovery| recovery.probes as u64);
    let produced = load.stop()? + backlog + probes;
    let check = check_nothing_lost(fleet, &flow, partitions, &positions).await?;
    if check.source_records != i64::try_from(produced)? {
        bail!(
            "the load delivered {produced} records but the source holds {}",
            check.source_records
        );
    }
    let passed = check.partitions_short == 0 && check.status_clean;
    report.loss = check;
    Ok(passed)
}

/// Waits until no assignment changed for `quiet` (the planner settled).
async fn wait_settled(positions: &Positions, quiet: Duration, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let epochs =
        |positions: &BTreeMap<Partition, crate::positions::Position>| -> BTreeMap<Partition, u64> {
            positions
                .iter()
                .map(|(partition, position)| (partition.clone(), position.epoch))
                .collect()
        };
    let mut last = epochs(&positions.read().await?);
    let mut unchanged_since = Instant::now();
    while unchanged_since.elapsed() < quiet {
        if Instant::now() >= deadline {
            bail!("the assignments kept changing for {timeout:?}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = epochs(&positions.read().await?);
        if now != last {
            last = now;
            unchanged_since = Instant::now();
        }
    }
    Ok(())
}

/// The leader's metrics address, from `kmirrorctl members -o json`.
async fn leader_metrics(fleet: &Fleet) -> Result<(String, String)> {
    let output = fleet.ctl(["members", "-o", "json"]).await;
    let json: Value = serde_json::from_str(&output.stdout)
        .with_context(|| format!("`members -o json` is not JSON: {output}"))?;
    let leader = json["members"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|member| member["leader"].as_bool() == Some(true))
        .with_context(|| format!("no leader in {output}"))?;
    let id = leader["id"].as_str().unwrap_or_default().to_string();
    let url = leader["metrics_url"]
        .as_str()
        .with_context(|| format!("leader {id} has no metrics address"))?
        .trim_end_matches("/metrics")
        .to_string();
    Ok((id, url))
}

/// (rounds, seconds summed, buckets) of the leader's round histogram.
async fn round_histogram(url: &str) -> Result<(f64, f64, Vec<(f64, f64)>)> {
    let scraped = scrape(url).await?;
    let name = "kmirror_reconcile_duration_seconds";
    let buckets = samples(&scraped, name, &[])
        .into_iter()
        .find_map(|sample| match &sample.value {
            prometheus_parse::Value::Histogram(counts) => Some(
                counts
                    .iter()
                    .map(|count| (count.less_than, count.count))
                    .collect(),
            ),
            _ => None,
        })
        .unwrap_or_default();
    Ok((
        sum(&scraped, &format!("{name}_count"), &[]),
        sum(&scraped, &format!("{name}_sum"), &[]),
        buckets,
    ))
}

/// etcd's load, the leader's rounds and every member's memory over the window.
async fn steady_window(args: &Args, fleet: &Fleet, report: &mut Report) -> Result<()> {
    let stack = stack();
    let (leader, leader_url) = leader_metrics(fleet).await?;
    eprintln!(
        "scale: steady window of {:?} (leader {leader})",
        args.window
    );
    let rounds_before = round_histogram(&leader_url).await?;
    let etcd_before = EtcdCounters::scrape(&stack.etcd_endpoint).await?;
    let writes =
        FleetWrites::start(fleet.etcd(), kmirror_common::Keys::new(fleet.name()).root()).await?;
    let window_end = Instant::now() + args.window;
    while Instant::now() < window_end {
        report.memory.sample(fleet);
        tokio::time::sleep(
            MEMORY_SAMPLE_EVERY.min(window_end.saturating_duration_since(Instant::now())),
        )
        .await;
    }
    report.memory.sample(fleet);
    report.fleet_writes = writes.finish().await?;
    report.etcd_window =
        etcd_before.rates_until(&EtcdCounters::scrape(&stack.etcd_endpoint).await?);
    let (leader_after, _) = leader_metrics(fleet).await?;
    if leader_after != leader {
        bail!("the leader changed during the window ({leader} → {leader_after})");
    }
    let rounds_after = round_histogram(&leader_url).await?;
    let rounds = rounds_after.0 - rounds_before.0;
    report.rounds = rounds.max(0.0) as u64;
    if rounds > 0.0 {
        report.round_mean = Duration::from_secs_f64((rounds_after.1 - rounds_before.1) / rounds);
        report.round_max_bound = rounds_after
            .2
            .iter()
            .zip(
                rounds_before
                    .2
                    .iter()
                    .map(|(_, count)| *count)
                    .chain(std::iter::repeat(0.0)),
            )
            .find(|((_, after), before)| after - before >= rounds)
            .map(|((bound, _), _)| *bound);
    }
    Ok(())
}

/// Kills members with SIGKILL, writes one probe record to each partition they
/// held, and measures until every one of those partitions has its probe mirrored
/// by live members (its checkpoint past the probe): a partition runs again only
/// once there is something to mirror, and the probes make that moment the kill's
/// rather than the load's next record.
async fn kill_and_recover(
    args: &Args,
    fleet: &Fleet,
    positions: &Positions,
    load: &SteadyLoad,
    memory: &mut MemoryLog,
) -> Result<Recovery> {
    let victims: Vec<String> = (0..args.kill_fetchers)
        .map(|index| format!("fetcher-{}", index + 1))
        .chain((0..args.kill_writers).map(|index| format!("writer-{}", index + 1)))
        .collect();
    let avoid: BTreeSet<String> = victims.iter().cloned().collect();
    memory.sample(fleet);
    let before = positions.read().await?;
    let affected: BTreeSet<Partition> = before
        .iter()
        .filter(|(_, position)| {
            avoid.contains(&position.fetcher) || avoid.contains(&position.writer)
        })
        .map(|(partition, _)| partition.clone())
        .collect();
    eprintln!(
        "scale: kill -9 {} ({} partitions)",
        victims.join(" "),
        affected.len()
    );
    let killed_at = Instant::now();
    for victim in &victims {
        fleet.kill(victim);
    }
    let bootstrap = stack().source_bootstrap.clone();
    let (to_probe, value_size) = (affected.clone(), args.value_size);
    let probes =
        tokio::task::spawn_blocking(move || probe(&bootstrap, &to_probe, value_size, killed_at))
            .await
            .map_err(|error| anyhow!("the probes' task failed: {error}"))??;
    let probes_delivered = probes
        .values()
        .map(|(_, delivered)| *delivered)
        .max()
        .unwrap_or_default();
    eprintln!(
        "scale: {} probes in the source {probes_delivered:.1?} after the kill",
        probes.len()
    );
    let past: BTreeMap<Partition, i64> = probes
        .iter()
        .map(|(partition, (offset, _))| (partition.clone(), *offset))
        .collect();
    let resumed = positions
        .wait_running_past(
            &affected,
            &past,
            &avoid,
            killed_at,
            Duration::from_secs(300),
        )
        .await?;
    let mut slowest: Vec<(&Partition, &Duration)> = resumed.iter().collect();
    slowest.sort_unstable_by(|a, b| b.1.cmp(a.1));
    for ((topic, partition), took) in slowest.iter().take(5) {
        eprintln!("scale: {topic}/{partition} ran again after {took:.1?}");
    }
    let mut times: Vec<Duration> = resumed.values().copied().collect();
    times.sort_unstable();
    // What the fleet took beyond the source: from each probe's delivery to the
    // source until it was mirrored.
    let mut after_source: Vec<Duration> = resumed
        .iter()
        .filter_map(|(partition, took)| {
            let (_, delivered) = probes.get(partition)?;
            Some(took.saturating_sub(*delivered))
        })
        .collect();
    after_source.sort_unstable();
    let recovery = Recovery {
        killed: victims,
        lease_ttl: args.lease_ttl,
        partitions: affected.len(),
        all_resumed: times.last().copied().unwrap_or_default(),
        median_resumed: times.get(times.len() / 2).copied().unwrap_or_default(),
        load_latency: load.latencies_since(killed_at),
        probes: probes.len(),
        probes_delivered,
        slowest_after_source: after_source.last().copied().unwrap_or_default(),
        median_after_source: after_source
            .get(after_source.len() / 2)
            .copied()
            .unwrap_or_default(),
    };
    eprintln!(
        "scale: every affected partition ran again after {:.1?}",
        recovery.all_resumed
    );
    Ok(recovery)
}

/// Once the load stopped: every partition caught up, the destination holds at
/// least the source's records in every partition, and `kmirrorctl status` agrees.
async fn check_nothing_lost(
    fleet: &Fleet,
    flow: &str,
    partitions: &[Partition],
    positions: &Positions,
) -> Result<LossCheck> {
    let topics: BTreeSet<&String> = partitions.iter().map(|(topic, _)| topic).collect();
    let source = WatermarkReader::new(Cluster::Source)?;
    let dest = WatermarkReader::new(Cluster::Dest)?;
    let mut source_counts: BTreeMap<Partition, i64> = BTreeMap::new();
    let mut ends: BTreeMap<Partition, i64> = BTreeMap::new();
    for topic in &topics {
        for watermarks in source.watermarks(topic).await? {
            source_counts.insert(
                ((*topic).clone(), watermarks.partition),
                watermarks.high - watermarks.low,
            );
            ends.insert(((*topic).clone(), watermarks.partition), watermarks.high);
        }
    }
    eprintln!("scale: waiting for every partition to catch up");
    let catch_up = positions
        .wait_caught_up(&ends, Duration::from_secs(600))
        .await?;
    let mut check = LossCheck {
        catch_up,
        ..LossCheck::default()
    };
    for topic in &topics {
        let dest_counts: BTreeMap<i32, i64> = dest
            .watermarks(topic)
            .await?
            .iter()
            .map(|watermarks| (watermarks.partition, watermarks.high - watermarks.low))
            .collect();
        let mut short = Vec::new();
        for ((_, partition), count) in source_counts.iter().filter(|((name, _), _)| name == *topic)
        {
            let dest_count = dest_counts.get(partition).copied().unwrap_or(0);
            check.source_records += count;
            check.dest_records += dest_count;
            if dest_count < *count {
                check.partitions_short += 1;
                short.push(*partition);
                eprintln!("scale: {topic}/{partition} holds {dest_count} records in the destination, {count} in the source");
            }
        }
        if !short.is_empty() {
            explain_missing(topic, &short).await?;
        }
    }
    check.duplicates = check.dest_records - check.source_records;
    let status = fleet.ctl(["status", "--flow", flow, "-o", "json"]).await;
    check.status_clean =
        match StatusView::parse(&status.stdout).and_then(|view| view.flow(flow).cloned()) {
            Ok(flow_status) => {
                flow_status.partitions.len() == partitions.len()
                    && flow_status
                        .partitions
                        .iter()
                        .all(|partition| partition.lag == 0 && partition.error.is_empty())
            }
            Err(error) => {
                eprintln!("scale: cannot read the status: {error:#}");
                false
            }
        };
    Ok(check)
}

/// For each partition with fewer records in the destination: which source
/// records (by key) the destination partition lacks, and where they landed.
async fn explain_missing(topic: &str, short: &[i32]) -> Result<()> {
    let source = read_all(Cluster::Source, topic).await?;
    let dest = read_all(Cluster::Dest, topic).await?;
    let mut where_in_dest: BTreeMap<&[u8], Vec<(i32, i64)>> = BTreeMap::new();
    for (partition, records) in &dest {
        for record in records {
            if let Some(key) = &record.key {
                where_in_dest
                    .entry(key)
                    .or_default()
                    .push((*partition, record.offset));
            }
        }
    }
    for partition in short {
        let missing: Vec<String> = source
            .get(partition)
            .into_iter()
            .flatten()
            .filter_map(|record| {
                let key = record.key.as_deref()?;
                let found = where_in_dest.get(key);
                let in_own = found.is_some_and(|places| places.iter().any(|(p, _)| p == partition));
                (!in_own).then(|| {
                    format!(
                        "offset {} key {} (in the destination at {:?})",
                        record.offset,
                        String::from_utf8_lossy(key),
                        found
                    )
                })
            })
            .collect();
        eprintln!(
            "scale: {topic}/{partition}: {} source records not in the same destination partition: {}",
            missing.len(),
            missing.join("; ")
        );
    }
    Ok(())
}
