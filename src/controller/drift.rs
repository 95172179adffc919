//! Drift detection without reading or writing anything: a child is in sync
//! when the operator still owns, in the object's `managedFields`, every
//! field of the desired object.
//!
//! Server-side apply makes this exact. Fields an apply sets are owned by
//! its manager; a field another manager changes (`kubectl edit`, `scale`,
//! `patch`, a forced apply) or removes leaves the operator's set; fields
//! others add, and values the API server defaults, never enter it. So
//! "every desired field is still ours, and the applied-hash annotation
//! matches" means the object holds exactly what was last applied, with no
//! value comparison (quantities, defaults) and nothing fought over.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
use serde_json::{Map, Value};

use crate::resources::FIELD_MANAGER;

/// Metadata fields the API server never records as owned.
const UNTRACKED_META: [&str; 8] =
    ["name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp", "selfLink", "managedFields"];

/// Whether `managed` shows the operator owning every field of `desired`
/// (the object as it would be applied, serialized).
pub fn owns_all(desired: &Value, managed: Option<&[ManagedFieldsEntry]>) -> bool {
    // The union of the operator's entries (an apply, and a create or a
    // merge patch of the Update operation).
    let mut ours = Map::new();
    for e in managed.unwrap_or_default() {
        if e.manager.as_deref() == Some(FIELD_MANAGER)
            && e.subresource.as_deref().unwrap_or("").is_empty()
            && let Some(f) = e.fields_v1.as_ref().and_then(|f| f.0.as_object())
        {
            union(&mut ours, f);
        }
    }
    let Some(top) = desired.as_object() else { return false };
    top.iter().all(|(k, v)| match k.as_str() {
        "apiVersion" | "kind" | "status" => true,
        "metadata" => v.as_object().is_some_and(|m| {
            let fields = ours.get("f:metadata").and_then(Value::as_object);
            m.iter()
                .filter(|(k, _)| !UNTRACKED_META.contains(&k.as_str()))
                .all(|(k, v)| fields.is_some_and(|f| covered_in(f, k, v)))
        }),
        _ => covered_in(&ours, k, v),
    })
}

fn union(into: &mut Map<String, Value>, from: &Map<String, Value>) {
    for (k, v) in from {
        match (into.get_mut(k), v) {
            (Some(Value::Object(a)), Value::Object(b)) => union(a, b),
            (None, _) => {
                into.insert(k.clone(), v.clone());
            }
            _ => {}
        }
    }
}

/// Whether field `key` with desired `value` is owned under `fields`.
fn covered_in(fields: &Map<String, Value>, key: &str, value: &Value) -> bool {
    if value.is_null() {
        return true;
    }
    match fields.get(&format!("f:{key}")).and_then(Value::as_object) {
        Some(node) => covers(value, node),
        None => false,
    }
}

/// A node with no children but "." is owned whole: a scalar, or an atomic
/// list or map.
fn is_leaf(node: &Map<String, Value>) -> bool {
    node.keys().all(|k| k == ".")
}

fn covers(value: &Value, node: &Map<String, Value>) -> bool {
    if is_leaf(node) {
        return true;
    }
    match value {
        Value::Object(m) => m.iter().all(|(k, v)| covered_in(node, k, v)),
        Value::Array(items) => items.iter().enumerate().all(|(i, e)| {
            node.iter()
                .filter(|(k, _)| element_matches(k, i, e))
                .any(|(_, child)| child.as_object().is_some_and(|c| covers(e, c)))
        }),
        _ => true,
    }
}

/// Whether a list-element key of a field set (`k:{...}`, `v:...`, `i:N`)
/// names desired element `e` at index `i`. Key fields absent from `e` are
/// ones the API server defaulted (a port's protocol), so they are skipped.
fn element_matches(key: &str, i: usize, e: &Value) -> bool {
    if let Some(k) = key.strip_prefix("k:") {
        let Ok(Value::Object(keys)) = serde_json::from_str::<Value>(k) else { return false };
        let mut present = keys.iter().filter_map(|(kk, kv)| Some((e.get(kk)?, kv))).peekable();
        present.peek().is_some() && present.all(|(a, b)| a == b)
    } else if let Some(v) = key.strip_prefix("v:") {
        serde_json::from_str::<Value>(v).is_ok_and(|v| &v == e)
    } else if let Some(n) = key.strip_prefix("i:") {
        n.parse::<usize>() == Ok(i)
    } else {
        false
    }
}

