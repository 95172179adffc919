//! The world volume: a PVC of its own, so it can be expanded and outlive pods.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, PersistentVolumeClaimSpec, VolumeResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::ServerModel;

/// Desired PVC. `owned` is false when the server is being deleted with
/// `deletionPolicy: Retain`: the PVC is released from garbage collection.
pub fn build(m: &ServerModel, owned: bool) -> PersistentVolumeClaim {
    let mut labels = m.labels("data");
    if !owned {
        labels.insert("craftplane.io/retained".into(), "true".into());
    }
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(m.pvc_name()),
            namespace: Some(m.namespace.clone()),
            labels: Some(labels),
            owner_references: if owned { Some(vec![m.owner_ref()]) } else { Some(vec![]) },
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: m.storage_class.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_string(), Quantity(m.storage_size.clone()))])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}
