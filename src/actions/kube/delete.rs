//! `kube.delete`: by name, or by selector with a `max:`; optionally waits until gone.

use std::time::{Duration, Instant};

use kube::api::PropagationPolicy;
use serde::{Deserialize, Serialize};

use super::selectors::render_selectors;
use super::{FieldSelector, KindName, LabelSelector, describe, list_matching};
use crate::actions::{Action, Check, Outcome, Preview, StepContext};
use crate::diagnostic::ValueError;
use crate::kube::{Cluster, Kind, find_kind};
use crate::syntax::{HumanDuration, Setting, Templated};

/// How dependents of a deleted object are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Propagation {
    /// Delete now; the garbage collector deletes dependents afterwards.
    Background,
    /// Delete dependents first.
    Foreground,
    /// Leave dependents.
    Orphan,
}

impl Propagation {
    const ALL: [Propagation; 3] = [
        Propagation::Background,
        Propagation::Foreground,
        Propagation::Orphan,
    ];
}

impl std::fmt::Display for Propagation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

impl Setting for Propagation {
    const EXPECTED: &'static str = "Background, Foreground or Orphan";

    fn from_number(number: u64) -> Result<Self, ValueError> {
        Err(Self::not_a_value(&number.to_string()))
    }

    fn from_negative(number: i64) -> Result<Self, ValueError> {
        Err(Self::not_a_value(&number.to_string()))
    }

    fn from_text(text: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|propagation| propagation.to_string() == text.trim())
    }

    fn not_a_value(text: &str) -> ValueError {
        ValueError::new(
            format!("`{{key}}` must be Background, Foreground or Orphan, not `{text}`"),
            "for example `{key}: Foreground` (dependents first); the default is Background",
        )
    }
}

/// The owner of the objects to delete: `{kind: Deployment, name: x}` selects the pods of that
/// Deployment (through its ReplicaSets), whatever their labels say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Owner {
    /// `Deployment`, `ReplicaSet`, `Job`, ...
    pub kind: KindName,
    /// Its name.
    pub name: String,
}

/// `kube.delete: {kind, name | selector | owner, namespace, max, wait, timeout, propagation}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, try_from = "DeleteFields")]
pub struct KubeDelete {
    /// The kind.
    pub kind: KindName,
    /// One object by name...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// ...or every object matching a label selector...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// ...and/or a field selector...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_selector: Option<FieldSelector>,
    /// ...and/or the objects owned by this object (directly or through a ReplicaSet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    /// The namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// With a selector: refuse (exit 3) when more objects match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Templated<u32>>,
    /// Wait until the objects are gone.
    #[serde(default, skip_serializing_if = "Templated::is_false")]
    pub wait: Templated<bool>,
    /// How long to wait (default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Templated<HumanDuration>>,
    /// Background (default), Foreground or Orphan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagation: Option<Templated<Propagation>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteFields {
    kind: KindName,
    name: Option<String>,
    selector: Option<LabelSelector>,
    field_selector: Option<FieldSelector>,
    owner: Option<Owner>,
    namespace: Option<String>,
    max: Option<Templated<u32>>,
    #[serde(default)]
    wait: Templated<bool>,
    timeout: Option<Templated<HumanDuration>>,
    propagation: Option<Templated<Propagation>>,
}

impl TryFrom<DeleteFields> for KubeDelete {
    type Error = String;
    fn try_from(fields: DeleteFields) -> Result<Self, String> {
        let by_selector =
            fields.selector.is_some() || fields.field_selector.is_some() || fields.owner.is_some();
        if fields.name.is_some() && by_selector {
            return Err(
                "give either `name:` or `selector:`/`field_selector:`/`owner:`, not both".into(),
            );
        }
        if fields.name.is_none() && !by_selector {
            return Err("say what to delete: `name:`, or `selector:`/`owner:` with `max:`".into());
        }
        if by_selector && fields.max.is_none() {
            return Err(
                "a delete by selector or owner needs `max:`, the most objects it may delete (a selector that matches too much is how outages start)"
                    .into(),
            );
        }
        Ok(KubeDelete {
            kind: fields.kind,
            name: fields.name,
            selector: fields.selector,
            field_selector: fields.field_selector,
            owner: fields.owner,
            namespace: fields.namespace,
            max: fields.max,
            wait: fields.wait,
            timeout: fields.timeout,
            propagation: fields.propagation,
        })
    }
}

