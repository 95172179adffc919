//! The RCON Secret. Its password is generated once by the reconciler and
//! never re-applied, so it cannot rotate by accident; only labels and owner
//! are kept in place.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::ServerModel;

/// Key of the password in the Secret.
pub const PASSWORD_KEY: &str = "password";
/// Where the Secret is mounted in the server container.
pub const MOUNT_PATH: &str = "/run/secrets/craftplane/rcon";

/// What the operator keeps in place on an existing Secret: its labels and
/// owner. The password is not among it: an admin may rotate it, and the
/// operator never holds it (a deleted Secret is created anew).
pub fn owned(m: &ServerModel) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(m.secret_name()),
            namespace: Some(m.namespace.clone()),
            labels: Some(m.labels("rcon")),
            owner_references: Some(vec![m.owner_ref()]),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The Secret to create when none exists: [`owned`], marked as applied
/// (so the first check writes nothing), with the password.
pub fn build(m: &ServerModel, password: &str) -> Secret {
    let mut s = owned(m);
    let hash = super::object_hash(&s);
    s.metadata.annotations = Some(BTreeMap::from([(super::APPLIED_HASH.to_string(), hash)]));
    s.string_data = Some(BTreeMap::from([(PASSWORD_KEY.to_string(), password.to_string())]));
    s.type_ = Some("Opaque".into());
    s
}

/// A new random password: 32 characters from [A-Za-z0-9].
pub fn generate_password() -> String {
    use rand::Rng;
    use rand::distr::Alphanumeric;
    rand::rng().sample_iter(&Alphanumeric).take(32).map(char::from).collect()
}
