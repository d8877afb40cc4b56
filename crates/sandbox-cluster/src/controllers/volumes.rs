//! Volumes and claims: the binder (a claim binds to the volume it names, or to a matching
//! available one), the protection finalizers (a claim stays while a pod uses it, a volume
//! while it is bound), and what happens to a volume whose claim is gone (reclaim policy
//! `Retain`: Released, keeping its `claimRef`; `Delete`: the volume is deleted).

use serde_json::{Value, json};

use super::super::admission::{PV_PROTECTION, PVC_PROTECTION};
use super::super::cluster::State;
use super::super::meta;
use super::super::store::ObjectKey;
use kube_kinds::{Kind, find_kind};

struct Kinds {
    volumes: &'static Kind,
    claims: &'static Kind,
    pods: &'static Kind,
}

/// Runs the protection controllers and the binder.
pub fn reconcile(state: &mut State) -> bool {
    let (Some(volumes), Some(claims), Some(pods)) = (
        find_kind("PersistentVolume"),
        find_kind("PersistentVolumeClaim"),
        find_kind("Pod"),
    ) else {
        return false;
    };
    let kinds = Kinds {
        volumes,
        claims,
        pods,
    };
    let mut changed = false;
    changed |= protect_claims(state, &kinds);
    changed |= bind_claims(state, &kinds);
    changed |= update_volumes(state, &kinds);
    changed
}

/// Whether a scheduled pod that has not finished mounts the claim. Unscheduled pods do not
/// count, as in the real pvc-protection controller: the kubelet never starts them (the
/// scheduler refuses a pod whose claim is being deleted), so a Deployment that recreates
/// its pods at once cannot keep a deleted claim alive.
fn claim_in_use(state: &State, kinds: &Kinds, namespace: &str, claim: &str) -> bool {
    state.store.list(kinds.pods, Some(namespace)).any(|pod| {
        let finished = matches!(
            meta::str_at(pod, &["status", "phase"]),
            Some("Succeeded" | "Failed")
        );
        let scheduled =
            meta::str_at(pod, &["spec", "nodeName"]).is_some_and(|node| !node.is_empty());
        scheduled
            && !finished
            && pod
                .pointer("/spec/volumes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|volume| {
                    volume
                        .pointer("/persistentVolumeClaim/claimName")
                        .and_then(Value::as_str)
                        == Some(claim)
                })
    })
}

fn protect_claims(state: &mut State, kinds: &Kinds) -> bool {
    let claims: Vec<Value> = state.store.list(kinds.claims, None).cloned().collect();
    let mut changed = false;
    for mut claim in claims {
        if meta::is_deleting(&claim) {
            if meta::has_finalizer(&claim, PVC_PROTECTION)
                && !claim_in_use(state, kinds, meta::namespace(&claim), meta::name(&claim))
            {
                meta::remove_finalizer(&mut claim, PVC_PROTECTION);
                changed |= state.put(kinds.claims, claim);
            }
        } else if meta::add_finalizer(&mut claim, PVC_PROTECTION) {
            changed |= state.put(kinds.claims, claim);
        }
    }
    changed
}

/// Bytes in a quantity (`1Mi`, `10Gi`, `500M`, `1e3`); `None` if it does not parse.
pub fn quantity(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text
        .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "Ki" => 1024.0,
        "Mi" => 1024.0_f64.powi(2),
        "Gi" => 1024.0_f64.powi(3),
        "Ti" => 1024.0_f64.powi(4),
        "Pi" => 1024.0_f64.powi(5),
        _ => return None,
    };
    Some(number * factor)
}

