//! Producing into a multi-host deployment's source topic from the client host
//! (kcat, one per partition, records numbered per partition) and checking what
//! reached the destination: every number, in order, duplicates counted.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, ensure, Context as _, Result};
use tokio::io::AsyncWriteExt as _;
use tokio::time::Instant;

/// Produces into the source topic from the client host; cheap to clone into a
/// background task.
#[derive(Debug, Clone)]
pub struct Producer {
    pub(crate) namespace: String,
    pub(crate) bootstrap: String,
    pub(crate) topic: String,
    pub(crate) partitions: i32,
}

impl Producer {
    /// Produces `chunk` records per partition every `tick`, `chunks` times, through
    /// one kcat per partition that runs throughout; returns how many records per
    /// partition it produced.
    pub async fn produce_steadily(self, chunk: u64, tick: Duration, chunks: u64) -> Result<u64> {
        let mut kcats = Vec::new();
        for partition in 0..self.partitions {
            let mut child = self.kcat(partition).spawn().context("cannot run kcat")?;
            let stdin = child.stdin.take().expect("kcat's stdin");
            kcats.push((partition, child, stdin));
        }
        let mut next_tick = Instant::now();
        for index in 0..chunks {
            for (partition, _, stdin) in &mut kcats {
                let lines = sequence_lines(*partition, index * chunk, (index + 1) * chunk);
                stdin.write_all(lines.as_bytes()).await?;
                stdin.flush().await?;
            }
            next_tick += tick;
            tokio::time::sleep_until(next_tick).await;
        }
        for (partition, child, stdin) in kcats {
            drop(stdin);
            wait_delivered(partition, child).await?;
        }
        Ok(chunks * chunk)
    }