/// Default limit of `wait: true`.
const DEFAULT_WAIT: Duration = Duration::from_secs(300);

/// The objects a delete is about, as they are now.
struct Matches {
    kind: &'static Kind,
    namespace: Option<String>,
    /// Name and whether it is already being deleted (has a deletionTimestamp).
    objects: Vec<(String, bool)>,
    /// How they were chosen, for messages.
    chosen_by: String,
}

impl Matches {
    fn names(&self) -> Vec<&str> {
        self.objects.iter().map(|(name, _)| name.as_str()).collect()
    }
}

/// The uids of an owner and of the ReplicaSets it owns: a Deployment's pods are owned by its
/// ReplicaSets, not by the Deployment itself. Empty when the owner does not exist.
async fn owner_uids(
    cluster: &Cluster,
    owner_kind: &Kind,
    name: &str,
    namespace: Option<&str>,
) -> anyhow::Result<Vec<String>> {
    let Some(owner) = cluster.get(owner_kind, name, namespace).await? else {
        return Ok(Vec::new());
    };
    let uid = |object: &serde_json::Value| {
        object
            .pointer("/metadata/uid")
            .and_then(|uid| uid.as_str())
            .map(str::to_string)
    };
    let mut uids: Vec<String> = uid(&owner).into_iter().collect();
    if owner_kind.kind == "Deployment"
        && let Some(replica_sets) = find_kind("ReplicaSet")
    {
        let owned: Vec<String> = cluster
            .list(replica_sets, namespace, None, None)
            .await?
            .iter()
            .filter(|set| is_owned_by(set, &uids))
            .filter_map(uid)
            .collect();
        uids.extend(owned);
    }
    Ok(uids)
}

fn is_owned_by(object: &serde_json::Value, owners: &[String]) -> bool {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(|references| references.as_array())
        .is_some_and(|references| {
            references
                .iter()
                .filter_map(|reference| reference.get("uid").and_then(|uid| uid.as_str()))
                .any(|uid| owners.iter().any(|owner| owner == uid))
        })
}

fn is_deleting(object: &serde_json::Value) -> bool {
    object
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|ts| !ts.is_null())
}

impl KubeDelete {
    /// `max:`, rendered; `None` for a delete by name.
    fn max(&self, cx: &StepContext<'_>) -> anyhow::Result<Option<usize>> {
        Ok(cx
            .optional_setting("max", self.max.as_ref())?
            .map(|max| max as usize))
    }

    /// What a plan says of the templated options, rendered: `` (`max: {{ limit }}` is 3)``.
    fn rendered_notes(&self, cx: &StepContext<'_>) -> anyhow::Result<String> {
        let mut notes = Vec::new();
        if let Some(max) = &self.max {
            notes.extend(max.rendered_note("max", &cx.setting("max", max)?));
        }
        notes.extend(
            self.wait
                .rendered_note("wait", &cx.setting("wait", &self.wait)?),
        );
        if let Some(timeout) = &self.timeout {
            notes.extend(timeout.rendered_note("timeout", &cx.setting("timeout", timeout)?));
        }
        if let Some(propagation) = &self.propagation {
            notes.extend(
                propagation.rendered_note("propagation", &cx.setting("propagation", propagation)?),
            );
        }
        Ok(if notes.is_empty() {
            String::new()
        } else {
            format!(" ({})", notes.join(", "))
        })
    }