/// The operator's field sets of a child, kept by the lean caches instead
/// of all of `managedFields`: the owner references (which name each
/// server's UID) apart, so the rest is the same for most servers and held
/// once (interned).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Owned {
    sets: Vec<Arc<str>>,
    /// Whether the owner references are owned (also when empty, as a
    /// released PVC's are), and the UIDs of those owned.
    owner_refs: bool,
    owner_uids: Vec<Box<str>>,
}

impl Owned {
    /// Takes the operator's entries out of `managed`.
    pub fn take(managed: Option<Vec<ManagedFieldsEntry>>) -> Owned {
        let mut out = Owned::default();
        for e in managed.unwrap_or_default() {
            if e.manager.as_deref() != Some(FIELD_MANAGER) || !e.subresource.as_deref().unwrap_or("").is_empty() {
                continue;
            }
            let Some(FieldsV1(mut v)) = e.fields_v1 else { continue };
            if let Some(refs) = v
                .get_mut("f:metadata")
                .and_then(Value::as_object_mut)
                .and_then(|m| m.remove("f:ownerReferences"))
                .and_then(|r| r.as_object().cloned())
            {
                out.owner_refs = true;
                for k in refs.keys() {
                    let uid = k.strip_prefix("k:").and_then(|k| serde_json::from_str::<Value>(k).ok());
                    if let Some(uid) = uid.as_ref().and_then(|u| u.get("uid")).and_then(Value::as_str) {
                        out.owner_uids.push(uid.into());
                    }
                }
            }
            out.sets.push(intern(&v.to_string()));
        }
        out
    }

    /// The entries back, as `managedFields` (owner references owned whole).
    pub fn restore(&self) -> Option<Vec<ManagedFieldsEntry>> {
        if self.sets.is_empty() {
            return None;
        }
        let mut entries: Vec<ManagedFieldsEntry> = self
            .sets
            .iter()
            .filter_map(|s| serde_json::from_str::<Value>(s).ok())
            .map(|v| ManagedFieldsEntry {
                manager: Some(FIELD_MANAGER.into()),
                fields_v1: Some(FieldsV1(v)),
                ..Default::default()
            })
            .collect();
        if self.owner_refs {
            let refs: Map<String, Value> = self
                .owner_uids
                .iter()
                .map(|u| (format!("k:{}", serde_json::json!({"uid": u})), serde_json::json!({".": {}})))
                .collect();
            entries.push(ManagedFieldsEntry {
                manager: Some(FIELD_MANAGER.into()),
                fields_v1: Some(FieldsV1(serde_json::json!({"f:metadata": {"f:ownerReferences": refs}}))),
                ..Default::default()
            });
        }
        Some(entries)
    }
}

