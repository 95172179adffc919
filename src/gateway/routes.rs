//! The gateway's route table: which server each hostname reaches. Built
//! from the MinecraftServers (a watch cache) as plain data, so the rule is
//! tested here and the listener only looks names up.
//!
//! Every server gets `<server>.<namespace>.<base domain>` when the admin
//! set a base domain; that domain is reserved for those names. Custom
//! hostnames follow the operator's own rule ([`may_claim`]): within the
//! tenant's domains, the first claimant keeping a name (oldest creation,
//! then namespace/name), so the gateway routes exactly what the server's
//! Hostname condition says it holds, and never one hostname to two servers.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::jiff::Timestamp;

use crate::api::MinecraftServer;
use crate::resources::hostname::{Claim, Refusal, may_claim, normalize, within};

/// A server, as routes name it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerKey {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for ServerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Where a hostname goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub server: ServerKey,
    /// The server's tenant (for per-tenant limits), when it has one.
    pub tenant: Option<String>,
}

/// One server as the table needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerEntry {
    pub key: ServerKey,
    pub created: Option<Timestamp>,
    /// Custom hostnames it asks for.
    pub hostnames: Vec<String>,
    /// Its tenant's name and `hostnameDomains` (none: not in a tenant).
    pub tenant: Option<(String, Vec<String>)>,
}

impl ServerEntry {
    /// The entry of a cached server, with its tenant as resolved by the
    /// caller. `None` for a server being deleted or without a name.
    pub fn from_server(s: &MinecraftServer, tenant: Option<(String, Vec<String>)>) -> Option<ServerEntry> {
        if s.metadata.deletion_timestamp.is_some() {
            return None;
        }
        Some(ServerEntry {
            key: ServerKey { namespace: s.metadata.namespace.clone()?, name: s.metadata.name.clone()? },
            created: s.metadata.creation_timestamp.as_ref().map(|t| t.0),
            hostnames: s.spec.wanted_hostnames(),
            tenant,
        })
    }

    fn domains(&self) -> &[String] {
        self.tenant.as_ref().map(|(_, d)| d.as_slice()).unwrap_or_default()
    }

    fn claim<'a>(&'a self, hostname: &'a str) -> Claim<'a> {
        Claim {
            namespace: &self.key.namespace,
            name: &self.key.name,
            created: self.created,
            hostname,
            domains: self.domains(),
        }
    }
}

/// Why a custom hostname routes nowhere.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteRefusal {
    /// The operator's rule refuses it (outside the tenant's domains, or
    /// held by an earlier claimant).
    #[error(transparent)]
    Claim(#[from] Refusal),
    /// Under the base domain, whose names are the servers' own.
    #[error("hostname {host:?} is under the gateway's base domain {base:?}, reserved for <server>.<namespace>.{base}")]
    Reserved { host: String, base: String },
}

/// Longest DNS name (a generated name over it is not routed).
const MAX_NAME: usize = 253;

/// Hostname → server, and the custom hostnames refused.
#[derive(Clone, Debug, Default)]
pub struct RouteTable {
    routes: HashMap<String, Route>,
    /// Per server, its refused hostnames (sorted, for stable reporting).
    refused: BTreeMap<ServerKey, Vec<(String, RouteRefusal)>>,
}

impl RouteTable {
    /// Builds the table from every server. `base_domain`: the admin's
    /// domain for generated names (none: only custom hostnames route).
    pub fn build(base_domain: Option<&str>, servers: &[ServerEntry]) -> RouteTable {
        let base = base_domain.map(normalize).filter(|b| !b.is_empty());
        let mut t = RouteTable::default();
        if let Some(base) = &base {
            for s in servers {
                let host = format!("{}.{}.{base}", s.key.name, s.key.namespace).to_ascii_lowercase();
                if host.len() <= MAX_NAME {
                    t.routes.insert(host, route(s));
                }
            }
        }
        // Custom hostnames, grouped by name: each group is decided by the
        // operator's rule among its own claimants only.
        let mut groups: HashMap<String, Vec<(&ServerEntry, &str)>> = HashMap::new();
        for s in servers {
            for h in &s.hostnames {
                groups.entry(normalize(h)).or_default().push((s, h.as_str()));
            }
        }
        for (host, claimants) in groups {
            if host.is_empty() {
                continue;
            }
            if let Some(base) = base.as_ref().filter(|b| within(&host, std::slice::from_ref(*b))) {
                for (s, h) in &claimants {
                    t.refuse(s, h, RouteRefusal::Reserved { host: h.to_string(), base: base.clone() });
                }
                continue;
            }
            let claims: Vec<Claim<'_>> = claimants.iter().map(|(s, h)| s.claim(h)).collect();
            for (i, (s, h)) in claimants.iter().enumerate() {
                match may_claim(&claims[i], claims.iter().cloned(), base.as_deref()) {
                    Ok(()) => {
                        // The rule grants a name to one claimant at most; the
                        // first insert stays even if it ever did not.
                        t.routes.entry(host.clone()).or_insert_with(|| route(s));
                    }
                    Err(r) => t.refuse(s, h, r.into()),
                }
            }
        }
        for list in t.refused.values_mut() {
            list.sort_by(|a, b| a.0.cmp(&b.0));
        }
        t
    }