    /// `kcat -P` into one partition, reading records from its standard input.
    fn kcat(&self, partition: i32) -> tokio::process::Command {
        let mut command = tokio::process::Command::new("ip");
        command
            .args(["netns", "exec", &self.namespace])
            .args(["setpriv", "--pdeathsig", "KILL", "--", "kcat", "-P"])
            .args(["-b", &self.bootstrap, "-t", &self.topic])
            .args(["-p", &partition.to_string()])
            .args(["-X", "enable.idempotence=true", "-X", "linger.ms=20"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        command
    }
}

/// Values `p:n` for `n` in `from..to`, one a line.
fn sequence_lines(partition: i32, from: u64, to: u64) -> String {
    (from..to)
        .map(|sequence| format!("{partition}:{sequence}\n"))
        .collect()
}

/// Waits until a kcat whose input ended delivered everything, or says why not.
async fn wait_delivered(partition: i32, child: tokio::process::Child) -> Result<()> {
    let output = child.wait_with_output().await?;
    let errors = String::from_utf8_lossy(&output.stderr).into_owned();
    if !output.status.success() || errors.contains("ERROR") {
        bail!(
            "kcat producing to partition {partition} failed ({}): {errors}",
            output.status
        );
    }
    Ok(())
}

pub(crate) async fn produce_on(producer: Producer, from: u64, to: u64) -> Result<()> {
    let mut runs = tokio::task::JoinSet::new();
    for partition in 0..producer.partitions {
        let mut child = producer
            .kcat(partition)
            .spawn()
            .context("cannot run kcat")?;
        let mut stdin = child.stdin.take().expect("kcat's stdin");
        runs.spawn(async move {
            stdin
                .write_all(sequence_lines(partition, from, to).as_bytes())
                .await?;
            drop(stdin);
            wait_delivered(partition, child).await
        });
    }
    while let Some(result) = runs.join_next().await {
        result.context("producer task")??;
    }
    Ok(())
}

/// Parses kcat's `%p\t%o\t%s` lines into sequence numbers per partition.
pub fn parse_sequences(output: &str) -> Result<BTreeMap<i32, Vec<u64>>> {
    let mut partitions: BTreeMap<i32, Vec<(i64, u64)>> = BTreeMap::new();
    for line in output.lines().filter(|line| !line.is_empty()) {
        let mut fields = line.split('\t');
        let (Some(partition), Some(offset), Some(value)) =
            (fields.next(), fields.next(), fields.next())
        else {
            bail!("unexpected kcat line {line:?}");
        };
        let partition: i32 = partition.parse().with_context(|| line.to_string())?;
        let offset: i64 = offset.parse().with_context(|| line.to_string())?;
        let (value_partition, sequence) = value
            .split_once(':')
            .with_context(|| format!("value without a sequence number: {line:?}"))?;
        ensure!(
            value_partition.parse::<i32>().ok() == Some(partition),
            "record {line:?} is in the wrong partition"
        );
        partitions
            .entry(partition)
            .or_default()
            .push((offset, sequence.parse().with_context(|| line.to_string())?));
    }
    Ok(partitions
        .into_iter()
        .map(|(partition, mut records)| {
            records.sort_unstable();
            (partition, records.into_iter().map(|(_, seq)| seq).collect())
        })
        .collect())
}

/// What [`check_sequences`] found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SequenceCheck {
    pub records: u64,
    pub duplicates: u64,
    /// Times a partition went back to an earlier record (a resend from a
    /// checkpoint); each is one run of duplicates.
    pub resends: u64,
}

/// Checks, per partition, that the destination holds records `0..produced` by
/// sequence number, the first copy of each in order, and that every other copy
/// repeats one that had arrived already. Counts duplicates and resends.
pub fn check_sequences(
    produced: u64,
    partitions: i32,
    dest: &BTreeMap<i32, Vec<u64>>,
) -> Result<SequenceCheck, String> {
    let mut check = SequenceCheck::default();
    for partition in 0..partitions {
        let empty = Vec::new();
        let sequences = dest.get(&partition).unwrap_or(&empty);
        let mut next = 0;
        let mut previous: Option<u64> = None;
        for (index, &sequence) in sequences.iter().enumerate() {
            if sequence == next {
                next += 1;
            } else if sequence < next {
                check.duplicates += 1;
            } else {
                return Err(format!(
                    "partition {partition}: destination record #{index} is record {sequence}, \
                     but record {next} has not arrived yet (lost or out of order)"
                ));
            }
            if previous.is_some_and(|previous| sequence <= previous) {
                check.resends += 1;
            }
            previous = Some(sequence);
        }
        if next != produced {
            return Err(format!(
                "partition {partition}: records {next}..{produced} are missing from the destination"
            ));
        }
        check.records += produced;
    }
    Ok(check)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(partitions: &[&[u64]]) -> BTreeMap<i32, Vec<u64>> {
        partitions
            .iter()
            .enumerate()
            .map(|(partition, sequences)| (partition as i32, sequences.to_vec()))
            .collect()
    }

    #[test]
    fn a_complete_destination_in_order_passes() {
        let check = check_sequences(3, 2, &dest(&[&[0, 1, 2], &[0, 1, 2]])).unwrap();
        assert_eq!(
            check,
            SequenceCheck {
                records: 6,
                duplicates: 0,
                resends: 0
            }
        );
    }

    #[test]
    fn a_resend_from_a_checkpoint_counts_duplicates_and_one_resend() {
        let check = check_sequences(5, 1, &dest(&[&[0, 1, 2, 3, 1, 2, 3, 4]])).unwrap();
        assert_eq!(check.duplicates, 3);
        assert_eq!(check.resends, 1);
    }

    #[test]
    fn lost_or_reordered_records_fail() {
        assert!(check_sequences(3, 1, &dest(&[&[0, 2, 1]])).is_err());
        assert!(check_sequences(3, 1, &dest(&[&[0, 1]])).is_err());
        assert!(check_sequences(3, 2, &dest(&[&[0, 1, 2]])).is_err());
    }

    #[test]
    fn kcat_lines_become_sequences_in_offset_order() {
        let parsed = parse_sequences("1\t1\t1:5\n0\t0\t0:0\n1\t0\t1:4\n").unwrap();
        assert_eq!(parsed[&0], vec![0]);
        assert_eq!(parsed[&1], vec![4, 5]);
        assert!(parse_sequences("0\t0\t1:0\n").is_err());
    }
}
