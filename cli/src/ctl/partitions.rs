//! `partition reset`: the operator's decision for a held partition (the source
//! no longer has the offset it was to be read from: a retention gap, a recreated
//! topic), where its mirror goes on.

use clap::Subcommand;
use kmirror_proto::v1::{ResetPartitionRequest, ResetPartitionResponse};
use serde::Serialize;

use super::failure::Failure;
use super::Ctl;
use crate::output::{render, HoldJson};

#[derive(Debug, Subcommand)]
pub enum PartitionCommand {
    /// Set a held partition's checkpoint and clear its hold: its mirror continues from there.
    #[command(
        after_help = "A partition is held when the source no longer has the offset kmirror was to \
read it from: retention (or a deletion of records) removed records before they were mirrored, \
or the topic was deleted and created again under the same name. `kmirrorctl status` shows it \
with the offsets lost; nothing of it is mirrored until it is reset. Needs an operator or \
admin certificate; the reset is audited.\n\n\
--to earliest mirrors everything the source retains now, latest only what is produced from \
now on, an offset starts there (it must lie between the source's log start and end). A \
partition that is not held can be reset only while its flow is paused.\n\n\
Examples:\n  \
        kmirrorctl partition reset dr orders 0 --to earliest\n  \
        kmirrorctl partition reset dr orders 3 --to 5200 -o json"
    )]
    Reset {
        /// The flow that mirrors the partition.
        flow: String,
        /// The source topic.
        topic: String,
        /// The source partition.
        partition: i32,
        /// earliest, latest or a source offset.
        #[arg(long, allow_negative_numbers = true)]
        to: String,
    },
}

/// What `-o json` prints for a reset.
#[derive(Debug, Serialize)]
struct ResetJson {
    flow: String,
    topic: String,
    partition: i32,
    to: String,
    /// The checkpoint before the reset (null when there was none).
    previous_offset: Option<i64>,
    offset: i64,
    /// The hold cleared (null when the partition was not held).
    cleared: Option<HoldJson>,
}

impl Ctl {
    pub(super) async fn partition(&mut self, command: PartitionCommand) -> Result<String, Failure> {
        let PartitionCommand::Reset {
            flow,
            topic,
            partition,
            to,
        } = command;
        let name = format!("{flow}/{topic}/{partition}");
        let answer = self
            .client
            .reset_partition(ResetPartitionRequest {
                flow,
                topic,
                partition,
                to: to.clone(),
            })
            .await
            .map_err(|status| self.failure(format!("cannot reset partition {name}"), status))?
            .into_inner();
        let json = ResetJson {
            flow: answer.flow.clone(),
            topic: answer.topic.clone(),
            partition: answer.partition,
            to,
            previous_offset: (answer.previous_offset >= 0).then_some(answer.previous_offset),
            offset: answer.offset,
            cleared: answer.cleared.as_ref().map(HoldJson::from),
        };
        Ok(render(self.format, &json, |_| reset_text(&name, &answer)))
    }
}

fn reset_text(name: &str, answer: &ResetPartitionResponse) -> String {
    let previous = if answer.previous_offset >= 0 {
        answer.previous_offset.to_string()
    } else {
        "none".to_string()
    };
    let mut text = format!(
        "partition {name} reset: checkpoint {previous} -> {}\n",
        answer.offset
    );
    match &answer.cleared {
        Some(hold) => text.push_str(&format!("hold cleared ({})\n", hold.message)),
        None => text.push_str("it was not held\n"),
    }
    text
}
