//! The game Service (type from the spec). A server has no RCON Service:
//! the operator and backup Jobs connect to its pod's IP (a Service per
//! server cost the API server and the controller-manager a Service and its
//! EndpointSlices for a port only they use).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec as K8sServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::ServerModel;
use crate::api::server::ServiceType;

/// mc-router's annotation naming the hostname a Service answers for.
pub const MC_ROUTER_HOST_ANNOTATION: &str = "mc-router.itzg.me/externalServerName";

/// Whether the SKU's `allowedServiceAnnotations` let a server set `key`:
/// an exact entry, or `prefix/*` for every key under `prefix/`. mc-router's
/// hostname annotation never (it is `spec.hostname`'s, with its rules).
pub fn annotation_allowed(key: &str, allowed: &[String]) -> bool {
    key != MC_ROUTER_HOST_ANNOTATION
        && allowed.iter().any(|a| match a.strip_suffix("/*") {
            Some(prefix) => key.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/') && rest.len() > 1),
            None => a == key,
        })
}

/// Drops from `annotations` every key [`annotation_allowed`] refuses and
/// returns those keys (sorted).
pub fn keep_allowed_annotations(annotations: &mut BTreeMap<String, String>, allowed: &[String]) -> Vec<String> {
    let refused: Vec<String> = annotations.keys().filter(|k| !annotation_allowed(k, allowed)).cloned().collect();
    for k in &refused {
        annotations.remove(k);
    }
    refused
}

/// The Service players connect to.
pub fn game(m: &ServerModel) -> Service {
    let s = &m.service;
    let mut annotations: BTreeMap<String, String> = s.annotations.clone();
    if let Some(host) = &m.hostname {
        annotations.insert(MC_ROUTER_HOST_ANNOTATION.into(), host.clone());
    }
    let type_ = match s.service_type {
        ServiceType::Headless | ServiceType::ClusterIP => "ClusterIP",
        ServiceType::NodePort => "NodePort",
        ServiceType::LoadBalancer => "LoadBalancer",
    };
    Service {
        metadata: ObjectMeta {
            name: Some(m.game_service_name()),
            namespace: Some(m.namespace.clone()),
            labels: Some(m.labels("game")),
            annotations: (!annotations.is_empty()).then_some(annotations),
            owner_references: Some(vec![m.owner_ref()]),
            ..Default::default()
        },
        spec: Some(K8sServiceSpec {
            type_: Some(type_.into()),
            cluster_ip: (s.service_type == ServiceType::Headless).then(|| "None".into()),
            selector: Some(m.selector_labels()),
            ports: Some(vec![ServicePort {
                name: Some("minecraft".into()),
                protocol: Some("TCP".into()),
                port: s.port,
                target_port: Some(IntOrString::String("minecraft".into())),
                node_port: s.node_port,
                ..Default::default()
            }]),
            load_balancer_class: s.load_balancer_class.clone(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Whether a Service has no cluster IP.
pub fn is_headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

/// The address players use, from the observed game Service (when the
/// server has no hostname: [`super::hostname::address`]).
pub fn address(m: &ServerModel, observed: Option<&Service>) -> Option<String> {
    let svc = observed?;
    let spec = svc.spec.as_ref()?;
    let port = spec.ports.as_ref()?.first()?;
    match spec.type_.as_deref() {
        Some("LoadBalancer") => {
            let ingress = svc.status.as_ref()?.load_balancer.as_ref()?.ingress.as_ref()?.first()?;
            let host = ingress.hostname.clone().or_else(|| ingress.ip.clone())?;
            Some(format!("{host}:{}", port.port))
        }
        Some("NodePort") => port.node_port.map(|p| format!("<node-address>:{p}")),
        _ => Some(format!("{}.{}.svc:{}", m.game_service_name(), m.namespace, port.port)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allowed_annotation_keys_are_kept() {
        let allowed: Vec<String> =
            ["service.beta.kubernetes.io/*", "example.com/team", MC_ROUTER_HOST_ANNOTATION, "mc-router.itzg.me/*"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        let mut a: BTreeMap<String, String> = [
            "service.beta.kubernetes.io/aws-load-balancer-type",
            "service.beta.kubernetes.io",
            "service.beta.kubernetes.io.evil/x",
            "example.com/team",
            "example.com/teams",
            "metallb.universe.tf/address-pool",
            MC_ROUTER_HOST_ANNOTATION,
            "mc-router.itzg.me/defaultServer",
        ]
        .iter()
        .map(|k| (k.to_string(), "v".to_string()))
        .collect();
        let refused = keep_allowed_annotations(&mut a, &allowed);
        assert_eq!(
            a.keys().collect::<Vec<_>>(),
            [
                "example.com/team",
                "mc-router.itzg.me/defaultServer",
                "service.beta.kubernetes.io/aws-load-balancer-type"
            ]
        );
        assert_eq!(
            refused,
            [
                "example.com/teams",
                MC_ROUTER_HOST_ANNOTATION,
                "metallb.universe.tf/address-pool",
                "service.beta.kubernetes.io",
                "service.beta.kubernetes.io.evil/x",
            ]
        );
        let mut none = BTreeMap::from([("metallb.universe.tf/address-pool".to_string(), "x".to_string())]);
        assert_eq!(keep_allowed_annotations(&mut none, &[]).len(), 1, "an empty list allows no key");
        assert!(none.is_empty());
    }
}
