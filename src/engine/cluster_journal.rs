//! A run's journal kept in the cluster (`--state cluster`): a chain of ConfigMaps in the
//! state namespace, `runbook-<run id>-journal-0`, `-1`, ..., each holding a slice of the
//! journal's lines in `data["journal.jsonl"]`.
//!
//! Why ConfigMaps: every cluster has them, with no CRD to install and no extra RBAC beyond
//! the namespace; `kubectl get configmap -n runbook -l runbook.dev/journal-part=0` lists the
//! runs and `kubectl get -o yaml` shows a journal as it is. Secrets would hide nothing (the
//! journal is masked before it is written, so no secret reaches it) and would make the
//! journal harder to read. An object may hold at most about 1 MiB (etcd's request limit),
//! so the journal is a chain: a part takes lines until it holds [`PART_TARGET`] bytes, then
//! the next part begins; no part ever holds more than [`MAX_LINE`] plus that.
//!
//! Every append is a replace (PUT) that carries the part's last resourceVersion, so a write
//! based on a stale reading is refused with 409: two runners cannot both add to a journal
//! (the Lease makes that rare; this makes it impossible). A write whose answer was lost and
//! that the client sent again comes back 409 too; the part is then read again, and if it
//! holds exactly what was being written, the write counts as done.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::DynamicObject;

use super::lease::lease_name;
use crate::kube::{Cluster, Kind, KubeError, find_kind};

/// The key of a part's journal lines.
pub const DATA_KEY: &str = "journal.jsonl";

/// Label on every object runbook keeps in the state namespace.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "runbook");

/// Label: which part of its run's journal a ConfigMap is (`0` is the first; listing the
/// runs lists the first parts).
pub const PART_LABEL: &str = "runbook.dev/journal-part";

/// Annotation on every part: the run's id, as `runbook list` shows it (labels cannot hold
/// every id).
pub const RUN_ANNOTATION: &str = "runbook.dev/run-id";

/// Label on parts kept aside by `run --restart`: when they were.
pub const ARCHIVED_LABEL: &str = "runbook.dev/archived";

/// A part takes lines until it holds this many bytes.
pub const PART_TARGET: usize = 256 * 1024;

/// The longest journal line the cluster can keep (with room for the object's metadata
/// under the 1 MiB limit).
pub const MAX_LINE: usize = 700 * 1024;

/// How many 409s that were not another writer's one write takes before it gives up.
const MAX_CONFLICTS: u64 = 8;

/// How long one append may take, retries included, before the run gives up on the
/// cluster: the run stops at its next step boundary rather than hang on an API server that
/// does not answer (the journal's lock is held meanwhile, so this also bounds how long
/// Ctrl-C waits).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(20);

/// An error reading or writing a journal in the cluster.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The API server refused or could not be reached.
    #[error(transparent)]
    Api(Box<KubeError>),
    /// A part holds something runbook did not write.
    #[error("ConfigMap {object}: {problem}")]
    Invalid {
        /// `namespace/name`.
        object: String,
        /// What is wrong.
        problem: String,
    },
    /// Another writer changed the journal since this runner read it.
    #[error(
        "ConfigMap {object} was changed by another writer since this run read it; stopping so that two runners never write one journal"
    )]
    ChangedElsewhere {
        /// `namespace/name`.
        object: String,
    },
    /// The API server did not answer in time.
    #[error("the API server did not answer within {}s writing ConfigMap {object}", WRITE_TIMEOUT.as_secs())]
    TimedOut {
        /// `namespace/name`.
        object: String,
    },
    /// One event is too big for any ConfigMap.
    #[error(
        "a journal event of {size} bytes is more than a ConfigMap can hold ({MAX_LINE} bytes at most)"
    )]
    TooBig {
        /// Its size.
        size: usize,
    },
}

impl From<KubeError> for JournalError {
    fn from(error: KubeError) -> Self {
        JournalError::Api(Box::new(error))
    }
}