    async fn matches(&self, cx: &StepContext<'_>, cluster: &Cluster) -> anyhow::Result<Matches> {
        let kind = self.kind.resolve(cx).await?;
        let namespace = cx.render_optional(self.namespace.as_deref())?;
        let (objects, chosen_by) = match &self.name {
            Some(name) => {
                let name = cx.render(name)?;
                let found = cluster.get(kind, &name, namespace.as_deref()).await?;
                let objects = found
                    .map(|object| (name.clone(), is_deleting(&object)))
                    .into_iter()
                    .collect();
                (
                    objects,
                    describe(
                        kind,
                        &name,
                        cluster.namespace_for(kind, namespace.as_deref()),
                    ),
                )
            }
            None => {
                let (labels, fields) =
                    render_selectors(cx, self.selector.as_ref(), self.field_selector.as_ref())?;
                // Everything rendered and checked before the first request.
                let owner = match &self.owner {
                    Some(owner) => Some((owner.kind.resolve(cx).await?, cx.render(&owner.name)?)),
                    None => None,
                };
                let mut items = list_matching(
                    cluster,
                    kind,
                    namespace.as_deref(),
                    labels.as_deref(),
                    fields.as_deref(),
                )
                .await?;
                let label_and_field: Vec<String> = labels.into_iter().chain(fields).collect();
                let mut selectors = Vec::new();
                if !label_and_field.is_empty() {
                    selectors.push(format!("matching `{}`", label_and_field.join(",")));
                }
                if let Some((owner_kind, owner_name)) = owner {
                    let owners =
                        owner_uids(cluster, owner_kind, &owner_name, namespace.as_deref()).await?;
                    items.retain(|item| is_owned_by(item, &owners));
                    selectors.push(format!("owned by {} {owner_name}", owner_kind.kind));
                }
                let objects = items
                    .iter()
                    .filter_map(|item| {
                        let name = item.pointer("/metadata/name")?.as_str()?;
                        Some((name.to_string(), is_deleting(item)))
                    })
                    .collect();
                let place = cluster
                    .namespace_for(kind, namespace.as_deref())
                    .map(|ns| format!(" in namespace {ns}"))
                    .unwrap_or_default();
                (
                    objects,
                    format!("{}s {}{place}", kind.kind, selectors.join(", ")),
                )
            }
        };
        Ok(Matches {
            kind,
            namespace,
            objects,
            chosen_by,
        })
    }