    fn refuse(&mut self, s: &ServerEntry, host: &str, why: RouteRefusal) {
        self.refused.entry(s.key.clone()).or_default().push((host.to_string(), why));
    }

    /// The route of a hostname as the handshake gives it (normalised here
    /// too: case, trailing dot).
    pub fn lookup(&self, host: &str) -> Option<&Route> {
        self.routes.get(&normalize(host))
    }

    /// The hostnames refused for `server`, with why.
    pub fn refused(&self, server: &ServerKey) -> &[(String, RouteRefusal)] {
        self.refused.get(server).map(|v| v.as_slice()).unwrap_or_default()
    }

    /// The hostnames that reach `server`, sorted (for its status address).
    pub fn hostnames_of(&self, server: &ServerKey) -> Vec<&str> {
        let mut v: Vec<&str> =
            self.routes.iter().filter(|(_, r)| &r.server == server).map(|(h, _)| h.as_str()).collect();
        v.sort();
        v
    }

    /// Hostnames routed.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

fn route(s: &ServerEntry) -> Route {
    Route { server: s.key.clone(), tenant: s.tenant.as_ref().map(|(n, _)| n.clone()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(ns: &str, name: &str, created: &str, hosts: &[&str], tenant: Option<(&str, &[&str])>) -> ServerEntry {
        ServerEntry {
            key: ServerKey { namespace: ns.into(), name: name.into() },
            created: Some(created.parse().unwrap()),
            hostnames: hosts.iter().map(|h| h.to_string()).collect(),
            tenant: tenant.map(|(t, d)| (t.to_string(), d.iter().map(|s| s.to_string()).collect())),
        }
    }

    fn target<'a>(t: &'a RouteTable, host: &str) -> Option<&'a str> {
        t.lookup(host).map(|r| r.server.name.as_str())
    }

    #[test]
    fn every_server_gets_its_name_under_the_base_domain() {
        let servers = [
            entry("tenant-a", "survival", "2026-01-01T00:00:00Z", &[], Some(("a", &[]))),
            entry("tenant-b", "survival", "2026-01-01T00:00:00Z", &[], None),
        ];
        let t = RouteTable::build(Some("Play.Example.COM."), &servers);
        assert_eq!(t.len(), 2);
        let r = t.lookup("survival.tenant-a.play.example.com").unwrap();
        assert_eq!((r.server.namespace.as_str(), r.tenant.as_deref()), ("tenant-a", Some("a")));
        // Looked up as the client may type it.
        assert_eq!(t.lookup("SURVIVAL.tenant-b.play.example.com.").unwrap().server.namespace, "tenant-b");
        assert!(t.lookup("survival.tenant-c.play.example.com").is_none());
        assert!(RouteTable::build(None, &servers).is_empty(), "no base domain: no generated names");
        assert_eq!(t.hostnames_of(&servers[0].key), vec!["survival.tenant-a.play.example.com"]);
    }

    #[test]
    fn the_first_allowed_claimant_keeps_a_custom_hostname() {
        let a_dom: &[&str] = &["a.example"];
        let both: &[&str] = &["a.example", "b.example"];
        let servers = [
            // B claims A's name later, within its own domains.
            entry("tenant-b", "thief", "2026-02-01T00:00:00Z", &["mc.a.example"], Some(("b", both))),
            entry("tenant-a", "home", "2026-01-01T00:00:00Z", &["MC.a.example."], Some(("a", a_dom))),
            // Earlier, but outside its tenant's domains: holds nothing.
            entry("tenant-c", "squatter", "2025-01-01T00:00:00Z", &["mc.a.example"], Some(("c", &["c.example"]))),
            // Not in a tenant: no custom hostnames at all.
            entry("games", "loose", "2024-01-01T00:00:00Z", &["loose.a.example"], None),
        ];
        let t = RouteTable::build(Some("play.example"), &servers);
        assert_eq!(target(&t, "mc.a.example"), Some("home"));
        assert!(t.lookup("loose.a.example").is_none());
        let refused = t.refused(&servers[0].key);
        assert_eq!(refused.len(), 1);
        assert!(
            matches!(&refused[0].1, RouteRefusal::Claim(Refusal::Conflict { holder, .. }) if holder == "tenant-a/home")
        );
        assert!(matches!(&t.refused(&servers[2].key)[0].1, RouteRefusal::Claim(Refusal::NotAllowed { .. })));
        assert!(matches!(&t.refused(&servers[3].key)[0].1, RouteRefusal::Claim(Refusal::NotAllowed { .. })));
        assert!(t.refused(&servers[1].key).is_empty());
        // The holder gone: the next allowed claimant gets it.
        let t = RouteTable::build(Some("play.example"), &[servers[0].clone(), servers[2].clone()]);
        assert_eq!(target(&t, "mc.a.example"), Some("thief"));
    }

    #[test]
    fn the_base_domain_is_reserved_for_generated_names() {
        // An admin gave a tenant the base domain itself: its custom names
        // there still cannot shadow another server's generated name.
        let servers = [
            entry(
                "tenant-a",
                "grab",
                "2020-01-01T00:00:00Z",
                &["survival.tenant-b.play.example"],
                Some(("a", &["play.example"])),
            ),
            entry("tenant-b", "survival", "2026-01-01T00:00:00Z", &[], Some(("b", &[]))),
        ];
        let t = RouteTable::build(Some("play.example"), &servers);
        assert_eq!(t.lookup("survival.tenant-b.play.example").unwrap().server.namespace, "tenant-b");
        let e = &t.refused(&servers[0].key)[0].1;
        assert!(matches!(e, RouteRefusal::Reserved { .. }), "{e}");
        assert!(e.to_string().contains("reserved"), "{e}");
        // Without a base domain the same name is an ordinary custom one.
        let t = RouteTable::build(None, &servers);
        assert_eq!(target(&t, "survival.tenant-b.play.example"), Some("grab"));
    }

    #[test]
    fn deleted_servers_route_nothing() {
        let mut s = crate::resources::testdata::server("survival", "sku: small\neula: true\nhostname: mc.a.example");
        s.metadata.namespace = Some("tenant-a".into());
        let e = ServerEntry::from_server(&s, Some(("a".into(), vec!["a.example".into()]))).unwrap();
        assert_eq!(e.hostnames, vec!["mc.a.example".to_string()]);
        assert_eq!(target(&RouteTable::build(None, &[e]), "mc.a.example"), Some("survival"));
        s.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now()));
        assert!(ServerEntry::from_server(&s, None).is_none());
    }

    fn any_servers() -> impl Strategy<Value = Vec<ServerEntry>> {
        let one = (0u8..3, 0u8..4, 0i64..5, proptest::collection::vec(0u8..4, 0..3), 0u8..3);
        proptest::collection::vec(one, 0..12).prop_map(|v| {
            let tenants: [&[&str]; 3] = [&["x.example"], &["x.example", "y.example"], &["play.example"]];
            v.into_iter()
                .map(|(ns, name, t, hosts, tenant)| ServerEntry {
                    key: ServerKey { namespace: format!("ns{ns}"), name: format!("s{name}") },
                    created: Some(Timestamp::from_second(1_700_000_000 + t).unwrap()),
                    hostnames: hosts
                        .iter()
                        .map(|h| {
                            ["mc.x.example", "MC.y.example.", "s1.ns1.play.example", "z.example"][*h as usize].into()
                        })
                        .collect(),
                    tenant: Some((
                        format!("t{tenant}"),
                        tenants[tenant as usize].iter().map(|s| s.to_string()).collect(),
                    )),
                })
                .collect()
        })
    }

    proptest! {
        /// Whatever the servers: the table does not depend on their order,
        /// a custom hostname goes to a server that asked for it and is
        /// allowed by the operator's rule, and every asking server either
        /// holds it or has it refused.
        #[test]
        fn routes_are_deterministic_and_follow_the_rule(mut servers in any_servers(), seed in any::<u64>()) {
            // Keys must be unique, as in a cluster.
            let mut seen = std::collections::HashSet::new();
            servers.retain(|s| seen.insert(s.key.clone()));
            let t = RouteTable::build(Some("play.example"), &servers);
            let mut shuffled = servers.clone();
            let n = shuffled.len().max(1);
            shuffled.rotate_left((seed as usize) % n);
            shuffled.reverse();
            let u = RouteTable::build(Some("play.example"), &shuffled);
            for s in &servers {
                prop_assert_eq!(t.hostnames_of(&s.key), u.hostnames_of(&s.key));
                for h in &s.hostnames {
                    let routed = t.lookup(h).map(|r| &r.server);
                    let refused = t.refused(&s.key).iter().any(|(rh, _)| rh == h);
                    prop_assert!(routed == Some(&s.key) || refused, "{} neither holds nor is refused {}", s.key, h);
                    if let Some(k) = routed.filter(|k| !k.name.is_empty() && !normalize(h).ends_with(".play.example")) {
                        let holder = servers.iter().find(|x| &x.key == k).unwrap();
                        prop_assert!(holder.hostnames.iter().any(|x| normalize(x) == normalize(h)));
                        prop_assert!(may_claim(&holder.claim(h), servers.iter().flat_map(|x| x.hostnames.iter().map(move |xh| x.claim(xh))), None).is_ok());
                    }
                }
            }
        }
    }
}
