//! `kmirrorctl audit`: the coordinator's audit log, newest first (who called
//! what on which object, how it ended, when). Needs an operator or admin
//! certificate.

use kmirror_proto::v1::audit_client::AuditClient;
use kmirror_proto::v1::ListAuditRequest;
use serde::Serialize;

use super::failure::Failure;
use super::Ctl;
use crate::output::{render, render_table};

/// One entry as `-o json` and `-o yaml` print it.
#[derive(Debug, Serialize)]
struct AuditEntryJson {
    time: String,
    time_ms: i64,
    identity: String,
    call: String,
    object: String,
    outcome: String,
    remote: String,
    /// What happened, in words (an event, the target of a reset).
    detail: String,
}

#[derive(Debug, Serialize)]
struct AuditJson {
    entries: Vec<AuditEntryJson>,
}

fn rfc3339(time_ms: i64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(time_ms.max(0) as u64);
    humantime::format_rfc3339_millis(time).to_string()
}

impl Ctl {
    pub(super) async fn audit(&self, limit: u32) -> Result<String, Failure> {
        let entries = AuditClient::with_interceptor(self.channel.clone(), self.bearer.clone())
            .list_audit(ListAuditRequest { limit })
            .await
            .map_err(|status| self.failure("cannot read the audit log", status))?
            .into_inner()
            .entries;
        let value = AuditJson {
            entries: entries
                .into_iter()
                .map(|entry| AuditEntryJson {
                    time: rfc3339(entry.time_ms),
                    time_ms: entry.time_ms,
                    identity: entry.identity,
                    call: entry.call,
                    object: entry.object,
                    outcome: entry.outcome,
                    remote: entry.remote,
                    detail: entry.detail,
                })
                .collect(),
        };
        Ok(render(self.format, &value, |wide| {
            let mut headers = vec!["TIME", "IDENTITY", "CALL", "OBJECT", "OUTCOME"];
            if wide {
                headers.push("REMOTE");
            }
            headers.push("DETAIL");
            let rows: Vec<Vec<String>> = value
                .entries
                .iter()
                .map(|entry| {
                    let mut row = vec![
                        entry.time.clone(),
                        entry.identity.clone(),
                        entry
                            .call
                            .rsplit('/')
                            .next()
                            .unwrap_or_default()
                            .to_string(),
                        entry.object.clone(),
                        entry.outcome.clone(),
                    ];
                    if wide {
                        row.push(entry.remote.clone());
                    }
                    row.push(entry.detail.clone());
                    row
                })
                .collect();
            render_table(&headers, &rows)
        }))
    }
}