/// One shared copy of each distinct field set; unused ones are dropped as
/// the table grows.
fn intern(s: &str) -> Arc<str> {
    static TABLE: Mutex<Option<(HashSet<Arc<str>>, usize)>> = Mutex::new(None);
    let mut guard = TABLE.lock().unwrap_or_else(|p| p.into_inner());
    let (set, limit) = guard.get_or_insert_with(|| (HashSet::new(), 64));
    if let Some(a) = set.get(s) {
        return a.clone();
    }
    if set.len() >= *limit {
        set.retain(|a| Arc::strong_count(a) > 1);
        *limit = (set.len() * 2).max(64);
    }
    let a: Arc<str> = s.into();
    set.insert(a.clone());
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(manager: &str, fields: Value) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some("Apply".into()),
            fields_v1: Some(FieldsV1(fields)),
            ..Default::default()
        }
    }

    fn desired() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "s", "namespace": "ns", "labels": {"a": "1"},
                         "ownerReferences": [{"apiVersion": "craftplane.io/v1alpha1", "kind": "MinecraftServer",
                                              "name": "s", "uid": "u1", "controller": true}]},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"a": "1"}},
                     "template": {"spec": {"containers": [{"name": "server", "image": "i",
                                                           "ports": [{"containerPort": 25565, "name": "game"}],
                                                           "args": ["x", "y"]}]}}}
        })
    }

    /// What the API server records for an apply of [`desired`].
    fn applied() -> Value {
        json!({
            "f:metadata": {"f:labels": {"f:a": {}},
                           "f:ownerReferences": {"k:{\"uid\":\"u1\"}": {}}},
            "f:spec": {"f:replicas": {}, "f:selector": {},
                       "f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"server\"}": {
                           ".": {}, "f:image": {}, "f:name": {}, "f:args": {},
                           "f:ports": {"k:{\"containerPort\":25565,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}, "f:name": {}}}}}}}}
        })
    }

    /// `fields` without `path`, pruned as the API server prunes a set (no
    /// node is left empty that was only a parent).
    fn without(mut fields: Value, path: &[&str]) -> Value {
        fn remove(node: &mut Value, path: &[&str]) {
            let m = node.as_object_mut().unwrap();
            if let [last] = path {
                m.remove(*last).unwrap();
                return;
            }
            let child = m.get_mut(path[0]).unwrap();
            remove(child, &path[1..]);
            if child.as_object().unwrap().is_empty() {
                m.remove(path[0]);
            }
        }
        remove(&mut fields, path);
        fields
    }

    #[test]
    fn an_untouched_apply_is_in_sync() {
        let status = entry("kube-controller-manager", json!({"f:status": {"f:replicas": {}}}));
        let managed = [entry(FIELD_MANAGER, applied()), status];
        assert!(owns_all(&desired(), Some(&managed)));
    }

    #[test]
    fn a_field_taken_or_removed_by_another_manager_is_drift() {
        let cases: [&[&str]; 4] = [
            &["f:spec", "f:replicas"],
            &["f:metadata", "f:labels", "f:a"],
            &["f:metadata", "f:ownerReferences", "k:{\"uid\":\"u1\"}"],
            &["f:spec", "f:template", "f:spec", "f:containers", "k:{\"name\":\"server\"}", "f:image"],
        ];
        for path in cases {
            let managed = [entry(FIELD_MANAGER, without(applied(), path)), entry("kubectl", json!({}))];
            assert!(!owns_all(&desired(), Some(&managed)), "{path:?}");
        }
        assert!(!owns_all(&desired(), None), "no managed fields at all");
        assert!(!owns_all(&desired(), Some(&[entry("kubectl", applied())])), "owned by someone else");
    }

    #[test]
    fn what_others_add_is_not_drift() {
        let mut fields = applied();
        fields["f:metadata"]["f:labels"]["f:other"] = json!({});
        let managed =
            [entry(FIELD_MANAGER, fields), entry("hpa", json!({"f:metadata": {"f:annotations": {"f:x": {}}}}))];
        assert!(owns_all(&desired(), Some(&managed)));
    }

    #[test]
    fn set_and_index_list_elements_match() {
        let d = json!({"metadata": {"finalizers": ["a/b"]}, "spec": {"list": [{"x": 1}]}});
        let f = json!({"f:metadata": {"f:finalizers": {"v:\"a/b\"": {}}}, "f:spec": {"f:list": {"i:0": {"f:x": {}}}}});
        assert!(owns_all(&d, Some(&[entry(FIELD_MANAGER, f)])));
        let f = json!({"f:metadata": {"f:finalizers": {"v:\"c\"": {}}}, "f:spec": {"f:list": {"i:0": {"f:x": {}}}}});
        assert!(!owns_all(&d, Some(&[entry(FIELD_MANAGER, f)])));
    }

    /// The lean caches keep the operator's sets only, and give back sets
    /// that judge the same.
    #[test]
    fn kept_field_sets_judge_like_the_originals() {
        let managed = vec![entry(FIELD_MANAGER, applied()), entry("kubectl", json!({"f:spec": {}}))];
        let kept = Owned::take(Some(managed));
        assert!(owns_all(&desired(), kept.restore().as_deref()));
        let other = Owned::take(Some(vec![entry(FIELD_MANAGER, applied())]));
        assert!(Arc::ptr_eq(&kept.sets[0], &other.sets[0]), "one copy of equal sets");
        let drifted = Owned::take(Some(vec![entry(FIELD_MANAGER, without(applied(), &["f:spec", "f:replicas"]))]));
        assert!(!owns_all(&desired(), drifted.restore().as_deref()));
        let unowned =
            Owned::take(Some(vec![entry(FIELD_MANAGER, without(applied(), &["f:metadata", "f:ownerReferences"]))]));
        assert!(!owns_all(&desired(), unowned.restore().as_deref()));
        assert_eq!(Owned::take(None).restore(), None);
        // Owner references applied empty (a released PVC) stay owned.
        let mut fields = without(applied(), &["f:metadata", "f:ownerReferences"]);
        fields["f:metadata"]["f:ownerReferences"] = json!({});
        let mut released = desired();
        released["metadata"]["ownerReferences"] = json!([]);
        let kept = Owned::take(Some(vec![entry(FIELD_MANAGER, fields)]));
        assert!(owns_all(&released, kept.restore().as_deref()));
    }
}
