//! `offsets translate`: source positions in the destination, through the
//! coordinator's reading of the fleet's offset map.

use kmirror_proto::v1::{OffsetTranslation, SourcePosition, TranslateOffsetsRequest};
use serde::Serialize;

use super::failure::Failure;
use super::{Ctl, Outcome};
use crate::output::{render, render_table};

/// One position in `-o json`.
#[derive(Debug, Serialize)]
struct TranslationJson {
    topic: String,
    partition: i32,
    source_offset: i64,
    translated: bool,
    dest_topic: String,
    dest_partition: Option<i32>,
    dest_offset: Option<i64>,
    reason: Option<String>,
}

#[derive(Debug, Serialize)]
struct TranslationsJson {
    flow: String,
    group: Option<String>,
    map_topic: String,
    translations: Vec<TranslationJson>,
}

impl From<&OffsetTranslation> for TranslationJson {
    fn from(translation: &OffsetTranslation) -> Self {
        Self {
            topic: translation.topic.clone(),
            partition: translation.partition,
            source_offset: translation.source_offset,
            translated: translation.translated,
            dest_topic: translation.dest_topic.clone(),
            dest_partition: translation.translated.then_some(translation.dest_partition),
            dest_offset: translation.translated.then_some(translation.dest_offset),
            reason: (!translation.translated).then(|| translation.reason.clone()),
        }
    }
}

impl Ctl {
    pub(super) async fn translate(
        &mut self,
        flow: String,
        group_opt: Option<String>,
        topic_opt: Option<String>,
        partitions: Vec<i32>,
        offsets: Vec<i64>,
    ) -> Result<Outcome, Failure> {
        if partitions.len() != offsets.len() {
            return Err(Failure {
                what: "cannot translate offsets".into(),
                cause: format!(
                    "give one --offset per --partition ({} partitions, {} offsets)",
                    partitions.len(),
                    offsets.len()
                ),
            });
        }
        let positions = match &topic_opt {
            Some(topic) => partitions
                .iter()
                .zip(&offsets)
                .map(|(&partition, &offset)| SourcePosition {
                    topic: topic.clone(),
                    partition,
                    offset,
                })
                .collect(),
            None => Vec::new(),
        };
        let answer = self
            .client
            .translate_offsets(TranslateOffsetsRequest {
                flow: flow.clone(),
                group: group_opt.clone().unwrap_or_default(),
                positions,
            })
            .await
            .map_err(|status| {
                self.failure(format!("cannot translate offsets of flow {flow}"), status)
            })?
            .into_inner();
        let json = TranslationsJson {
            flow,
            group: group_opt,
            map_topic: answer.map_topic.clone(),
            translations: answer.translations.iter().map(Into::into).collect(),
        };
        let stdout = render(self.format, &json, |_| {
            translations_text(&answer.translations)
        });
        let untranslated = answer
            .translations
            .iter()
            .filter(|translation| !translation.translated)
            .count();
        Ok(Outcome {
            stdout,
            degraded_opt: (untranslated > 0).then(|| {
                format!(
                    "{untranslated} of {} positions could not be translated",
                    answer.translations.len()
                )
            }),
        })
    }
}

fn translations_text(translations: &[OffsetTranslation]) -> String {
    let rows: Vec<Vec<String>> = translations
        .iter()
        .map(|translation| {
            let (dest_partition, dest_offset, note) = if translation.translated {
                (
                    translation.dest_partition.to_string(),
                    translation.dest_offset.to_string(),
                    String::new(),
                )
            } else {
                ("-".into(), "-".into(), translation.reason.clone())
            };
            vec![
                translation.topic.clone(),
                translation.partition.to_string(),
                translation.source_offset.to_string(),
                translation.dest_topic.clone(),
                dest_partition,
                dest_offset,
                note,
            ]
        })
        .collect();
    render_table(
        &[
            "TOPIC",
            "PARTITION",
            "SOURCE-OFFSET",
            "DEST-TOPIC",
            "DEST-PARTITION",
            "DEST-OFFSET",
            "NOTE",
        ],
        &rows,
    )
}
