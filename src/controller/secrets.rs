//! Secrets the operator writes in tenant namespaces (the RCON Secret, the
//! store credentials copied next to backup and restore Jobs). It writes,
//! mounts and deletes only Secrets it owns: an owner reference with the
//! UID of the object they are for. Any other Secret of that name is left
//! alone and reported (reason [`SECRET_CONFLICT`]).

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DeleteParams, Preconditions};

use super::error::{Error, Result};

/// Condition reason: a Secret the operator needs exists and is not its own.
pub const SECRET_CONFLICT: &str = "SecretConflict";

/// Whether `secret` is owned by the object with `uid`.
pub fn owned_by(secret: &Secret, uid: &str) -> bool {
    !uid.is_empty() && secret.metadata.owner_references.iter().flatten().any(|o| o.uid == uid)
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
        let mut s = Secret::default();
        assert!(!owned_by(&s, "u1"));
        s.metadata.labels = Some([("app.kubernetes.io/managed-by".to_string(), "craftplane".to_string())].into());
        assert!(!owned_by(&s, "u1"), "a label anyone can set is not ownership");
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
