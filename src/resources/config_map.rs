//! The server's ConfigMap: rendered server.properties, whitelist, ops and
//! the plugin manifest.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{ServerModel, properties};

/// Key holding the rendered server.properties overrides.
pub const PROPERTIES_KEY: &str = "server.properties";
/// Key holding whitelisted players, one per line.
pub const WHITELIST_KEY: &str = "whitelist";
/// Key holding operators, one per line.
pub const OPS_KEY: &str = "ops";

/// Desired ConfigMap.
pub fn build(m: &ServerModel) -> ConfigMap {
    let mut data = BTreeMap::new();
    // The live settings' properties win: what was applied live is what the
    // server starts with next time.
    let mut props = m.properties.clone();
    props.extend(m.live().properties());
    data.insert(PROPERTIES_KEY.to_string(), properties::render(&props));
    data.insert(WHITELIST_KEY.to_string(), lines(&m.whitelist));
    data.insert(OPS_KEY.to_string(), lines(&m.ops));
    data.insert(crate::api::contract::MANIFEST_KEY.to_string(), m.plugins.to_json());
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(m.config_map_name()),
            namespace: Some(m.namespace.clone()),
            labels: Some(m.labels("config")),
            owner_references: Some(vec![m.owner_ref()]),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    }
}

fn lines(items: &[String]) -> String {
    let mut sorted: Vec<&String> = items.iter().collect();
    sorted.sort();
    sorted.dedup();
    sorted.into_iter().map(|s| format!("{s}\n")).collect()
}

/// Name of the ConfigMap holding a PluginInstallation's inline `files`.
pub fn plugin_files_name(plugin: &str) -> String {
    super::backup_job::child_name(plugin, "files")
}

/// The ConfigMap of a PluginInstallation's inline `files` (owned by it),
/// mounted and copied like a `configFiles` ConfigMap.
pub fn plugin_files(pi: &crate::api::PluginInstallation) -> ConfigMap {
    use kube::{Resource, ResourceExt};
    let name = pi.name_any();
    let data: BTreeMap<String, String> = pi.spec.files.iter().map(|f| (f.name.clone(), f.content.clone())).collect();
    let owner = pi.controller_owner_ref(&()).map(|mut o| {
        o.block_owner_deletion = Some(true);
        o
    });
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(plugin_files_name(&name)),
            namespace: pi.namespace(),
            labels: Some(BTreeMap::from([
                ("app.kubernetes.io/managed-by".to_string(), "craftplane".to_string()),
                ("app.kubernetes.io/component".to_string(), "plugin-files".to_string()),
                (super::SERVER_LABEL.to_string(), pi.spec.server.clone()),
            ])),
            owner_references: owner.map(|o| vec![o]),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    }
}