    async fn wait_until_gone(
        &self,
        cx: &StepContext<'_>,
        cluster: &Cluster,
        matches: &Matches,
    ) -> anyhow::Result<()> {
        let limit = cx
            .optional_setting("timeout", self.timeout.as_ref())?
            .map_or(DEFAULT_WAIT, |timeout| timeout.0);
        let started = Instant::now();
        let mut pause = Duration::from_millis(100);
        loop {
            let mut remaining = Vec::new();
            for name in matches.names() {
                if let Some(object) = cluster
                    .get(matches.kind, name, matches.namespace.as_deref())
                    .await?
                {
                    let finalizers = object
                        .pointer("/metadata/finalizers")
                        .and_then(|f| f.as_array())
                        .map(|f| {
                            f.iter()
                                .filter_map(|f| f.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        })
                        .filter(|f| !f.is_empty());
                    remaining.push(match finalizers {
                        Some(finalizers) => format!("{name} (finalizers: {finalizers})"),
                        None => name.to_string(),
                    });
                }
            }
            if remaining.is_empty() {
                return Ok(());
            }
            if started.elapsed() >= limit {
                anyhow::bail!(
                    "still there after {}: {}",
                    HumanDuration(limit),
                    remaining.join(", ")
                );
            }
            tokio::time::sleep(pause.min(limit.saturating_sub(started.elapsed()))).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }
}

#[async_trait::async_trait]
impl Action for KubeDelete {
    /// Every write goes through the cluster client.
    fn reports_its_writes(&self) -> bool {
        true
    }

    async fn check(&self, cx: &StepContext<'_>) -> anyhow::Result<Check> {
        let matches = self.matches(cx, cx.cluster()?).await?;
        if matches.objects.is_empty() {
            return Ok(Check::Done(if self.name.is_some() {
                format!("{} is already absent", matches.chosen_by)
            } else {
                format!("no {} exist", matches.chosen_by)
            }));
        }
        if !cx.setting("wait", &self.wait)? && matches.objects.iter().all(|(_, deleting)| *deleting)
        {
            return Ok(Check::Done(format!(
                "{} already being deleted",
                matches.names().join(", ")
            )));
        }
        Ok(Check::Pending)
    }

    async fn guard(&self, cx: &StepContext<'_>) -> anyhow::Result<Option<String>> {
        let Some(max) = self.max(cx)? else {
            return Ok(None);
        };
        let matches = self.matches(cx, cx.cluster()?).await?;
        Ok((matches.objects.len() > max).then(|| {
            format!(
                "{} {} match, more than max {max}: {}",
                matches.objects.len(),
                matches.chosen_by,
                matches.names().join(", ")
            )
        }))
    }

    async fn plan(&self, cx: &StepContext<'_>) -> anyhow::Result<Preview> {
        let matches = self.matches(cx, cx.cluster()?).await?;
        let mut summary = if self.name.is_some() {
            format!("delete {}", matches.chosen_by)
        } else {
            format!(
                "delete {} {}: {}",
                matches.objects.len(),
                matches.chosen_by,
                matches.names().join(", ")
            )
        };
        if cx.setting("wait", &self.wait)? {
            summary.push_str(", and wait until gone");
        }
        summary.push_str(&self.rendered_notes(cx)?);
        Ok(Preview {
            summary,
            diff: None,
        })
    }

    async fn apply(&self, cx: &StepContext<'_>) -> anyhow::Result<Outcome> {
        let cluster = cx.cluster()?;
        // Every option rendered and checked before the first request that changes anything.
        let (max, wait) = (self.max(cx)?, cx.setting("wait", &self.wait)?);
        cx.optional_setting("timeout", self.timeout.as_ref())?;
        let propagation = cx.optional_setting("propagation", self.propagation.as_ref())?;
        let matches = self.matches(cx, cluster).await?;
        // The guard counted before; more may match now, and the limit holds at the moment of
        // deleting too.
        if let Some(max) = max
            && matches.objects.len() > max
        {
            return Err(crate::actions::Refusal(format!(
                "{} {} match, more than max {max}: {}",
                matches.objects.len(),
                matches.chosen_by,
                matches.names().join(", ")
            ))
            .into());
        }
        let propagation = propagation.map(|propagation| match propagation {
            Propagation::Background => PropagationPolicy::Background,
            Propagation::Foreground => PropagationPolicy::Foreground,
            Propagation::Orphan => PropagationPolicy::Orphan,
        });
        let mut deleted = Vec::new();
        for name in matches.names() {
            if cluster
                .delete(
                    matches.kind,
                    name,
                    matches.namespace.as_deref(),
                    propagation.clone(),
                    false,
                )
                .await?
            {
                deleted.push(name.to_string());
            }
        }
        if wait {
            self.wait_until_gone(cx, cluster, &matches).await?;
        }
        Ok(Outcome::new(
            !deleted.is_empty(),
            serde_json::json!({"deleted": deleted}),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn propagation_is_one_of_three_words_or_a_template() {
        let read = |yaml: &str| -> Result<Templated<Propagation>, String> {
            serde_saphyr::from_str(yaml).map_err(|error| error.to_string())
        };
        assert_eq!(
            read("Foreground"),
            Ok(Templated::Literal(Propagation::Foreground))
        );
        assert_eq!(
            read("'{{ policy }}'"),
            Ok(Templated::Template("{{ policy }}".into()))
        );
        let error = read("Sideways").unwrap_err();
        assert!(
            error.contains("must be Background, Foreground or Orphan, not `Sideways`"),
            "{error}"
        );
        assert!(read("1").is_err());
        assert_eq!(Propagation::from_text("Orphan"), Some(Propagation::Orphan));
        assert_eq!(Propagation::from_text("orphan"), None);
        assert_eq!(
            serde_json::to_value(Propagation::Background).ok(),
            Some(serde_json::json!("Background"))
        );
    }
}
