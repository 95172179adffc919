//! Secrets the operator writes in tenant namespaces (the RCON Secret, the
//! store credentials copied next to backup and restore Jobs). It writes,
//! mounts and deletes only Secrets it owns: an owner reference with the
//! UID of the object they are for, or — its owner reference removed by
//! hand — no owner at all but craftplane's label, set by craftplane's
//! field manager. Any other Secret of that name is left alone and reported
//! (reason [`SECRET_CONFLICT`]).

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DeleteParams, Preconditions};

use super::error::{Error, Result};
use crate::resources::FIELD_MANAGER;

/// Condition reason: a Secret the operator needs exists and is not its own.
pub const SECRET_CONFLICT: &str = "SecretConflict";

/// The label craftplane puts on what it creates.
const MANAGED_BY: &str = "app.kubernetes.io/managed-by";

/// Whether `secret` is owned by the object with `uid`: an owner reference
/// with that UID, or no owner reference and craftplane's label written by
/// craftplane's field manager (an owner reference removed by hand is put
/// back). A Secret another object owns (a namesake's, say) is not.
pub fn owned_by(secret: &Secret, uid: &str) -> bool {
    let m = &secret.metadata;
    let refs = m.owner_references.as_deref().unwrap_or_default();
    if refs.iter().any(|o| o.uid == uid && !uid.is_empty()) {
        return true;
    }
    let labelled = m.labels.as_ref().and_then(|l| l.get(MANAGED_BY)).is_some_and(|v| v == "craftplane");
    let label_key = format!("f:{MANAGED_BY}");
    let written_by_us = m.managed_fields.iter().flatten().any(|e| {
        e.manager.as_deref() == Some(FIELD_MANAGER)
            && e.fields_v1.as_ref().and_then(|f| f.0.get("f:metadata")?.get("f:labels")?.get(&label_key)).is_some()
    });
    refs.is_empty() && labelled && written_by_us
}

/// The error for a Secret that is in the way.
pub fn conflict(ns: &str, name: &str, owner: &str) -> Error {
    Error::SecretConflict(format!(
        "Secret {ns}/{name} exists and is not craftplane's (no owner reference to {owner}); \
         it is left untouched: rename or remove it"
    ))
}

/// Deletes the Secret `name` when `uid` owns it, with a UID precondition
/// (a Secret created in its place meanwhile is not deleted). `true` when
/// it was deleted.
pub async fn delete_owned(api: &Api<Secret>, name: &str, uid: &str) -> Result<bool> {
    let Some(s) = api.get_opt(name).await? else { return Ok(false) };
    if !owned_by(&s, uid) {
        return Ok(false);
    }
    let dp = DeleteParams {
        preconditions: Some(Preconditions { uid: s.metadata.uid.clone(), resource_version: None }),
        ..Default::default()
    };
    match api.delete(name, &dp).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    #[test]
    fn only_an_owner_reference_with_the_uid_makes_a_secret_ours() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
        let mut s = Secret::default();
        assert!(!owned_by(&s, "u1"));
        s.metadata.labels = Some([("app.kubernetes.io/managed-by".to_string(), "craftplane".to_string())].into());
        assert!(!owned_by(&s, "u1"), "the label alone is not ownership");
        let entry = |manager: &str| ManagedFieldsEntry {
            manager: Some(manager.into()),
            fields_v1: Some(FieldsV1(
                serde_json::json!({"f:metadata": {"f:labels": {"f:app.kubernetes.io/managed-by": {}}}}),
            )),
            ..Default::default()
        };
        s.metadata.managed_fields = Some(vec![entry("kubectl")]);
        assert!(!owned_by(&s, "u1"), "the label set by someone else");
        s.metadata.managed_fields = Some(vec![entry("kubectl"), entry(FIELD_MANAGER)]);
        assert!(owned_by(&s, "u1"), "craftplane's label, its owner reference removed by hand");
        let r = |uid: &str| OwnerReference {
            uid: uid.into(),
            name: "mc".into(),
            kind: "MinecraftServer".into(),
            ..Default::default()
        };
        s.metadata.owner_references = Some(vec![r("u0")]);
        assert!(!owned_by(&s, "u1"), "a namesake's (an earlier server of that name)");
        s.metadata.owner_references = Some(vec![r("u0"), r("u1")]);
        assert!(owned_by(&s, "u1"));
        assert!(!owned_by(&s, ""));
    }
}
