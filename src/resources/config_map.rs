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
    data.insert(PROPERTIES_KEY.to_string(), properties::render(&m.properties));
    data.insert(WHITELIST_KEY.to_string(), lines(&m.whitelist));
    data.insert(OPS_KEY.to_string(), lines(&m.ops));
    data.insert(crate::plugins::MANIFEST_KEY.to_string(), m.plugins.to_json());
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