/// One ConfigMap of the chain, as last read or written.
#[derive(Debug, Clone)]
struct Part {
    name: String,
    resource_version: String,
    text: String,
}

/// The journal of one run in the cluster, read whole, to be appended to.
#[derive(Debug, Clone)]
pub struct ClusterJournal {
    cluster: Cluster,
    kind: &'static Kind,
    namespace: String,
    run_id: String,
    parts: Vec<Part>,
}

/// The ConfigMap kind from the kinds table.
fn config_map_kind() -> &'static Kind {
    find_kind("ConfigMap").expect("the kinds table has ConfigMap")
}

/// The name of part `index` of run `run_id`'s journal.
pub fn part_name(run_id: &str, index: usize) -> String {
    format!("{}-journal-{index}", lease_name(run_id))
}

impl ClusterJournal {
    /// Reads the journal of `run_id` in `namespace` (empty when there is none yet).
    pub async fn open(
        cluster: &Cluster,
        namespace: &str,
        run_id: &str,
    ) -> Result<Self, JournalError> {
        let kind = config_map_kind();
        let mut parts = Vec::new();
        loop {
            let name = part_name(run_id, parts.len());
            let Some(object) = cluster.get(kind, &name, Some(namespace)).await? else {
                break;
            };
            parts.push(read_part(namespace, &name, object)?);
        }
        Ok(ClusterJournal {
            cluster: cluster.clone(),
            kind,
            namespace: namespace.into(),
            run_id: run_id.into(),
            parts,
        })
    }

    /// The journal's lines, oldest first, as the local journal file holds them.
    pub fn text(&self) -> String {
        self.parts.iter().map(|part| part.text.as_str()).collect()
    }

    /// Whether the cluster holds no journal for this run.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// `namespace/name` of the first part.
    pub fn object(&self) -> String {
        format!("{}/{}", self.namespace, part_name(&self.run_id, 0))
    }

    /// Appends one line (with its newline) and returns once the API server has it.
    pub async fn append(&mut self, line: &str) -> Result<(), JournalError> {
        if line.len() > MAX_LINE {
            return Err(JournalError::TooBig { size: line.len() });
        }
        let object = format!(
            "{}/{}",
            self.namespace,
            part_name(&self.run_id, self.parts.len().saturating_sub(1))
        );
        tokio::time::timeout(WRITE_TIMEOUT, self.append_unbounded(line))
            .await
            .map_err(|_| JournalError::TimedOut { object })?
    }

    async fn append_unbounded(&mut self, line: &str) -> Result<(), JournalError> {
        match self.parts.last() {
            Some(last) if last.text.len() + line.len() <= PART_TARGET || last.text.is_empty() => {
                let index = self.parts.len() - 1;
                let text = format!("{}{line}", last.text);
                let written = self.write_part(index, text, true).await?;
                self.parts[index] = written;
            }
            _ => {
                let index = self.parts.len();
                let written = self.write_part(index, line.to_string(), false).await?;
                self.parts.push(written);
            }
        }
        Ok(())
    }

    /// Writes part `index` to hold `text`: a replace of the part last read when `exists`,
    /// else a create. A 409 is looked into: the part already holding `text` is our own write
    /// whose answer was lost; the part unchanged since we last had it (or still absent) is a
    /// refusal that was not about the object, tried again; anything else is another
    /// writer's.
    async fn write_part(
        &self,
        index: usize,
        text: String,
        exists: bool,
    ) -> Result<Part, JournalError> {
        let name = part_name(&self.run_id, index);
        let ours = exists.then(|| self.parts[index].resource_version.clone());
        let object = self.part_object(&name, index, &text, ours.clone());
        let changed_elsewhere = || JournalError::ChangedElsewhere {
            object: format!("{}/{name}", self.namespace),
        };
        let mut conflicts = 0;
        loop {
            let written = if exists {
                self.cluster
                    .replace(self.kind, &name, Some(&self.namespace), &object)
                    .await
            } else {
                self.cluster
                    .create(self.kind, Some(&self.namespace), &object)
                    .await
            };
            let error = match written {
                Ok(object) => return read_part(&self.namespace, &name, object),
                Err(error) if error.code() == Some(409) => error,
                Err(error) => return Err(error.into()),
            };
            conflicts += 1;
            let now = match self
                .cluster
                .get(self.kind, &name, Some(&self.namespace))
                .await?
            {
                Some(object) => Some(read_part(&self.namespace, &name, object)?),
                None => None,
            };
            match now {
                Some(part) if part.text == text => return Ok(part),
                Some(part) if Some(&part.resource_version) == ours.as_ref() => {}
                None if !exists => {}
                _ => return Err(changed_elsewhere()),
            }
            if conflicts >= MAX_CONFLICTS {
                return Err(error.into());
            }
            tokio::time::sleep(Duration::from_millis(50 * conflicts)).await;
        }
    }

