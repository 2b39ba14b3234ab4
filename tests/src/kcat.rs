//! Reading a topic with Debian's `kcat`: an independent client (librdkafka through
//! a C program, not rdkafka's Rust bindings) to confirm what the destination holds.
//!
//! kcat prints each record with a format that carries the key's and the value's
//! lengths (`%K`, `%S`, -1 for null) ahead of their bytes, so keys and values are
//! read back byte-exact and null stays apart from empty. kcat's `%h` prints
//! headers as `name=value` separated by commas with no escaping, so headers are
//! parsed back exactly only when names and values hold no ',', '=', tab or newline
//! and no header value is null: tests that compare through kcat use such headers.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, ensure, Context as _, Result};
use tokio::process::Command;

use crate::kafka::{Cluster, ConsumedRecord, TopicRecords};

/// Each record: a header line with the partition, offset, timestamp, key length,
/// value length and headers, then exactly key length + value length bytes, then a
/// newline.
const RECORD_FORMAT: &str = "KCAT\t%p\t%o\t%T\t%K\t%S\t%h\n%k%s\n";
const RECORD_MARK: &[u8] = b"KCAT\t";
const KCAT_TIMEOUT: Duration = Duration::from_secs(300);

/// Reads every record of `topic` (all partitions, or only `partition`) from the
/// beginning to the current end with `kcat -C ... -e`.
pub async fn read_topic(
    cluster: Cluster,
    topic: &str,
    partition: Option<i32>,
) -> Result<TopicRecords> {
    let mut command = Command::new("kcat");
    command
        .args(["-C", "-b", cluster.bootstrap(), "-t", topic])
        .args(["-o", "beginning", "-e", "-q"])
        .args(["-X", "isolation.level=read_committed"])
        .args(["-f", RECORD_FORMAT]);
    if let Some(partition) = partition {
        command.args(["-p", &partition.to_string()]);
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = tokio::time::timeout(KCAT_TIMEOUT, command.output())
        .await
        .with_context(|| format!("kcat reading {topic} did not finish within {KCAT_TIMEOUT:?}"))?
        .context("cannot run kcat (install Debian's kcat package)")?;
    if !output.status.success() {
        bail!(
            "kcat reading {topic} from the {cluster} cluster failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    parse_records(&output.stdout).with_context(|| format!("cannot parse kcat's output for {topic}"))
}

/// Parses kcat output written with [`RECORD_FORMAT`].
pub fn parse_records(output: &[u8]) -> Result<TopicRecords> {
    let mut records = TopicRecords::new();
    let mut position = 0;
    while position < output.len() {
        let (record, next) = parse_record(output, position)?;
        records.entry(record.partition).or_default().push(record);
        position = next;
    }
    for partition_records in records.values_mut() {
        partition_records.sort_by_key(|record| record.offset);
    }
    Ok(records)
}

fn parse_record(output: &[u8], start: usize) -> Result<(ConsumedRecord, usize)> {
    let rest = &output[start..];
    ensure!(
        rest.starts_with(RECORD_MARK),
        "expected a record at byte {start}, found {:?}",
        String::from_utf8_lossy(&rest[..rest.len().min(40)])
    );
    let line_end = rest
        .iter()
        .position(|&byte| byte == b'\n')
        .with_context(|| format!("unterminated record header at byte {start}"))?;
    let line = std::str::from_utf8(&rest[RECORD_MARK.len()..line_end])
        .with_context(|| format!("record header at byte {start} is not UTF-8"))?;
    let fields: Vec<&str> = line.splitn(6, '\t').collect();
    ensure!(
        fields.len() == 6,
        "record header {line:?} has {} fields, not 6",
        fields.len()
    );
    let partition: i32 = fields[0]
        .parse()
        .with_context(|| format!("partition in {line:?}"))?;
    let offset: i64 = fields[1]
        .parse()
        .with_context(|| format!("offset in {line:?}"))?;
    let timestamp: i64 = fields[2]
        .parse()
        .with_context(|| format!("timestamp in {line:?}"))?;
    let key_length: i64 = fields[3]
        .parse()
        .with_context(|| format!("key length in {line:?}"))?;
    let value_length: i64 = fields[4]
        .parse()
        .with_context(|| format!("value length in {line:?}"))?;
    let headers = parse_headers(fields[5]);

    let mut position = start + line_end + 1;
    let mut take = |length: i64| -> Result<Option<Vec<u8>>> {
        if length < 0 {
            return Ok(None);
        }
        let length = usize::try_from(length)?;
        let end = position + length;
        ensure!(end <= output.len(), "record at byte {start} is cut short");
        let bytes = output[position..end].to_vec();
        position = end;
        Ok(Some(bytes))
    };
    let key = take(key_length)?;
    let value = take(value_length)?;
    ensure!(
        output.get(position) == Some(&b'\n'),
        "record at byte {start} does not end where its lengths say"
    );
    let record = ConsumedRecord {
        partition,
        offset,
        key,
        value,
        headers,
        timestamp,
        timestamp_type: None,
    };
    Ok((record, position + 1))
}

fn parse_headers(text: &str) -> Vec<(String, Option<Vec<u8>>)> {
    if text.is_empty() {
        return Vec::new();
    }
    text.split(',')
        .map(|header| match header.split_once('=') {
            Some((name, value)) => (name.to_string(), Some(value.as_bytes().to_vec())),
            None => (header.to_string(), None),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_binary_keys_and_values_by_length() {
        let mut output = Vec::new();
        output.extend_from_slice(b"KCAT\t1\t7\t1700000000000\t3\t4\tseq=7,origin=e2e\n");
        output.extend_from_slice(b"k\n\0");
        output.extend_from_slice(b"KCAT");
        output.extend_from_slice(b"\n");
        output.extend_from_slice(b"KCAT\t1\t5\t1700000000001\t-1\t-1\t\n\n");
        output.extend_from_slice(b"KCAT\t0\t0\t1\t0\t0\t\n\n");
        let records = parse_records(&output).unwrap();
        let partition_one = &records[&1];
        assert_eq!(partition_one.len(), 2);
        assert_eq!(partition_one[0].offset, 5);
        assert_eq!(partition_one[0].key, None);
        assert_eq!(partition_one[0].value, None);
        assert_eq!(partition_one[1].key, Some(b"k\n\0".to_vec()));
        assert_eq!(partition_one[1].value, Some(b"KCAT".to_vec()));
        assert_eq!(
            partition_one[1].headers,
            vec![
                ("seq".to_string(), Some(b"7".to_vec())),
                ("origin".to_string(), Some(b"e2e".to_vec()))
            ]
        );
        assert_eq!(records[&0][0].key, Some(Vec::new()));
        assert_eq!(records[&0][0].value, Some(Vec::new()));
    }

    #[test]
    fn rejects_output_whose_lengths_do_not_match() {
        assert!(parse_records(b"KCAT\t0\t0\t1\t5\t0\t\nab\n").is_err());
        assert!(parse_records(b"garbage").is_err());
    }
}
