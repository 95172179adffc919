//! Objects for unit and snapshot tests.

use std::collections::BTreeMap;

use crate::api::common::Quantity;
use crate::api::server::{MinecraftServer, MinecraftServerSpec};
use crate::api::sku::{JvmSpec, Sku, SkuResources, SkuSpec};

pub fn sku(name: &str) -> Sku {
    let mut s = Sku::new(
        name,
        SkuSpec {
            display_name: Some("Small".into()),
            resources: SkuResources {
                cpu: Quantity::new("1"),
                memory: Quantity::new("2Gi"),
                storage: Quantity::new("5Gi"),
            },
            jvm: Some(JvmSpec { heap: None, heap_percent: Some(75) }),
            max_players: Some(20),
            default_properties: BTreeMap::from([
                ("view-distance".into(), "8".into()),
                ("difficulty".into(), "easy".into()),
            ]),
            allowed_server_types: vec![],
            allowed_images: vec![],
            console_commands: None,
            gateway: None,
            sleep: None,
            storage_class_name: None,
            allowed_storage_classes: vec![],
            allowed_service_annotations: vec![],
            price: None,
            placement: None,
            available: true,
        },
    );
    s.metadata.uid = Some("sku-uid".into());
    s
}

/// A server from the YAML of its spec (defaults applied as the API server would).
pub fn server(name: &str, spec_yaml: &str) -> MinecraftServer {
    let spec: MinecraftServerSpec = serde_yaml::from_str(spec_yaml).expect("valid spec yaml");
    let mut s = MinecraftServer::new(name, spec);
    s.metadata.namespace = Some("games".into());
    s.metadata.uid = Some(format!("{name}-uid"));
    s.metadata.generation = Some(1);
    s
}