    /// The ConfigMap of part `index` holding `text`.
    fn part_object(
        &self,
        name: &str,
        index: usize,
        text: &str,
        resource_version: Option<String>,
    ) -> DynamicObject {
        let labels = BTreeMap::from([
            (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
            (PART_LABEL.to_string(), index.to_string()),
        ]);
        let annotations = BTreeMap::from([(RUN_ANNOTATION.to_string(), self.run_id.clone())]);
        let config_map = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(self.namespace.clone()),
                labels: Some(labels),
                annotations: Some(annotations),
                resource_version,
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([(DATA_KEY.to_string(), text.to_string())])),
            ..ConfigMap::default()
        };
        let value = serde_json::to_value(&config_map).expect("a ConfigMap serializes");
        serde_json::from_value(value).expect("a ConfigMap is an object")
    }

    /// Keeps the journal aside (`run --restart`): every part is copied under a name with
    /// `stamp` in it, labelled as archived, then deleted; the journal is empty afterwards.
    pub async fn archive(&mut self, stamp: i64) -> Result<Vec<String>, JournalError> {
        let mut kept = Vec::new();
        for (index, part) in self.parts.iter().enumerate() {
            let name = format!("{}-archived-{stamp}-{index}", lease_name(&self.run_id));
            let mut object = self.part_object(&name, index, &part.text, None);
            object
                .metadata
                .labels
                .get_or_insert_default()
                .insert(ARCHIVED_LABEL.into(), stamp.to_string());
            object
                .metadata
                .labels
                .get_or_insert_default()
                .remove(PART_LABEL);
            let mut conflicts = 0;
            loop {
                match self
                    .cluster
                    .create(self.kind, Some(&self.namespace), &object)
                    .await
                {
                    Ok(_) => break,
                    // Already there (a create whose answer was lost), or refused: look.
                    Err(error) if error.code() == Some(409) => {
                        conflicts += 1;
                        if self
                            .cluster
                            .get(self.kind, &name, Some(&self.namespace))
                            .await?
                            .is_some()
                        {
                            break;
                        }
                        if conflicts >= MAX_CONFLICTS {
                            return Err(error.into());
                        }
                    }
                    Err(error) => return Err(error.into()),
                }
            }
            kept.push(format!("{}/{name}", self.namespace));
        }
        // The last part first: a crash in between leaves a shorter chain, never a gap.
        for part in self.parts.iter().rev() {
            self.cluster
                .delete(self.kind, &part.name, Some(&self.namespace), None, false)
                .await?;
        }
        self.parts.clear();
        Ok(kept)
    }
}

/// The ids of the runs whose journals are in `namespace`, from their first parts.
pub async fn runs_in(cluster: &Cluster, namespace: &str) -> Result<Vec<String>, JournalError> {
    let selector = format!("{}={},{PART_LABEL}=0", MANAGED_BY.0, MANAGED_BY.1);
    let objects = match cluster
        .list(config_map_kind(), Some(namespace), Some(&selector), None)
        .await
    {
        Ok(objects) => objects,
        Err(KubeError::NamespaceNotFound(_)) => return Ok(Vec::new()),
        Err(error) => return Err(error.into()),
    };
    let mut runs: Vec<String> = objects
        .iter()
        .filter_map(|object| {
            object["metadata"]["annotations"][RUN_ANNOTATION]
                .as_str()
                .map(String::from)
        })
        .collect();
    runs.sort();
    runs.dedup();
    Ok(runs)
}