fn strings(value: Option<&Value>) -> Vec<&str> {
    value
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// Whether an unclaimed volume can serve a claim that names no volume.
fn matches_claim(volume: &Value, claim: &Value) -> bool {
    let class = |object: &Value| {
        meta::str_at(object, &["spec", "storageClassName"])
            .unwrap_or_default()
            .to_string()
    };
    let modes = strings(volume.pointer("/spec/accessModes"));
    let wanted = strings(claim.pointer("/spec/accessModes"));
    let size = volume
        .pointer("/spec/capacity/storage")
        .and_then(Value::as_str)
        .and_then(quantity);
    let request = claim
        .pointer("/spec/resources/requests/storage")
        .and_then(Value::as_str)
        .and_then(quantity);
    class(volume) == class(claim)
        && wanted.iter().all(|mode| modes.contains(mode))
        && matches!((size, request), (Some(size), Some(request)) if size >= request)
}

/// Whether a volume's `claimRef` names this claim (a `claimRef` without uid pre-binds).
fn refers_to(volume: &Value, claim: &Value) -> bool {
    let Some(reference) = volume
        .pointer("/spec/claimRef")
        .filter(|reference| reference.is_object())
    else {
        return false;
    };
    let field = |name: &str| {
        reference
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    field("namespace") == meta::namespace(claim)
        && field("name") == meta::name(claim)
        && (field("uid").is_empty() || field("uid") == meta::uid(claim))
}

fn has_claim_ref(volume: &Value) -> bool {
    volume
        .pointer("/spec/claimRef")
        .is_some_and(Value::is_object)
}

fn bind_claims(state: &mut State, kinds: &Kinds) -> bool {
    let claims: Vec<Value> = state
        .store
        .list(kinds.claims, None)
        .filter(|claim| !meta::is_deleting(claim))
        .cloned()
        .collect();
    let mut changed = false;
    for mut claim in claims {
        let named = meta::str_at(&claim, &["spec", "volumeName"])
            .unwrap_or_default()
            .to_string();
        let Some(volume) = volume_for(state, kinds, &claim, &named) else {
            let bound = meta::str_at(&claim, &["status", "phase"]) == Some("Bound");
            let phase = if bound
                || (!named.is_empty()
                    && claim
                        .pointer("/metadata/annotations/pv.kubernetes.io~1bind-completed")
                        .is_some())
            {
                "Lost"
            } else {
                "Pending"
            };
            if meta::str_at(&claim, &["status", "phase"]) != Some(phase) {
                meta::set_at(&mut claim, &["status"], json!({"phase": phase}));
                changed |= state.put(kinds.claims, claim);
            }
            continue;
        };
        let free = !has_claim_ref(&volume) && !meta::is_deleting(&volume);
        if !(refers_to(&volume, &claim) || free) {
            // Bound to another claim (or released from an earlier one): wait.
            continue;
        }
        changed |= bind(state, kinds, claim, volume, named.is_empty());
    }
    changed
}

/// The volume a claim binds to: the one it names, else one pre-bound to it, else a free one
/// that matches it.
fn volume_for(state: &State, kinds: &Kinds, claim: &Value, named: &str) -> Option<Value> {
    if !named.is_empty() {
        return state
            .store
            .get(&ObjectKey::new(kinds.volumes, "", named))
            .cloned();
    }
    let candidates: Vec<&Value> = state
        .store
        .list(kinds.volumes, None)
        .filter(|volume| !meta::is_deleting(volume))
        .collect();
    // A volume pre-bound to this claim wins over any merely matching one.
    candidates
        .iter()
        .find(|volume| refers_to(volume, claim))
        .or_else(|| {
            candidates
                .iter()
                .find(|volume| !has_claim_ref(volume) && matches_claim(volume, claim))
        })
        .map(|volume| (*volume).clone())
}

/// Binds a claim and a volume both ways, as the binder does (`chosen` when the claim named
/// no volume and the binder picked it).
fn bind(
    state: &mut State,
    kinds: &Kinds,
    mut claim: Value,
    mut volume: Value,
    chosen: bool,
) -> bool {
    meta::set_at(
        &mut volume,
        &["spec", "claimRef"],
        json!({
            "kind": "PersistentVolumeClaim",
            "namespace": meta::namespace(&claim),
            "name": meta::name(&claim),
            "uid": meta::uid(&claim),
            "apiVersion": "v1",
            "resourceVersion": meta::resource_version(&claim),
        }),
    );
    // Keep the recorded claim version from changing on every pass once bound.
    if let Some(current) = state.store.get(&ObjectKey::of(kinds.volumes, &volume))
        && refers_to(current, &claim)
        && current
            .pointer("/spec/claimRef/uid")
            .and_then(Value::as_str)
            == Some(meta::uid(&claim))
    {
        volume["spec"]["claimRef"] = current["spec"]["claimRef"].clone();
    }
    meta::set_at(&mut volume, &["status", "phase"], json!("Bound"));
    let mut changed = state.put(kinds.volumes, volume.clone());
    if chosen {
        meta::set_at(
            &mut claim,
            &["spec", "volumeName"],
            json!(meta::name(&volume)),
        );
        meta::set_at(
            &mut claim,
            &[
                "metadata",
                "annotations",
                "pv.kubernetes.io/bound-by-controller",
            ],
            json!("yes"),
        );
    }
    meta::set_at(
        &mut claim,
        &["metadata", "annotations", "pv.kubernetes.io/bind-completed"],
        json!("yes"),
    );
    let mut status = json!({"phase": "Bound"});
    if let Some(modes) = volume.pointer("/spec/accessModes") {
        status["accessModes"] = modes.clone();
    }
    if let Some(capacity) = volume.pointer("/spec/capacity") {
        status["capacity"] = capacity.clone();
    }
    claim["status"] = status;
    changed |= state.put(kinds.claims, claim);
    changed
}

fn update_volumes(state: &mut State, kinds: &Kinds) -> bool {
    let volumes: Vec<Value> = state.store.list(kinds.volumes, None).cloned().collect();
    let mut changed = false;
    for mut volume in volumes {
        let phase = volume_phase(state, kinds, &volume);
        meta::set_at(&mut volume, &["status", "phase"], json!(phase));
        if meta::is_deleting(&volume) {
            // pv-protection lets a volume go once nothing is bound to it.
            if phase != "Bound" {
                meta::remove_finalizer(&mut volume, PV_PROTECTION);
            }
        } else {
            meta::add_finalizer(&mut volume, PV_PROTECTION);
        }
        let name = meta::name(&volume).to_string();
        let reclaim_by_deleting = phase == "Released"
            && meta::str_at(&volume, &["spec", "persistentVolumeReclaimPolicy"]) == Some("Delete");
        changed |= state.put(kinds.volumes, volume);
        if reclaim_by_deleting {
            changed |= state.delete_for_controller(kinds.volumes, "", &name);
        }
    }
    changed
}

/// The phase a volume should show.
fn volume_phase(state: &State, kinds: &Kinds, volume: &Value) -> &'static str {
    let Some(reference) = volume
        .pointer("/spec/claimRef")
        .filter(|reference| reference.is_object())
    else {
        return "Available";
    };
    let field = |name: &str| {
        reference
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    let claim = state.store.get(&ObjectKey::new(
        kinds.claims,
        field("namespace"),
        field("name"),
    ));
    match claim {
        // Pre-bound to a claim that is not there yet, or not bound yet.
        _ if field("uid").is_empty() => "Available",
        Some(claim) if meta::uid(claim) == field("uid") => {
            if meta::str_at(claim, &["spec", "volumeName"]) == Some(meta::name(volume)) {
                "Bound"
            } else {
                "Available"
            }
        }
        // The claim it was bound to is gone (or was re-created: another uid).
        _ => "Released",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_are_read_in_bytes() {
        assert_eq!(quantity("1Mi"), Some(1_048_576.0));
        assert_eq!(quantity("10Gi"), Some(10.0 * 1024.0 * 1024.0 * 1024.0));
        assert_eq!(quantity("500M"), Some(5e8));
        assert_eq!(quantity("1e3"), Some(1000.0));
        assert_eq!(quantity("12"), Some(12.0));
        assert_eq!(quantity("lots"), None);
    }
}