/// Reads a part, checking that it is one runbook wrote.
fn read_part(namespace: &str, name: &str, object: serde_json::Value) -> Result<Part, JournalError> {
    let invalid = |problem: String| JournalError::Invalid {
        object: format!("{namespace}/{name}"),
        problem,
    };
    let resource_version = object["metadata"]["resourceVersion"]
        .as_str()
        .ok_or_else(|| invalid("it has no metadata.resourceVersion".into()))?
        .to_string();
    let text = match &object["data"][DATA_KEY] {
        serde_json::Value::String(text) => text.clone(),
        serde_json::Value::Null => {
            return Err(invalid(format!(
                "data.{DATA_KEY} is missing; runbook did not write this journal part"
            )));
        }
        _ => return Err(invalid(format!("data.{DATA_KEY} is not text"))),
    };
    if !text.is_empty() && !text.ends_with('\n') {
        return Err(invalid(format!(
            "data.{DATA_KEY} does not end with a whole line; runbook did not write it so"
        )));
    }
    // Writes are whole lines, so, unlike a local file after a crash, no line may be torn.
    for (number, line) in text.lines().enumerate() {
        if let Err(error) = serde_json::from_str::<super::event::Event>(line) {
            return Err(invalid(format!(
                "line {} of data.{DATA_KEY} is not a journal event: {error}",
                number + 1
            )));
        }
    }
    Ok(Part {
        name: name.into(),
        resource_version,
        text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_names_follow_the_lease_name() {
        assert_eq!(
            part_name("nfs-migrate-1a2b3c4d", 0),
            "runbook-nfs-migrate-1a2b3c4d-journal-0"
        );
        assert_eq!(part_name("Odd_Name-1", 12), "runbook-odd-name-1-journal-12");
    }

    #[test]
    fn a_part_runbook_did_not_write_is_named_with_what_is_wrong() {
        let missing = read_part(
            "runbook",
            "runbook-r-journal-0",
            serde_json::json!({"metadata": {"resourceVersion": "3"}, "data": {"other": "x"}}),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            missing,
            "ConfigMap runbook/runbook-r-journal-0: data.journal.jsonl is missing; runbook did not write this journal part"
        );
        let torn = read_part(
            "runbook",
            "runbook-r-journal-0",
            serde_json::json!({"metadata": {"resourceVersion": "3"}, "data": {DATA_KEY: "{\"a\":1}"}}),
        )
        .unwrap_err()
        .to_string();
        assert!(torn.contains("does not end with a whole line"), "{torn}");
    }

    const FINISHED: &str = "{\"event\":\"run_finished\",\"run\":\"r\",\"ts\":\"2026-12-03T10:00:00Z\",\"status\":\"ok\",\"exit_code\":0}\n";

    #[test]
    fn a_part_holds_its_text_and_version() {
        let part = read_part(
            "runbook",
            "p",
            serde_json::json!({"metadata": {"resourceVersion": "7"}, "data": {DATA_KEY: FINISHED}}),
        )
        .unwrap();
        assert_eq!(
            (part.resource_version.as_str(), part.text.as_str()),
            ("7", FINISHED)
        );
        let not_an_event = read_part(
            "runbook",
            "p",
            serde_json::json!({"metadata": {"resourceVersion": "7"}, "data": {DATA_KEY: format!("{FINISHED}{{}}\n")}}),
        )
        .unwrap_err()
        .to_string();
        assert!(
            not_an_event.contains("line 2 of data.journal.jsonl is not a journal event"),
            "{not_an_event}"
        );
    }
}
