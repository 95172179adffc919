//! The gateway's route table: which server each hostname reaches. Built
//! from the MinecraftServers of a watch cache as plain data, so the rule is
//! tested here and the listener only looks names up.
//!
//! The operator is the one decider of who holds a hostname: it writes every
//! name a server holds to `status.hostnames` (the default
//! `<server>.<namespace>.<base domain>` and the custom names it granted).
//! The gateway routes those and decides nothing else, with one guarantee
//! of its own: a hostname never reaches two servers. Two statuses can name
//! the same host for a moment (a claim moving after its holder's deletion,
//! a stale status); then the server whose default name it is wins, else the
//! operator's tie-break (oldest creation, then namespace/name), so every
//! replica picks the same one.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;

use crate::api::MinecraftServer;
use crate::resources::hostname::normalize;

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
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    pub server: ServerKey,
    /// The server's tenant (for per-tenant limits), when it has one.
    pub tenant: Option<String>,
    /// Connection limits its SKU and tenant set (none: the gateway's flags).
    pub limits: Limits,
    /// Set while the server sleeps or wakes (`spec.sleep`).
    pub sleep: Option<Arc<Sleeping>>,
}

/// Whether a server sleeps or is waking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SleepState {
    /// Asleep: a join may wake it.
    Asleep,
    /// Woken, not ready yet: joins wait for it.
    Waking,
}

/// What the gateway needs of a sleeping or waking server.
#[derive(Clone, Debug, PartialEq)]
pub struct Sleeping {
    pub state: SleepState,
    /// A join may wake it (`wakeOnJoin`, the SKU's when forced).
    pub wake_on_join: bool,
    /// `spec.whitelist` lowercased (names, UUIDs); empty: anyone may join.
    pub whitelist: Vec<String>,
    /// Its last Server List Ping answer before it slept.
    pub last_seen: Option<crate::api::sleep::LastSeen>,
}

impl Sleeping {
    /// The sleep state of a server as its status shows it: asleep while
    /// `status.sleep.asleepSince` is set; waking while it starts within
    /// 15 minutes of a wake. `None`: neither.
    pub fn of(s: &MinecraftServer, sku: Option<&crate::api::Sku>, now: Timestamp) -> Option<Sleeping> {
        use crate::api::server::{ServerPhase, ServerState};
        if s.spec.state != ServerState::Running {
            return None;
        }
        let st = s.status.as_ref()?;
        let sl = st.sleep.as_ref()?;
        let state = if sl.asleep_since.is_some() {
            SleepState::Asleep
        } else {
            let recent = sl.last_wake.as_ref().is_some_and(|t| now.duration_since(t.0).as_secs() < 900);
            let starting = matches!(
                st.phase,
                Some(
                    ServerPhase::Hibernated | ServerPhase::Pending | ServerPhase::Provisioning | ServerPhase::Starting
                )
            );
            if !(recent && starting) {
                return None;
            }
            SleepState::Waking
        };
        let policy = crate::api::sleep::effective(s.spec.sleep.as_ref(), sku.and_then(|k| k.spec.sleep.as_ref())).ok();
        Some(Sleeping {
            state,
            wake_on_join: policy.is_none_or(|p| p.wake_on_join),
            whitelist: s.spec.whitelist.iter().map(|w| w.to_lowercase()).collect(),
            last_seen: sl.last_seen.clone(),
        })
    }

    /// Whether a player may join: anyone without a whitelist; else one
    /// named in it by name or UUID (either spelling of the UUID).
    pub fn admits(&self, name: &str, uuid: Option<u128>) -> bool {
        if self.whitelist.is_empty() {
            return true;
        }
        let name = name.to_lowercase();
        let (plain, dashed) = match uuid {
            Some(u) => {
                let h = format!("{u:032x}");
                let d = format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..]);
                (Some(h), Some(d))
            }
            None => (None, None),
        };
        self.whitelist
            .iter()
            .any(|w| *w == name || plain.as_deref() == Some(w.as_str()) || dashed.as_deref() == Some(w.as_str()))
    }
}

/// Open-connection limits set on a server's SKU and tenant
/// (`spec.gateway`); `None` leaves the gateway's own default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub per_server: Option<u32>,
    pub per_tenant: Option<u32>,
}

impl Limits {
    /// The per-server limit is the lower of the SKU's and the tenant's; the
    /// per-tenant limit is the tenant's.
    pub fn of(tenant: Option<&crate::api::Tenant>, sku: Option<&crate::api::Sku>) -> Limits {
        let t = tenant.and_then(|t| t.spec.gateway.as_ref());
        let s = sku.and_then(|s| s.spec.gateway.as_ref());
        let per_server =
            match (t.and_then(|g| g.max_connections_per_server), s.and_then(|g| g.max_connections_per_server)) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        Limits { per_server, per_tenant: t.and_then(|g| g.max_connections) }
    }
}

/// One server as the table needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerEntry {
    pub key: ServerKey,
    pub created: Option<Timestamp>,
    /// The hostnames the operator granted it (`status.hostnames`).
    pub hostnames: Vec<String>,
    /// Its tenant's name (none: not in a tenant).
    pub tenant: Option<String>,
    /// Limits from its SKU and tenant.
    pub limits: Limits,
    /// Its sleep state, when it sleeps or wakes.
    pub sleep: Option<Arc<Sleeping>>,
}

impl ServerEntry {
    /// The entry of a cached server, with its tenant as resolved by the
    /// caller. `None` for a server being deleted or without a name.
    pub fn from_server(s: &MinecraftServer, tenant: Option<String>, limits: Limits) -> Option<ServerEntry> {
        if s.metadata.deletion_timestamp.is_some() {
            return None;
        }
        Some(ServerEntry {
            key: ServerKey { namespace: s.metadata.namespace.clone()?, name: s.metadata.name.clone()? },
            created: s.metadata.creation_timestamp.as_ref().map(|t| t.0),
            hostnames: s.status.as_ref().map(|st| st.hostnames.clone()).unwrap_or_default(),
            tenant,
            limits,
            sleep: None,
        })
    }

    /// Whether `host` (normalised) is this server's default name under `base`.
    fn is_default(&self, host: &str, base: Option<&str>) -> bool {
        base.is_some_and(|b| {
            host.strip_suffix(b)
                .and_then(|h| h.strip_suffix('.'))
                .is_some_and(|h| h == format!("{}.{}", self.key.name, self.key.namespace))
        })
    }
}

/// A hostname two servers' statuses name; `loser` gets no traffic by it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub host: String,
    pub holder: ServerKey,
    pub loser: ServerKey,
}

/// Hostname → server.
#[derive(Clone, Debug, Default)]
pub struct RouteTable {
    routes: HashMap<String, Route>,
    /// Per server, the hostnames that reach it (sorted).
    by_server: BTreeMap<ServerKey, Vec<String>>,
    conflicts: Vec<Conflict>,
}

impl RouteTable {
    /// Builds the table from every server. `base_domain`: the admin's
    /// domain of default names, only used to break a tie in favour of the
    /// server whose default name it is.
    pub fn build(base_domain: Option<&str>, servers: &[ServerEntry]) -> RouteTable {
        let base = base_domain.map(normalize).filter(|b| !b.is_empty());
        let base = base.as_deref();
        let mut holders: HashMap<String, &ServerEntry> = HashMap::new();
        for s in servers {
            for h in &s.hostnames {
                let host = normalize(h);
                if host.is_empty() {
                    continue;
                }
                match holders.get(&host) {
                    Some(held) if precedes(held, s, &host, base) != Ordering::Greater => {}
                    _ => {
                        holders.insert(host, s);
                    }
                }
            }
        }
        let mut t = RouteTable::default();
        for s in servers {
            for h in &s.hostnames {
                let host = normalize(h);
                match holders.get(&host) {
                    Some(held) if held.key != s.key => t.conflicts.push(Conflict {
                        host: host.clone(),
                        holder: held.key.clone(),
                        loser: s.key.clone(),
                    }),
                    _ => {}
                }
            }
        }
        for (host, s) in holders {
            t.by_server.entry(s.key.clone()).or_default().push(host.clone());
            t.routes.insert(
                host,
                Route { server: s.key.clone(), tenant: s.tenant.clone(), limits: s.limits, sleep: s.sleep.clone() },
            );
        }
        for v in t.by_server.values_mut() {
            v.sort();
            v.dedup();
        }
        t.conflicts.sort_by(|a, b| (&a.host, &a.loser).cmp(&(&b.host, &b.loser)));
        t.conflicts.dedup();
        t
    }

    /// The route of a hostname as the handshake gives it (normalised here
    /// too: case, trailing dot).
    pub fn lookup(&self, host: &str) -> Option<&Route> {
        self.routes.get(&normalize(host))
    }

    /// The hostnames that reach `server`, sorted.
    pub fn hostnames_of(&self, server: &ServerKey) -> &[String] {
        self.by_server.get(server).map(|v| v.as_slice()).unwrap_or_default()
    }

    /// Hostnames two statuses name, and who got them (for a log line).
    pub fn conflicts(&self) -> &[Conflict] {
        &self.conflicts
    }

    /// Hostnames routed.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

/// Which of two servers naming `host` keeps it: its default name's owner,
/// else the older, else the smaller namespace/name (the operator's order).
fn precedes(a: &ServerEntry, b: &ServerEntry, host: &str, base: Option<&str>) -> Ordering {
    b.is_default(host, base)
        .cmp(&a.is_default(host, base))
        .then_with(|| match (a.created, b.created) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        })
        .then_with(|| a.key.cmp(&b.key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(ns: &str, name: &str, created: &str, hosts: &[&str], tenant: Option<&str>) -> ServerEntry {
        ServerEntry {
            key: ServerKey { namespace: ns.into(), name: name.into() },
            created: Some(created.parse().unwrap()),
            hostnames: hosts.iter().map(|h| h.to_string()).collect(),
            tenant: tenant.map(str::to_string),
            limits: Limits::default(),
            sleep: None,
        }
    }

    #[test]
    fn limits_take_the_lower_per_server_and_the_tenants_total() {
        let tenant = |g: serde_json::Value| -> crate::api::Tenant {
            crate::api::Tenant::new(
                "t",
                serde_json::from_value(serde_json::json!({"owners": [{"kind": "User", "name": "a"}], "gateway": g}))
                    .unwrap(),
            )
        };
        let sku = |n: Option<u32>| -> crate::api::Sku {
            let mut v = serde_json::json!({"resources": {"cpu": "1", "memory": "1Gi", "storage": "1Gi"}});
            if let Some(n) = n {
                v["gateway"] = serde_json::json!({"maxConnectionsPerServer": n});
            }
            crate::api::Sku::new("s", serde_json::from_value(v).unwrap())
        };
        let both = tenant(serde_json::json!({"maxConnections": 50, "maxConnectionsPerServer": 8}));
        assert_eq!(Limits::of(Some(&both), Some(&sku(Some(5)))), Limits { per_server: Some(5), per_tenant: Some(50) });
        assert_eq!(Limits::of(Some(&both), Some(&sku(Some(20)))), Limits { per_server: Some(8), per_tenant: Some(50) });
        assert_eq!(Limits::of(Some(&both), Some(&sku(None))), Limits { per_server: Some(8), per_tenant: Some(50) });
        let none = tenant(serde_json::json!({}));
        assert_eq!(Limits::of(Some(&none), Some(&sku(Some(3)))), Limits { per_server: Some(3), per_tenant: None });
        assert_eq!(Limits::of(None, None), Limits::default());
    }

    fn target<'a>(t: &'a RouteTable, host: &str) -> Option<&'a str> {
        t.lookup(host).map(|r| r.server.name.as_str())
    }

    #[test]
    fn granted_hostnames_route_to_their_server() {
        let servers = [
            entry(
                "tenant-a",
                "survival",
                "2026-01-01T00:00:00Z",
                &["mc.a.example", "survival.tenant-a.play.example.com"],
                Some("a"),
            ),
            entry("tenant-b", "survival", "2026-01-01T00:00:00Z", &["survival.tenant-b.play.example.com"], None),
            // No status yet: routes nothing.
            entry("tenant-c", "survival", "2026-01-01T00:00:00Z", &[], Some("c")),
        ];
        let t = RouteTable::build(Some("Play.Example.COM."), &servers);
        assert_eq!(t.len(), 3);
        let r = t.lookup("survival.tenant-a.play.example.com").unwrap();
        assert_eq!((r.server.namespace.as_str(), r.tenant.as_deref()), ("tenant-a", Some("a")));
        // Looked up as the client may type it.
        assert_eq!(t.lookup("SURVIVAL.tenant-b.play.example.com.").unwrap().server.namespace, "tenant-b");
        assert_eq!(t.lookup("MC.A.example").unwrap().server.namespace, "tenant-a");
        assert!(t.lookup("survival.tenant-c.play.example.com").is_none());
        assert_eq!(t.hostnames_of(&servers[0].key), ["mc.a.example", "survival.tenant-a.play.example.com"]);
        assert!(t.hostnames_of(&servers[2].key).is_empty());
        assert!(t.conflicts().is_empty());
    }

    #[test]
    fn a_hostname_two_statuses_name_reaches_one_server() {
        let servers = [
            // A later server whose status names A's name (stale or forged).
            entry("tenant-b", "thief", "2026-02-01T00:00:00Z", &["mc.a.example"], Some("b")),
            entry("tenant-a", "home", "2026-01-01T00:00:00Z", &["mc.a.example"], Some("a")),
            // Older, naming another server's default name: the default's owner wins.
            entry("tenant-c", "grab", "2020-01-01T00:00:00Z", &["home.tenant-a.play.example"], Some("c")),
            entry("tenant-a", "home2", "2026-01-01T00:00:00Z", &["home.tenant-a.play.example"], Some("a")),
        ];
        let t = RouteTable::build(Some("play.example"), &servers);
        assert_eq!(target(&t, "mc.a.example"), Some("home"));
        // home2 is not home: by creation, grab (older) keeps it.
        assert_eq!(target(&t, "home.tenant-a.play.example"), Some("grab"));
        let mut s = servers.to_vec();
        s[3].key.name = "home".into();
        s[3].hostnames.push("mc.a.example".into());
        let t = RouteTable::build(Some("play.example"), &s);
        assert_eq!(target(&t, "home.tenant-a.play.example"), Some("home"), "its default name wins");
        assert_eq!(
            t.conflicts().iter().map(|c| (c.host.as_str(), c.loser.name.as_str())).collect::<Vec<_>>(),
            [("home.tenant-a.play.example", "grab"), ("mc.a.example", "thief")]
        );
        // The holder gone: the other one gets it.
        let t = RouteTable::build(Some("play.example"), &servers[..1]);
        assert_eq!(target(&t, "mc.a.example"), Some("thief"));
    }

    #[test]
    fn deleted_servers_route_nothing() {
        let mut s = crate::resources::testdata::server("survival", "sku: small\neula: true\nhostname: mc.a.example");
        s.metadata.namespace = Some("tenant-a".into());
        // Asked for in spec, not granted: nothing.
        let e = ServerEntry::from_server(&s, Some("a".into()), Limits::default()).unwrap();
        assert!(e.hostnames.is_empty());
        s.status = Some(serde_json::from_value(serde_json::json!({"hostnames": ["mc.a.example"]})).unwrap());
        let e = ServerEntry::from_server(&s, Some("a".into()), Limits::default()).unwrap();
        assert_eq!(target(&RouteTable::build(None, &[e]), "mc.a.example"), Some("survival"));
        s.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now()));
        assert!(ServerEntry::from_server(&s, None, Limits::default()).is_none());
    }

    fn any_servers() -> impl Strategy<Value = Vec<ServerEntry>> {
        let one = (0u8..3, 0u8..4, proptest::option::of(0i64..5), proptest::collection::vec(0u8..5, 0..4));
        proptest::collection::vec(one, 0..12).prop_map(|v| {
            v.into_iter()
                .map(|(ns, name, t, hosts)| ServerEntry {
                    key: ServerKey { namespace: format!("ns{ns}"), name: format!("s{name}") },
                    created: t.map(|t| Timestamp::from_second(1_700_000_000 + t).unwrap()),
                    hostnames: hosts
                        .iter()
                        .map(|h| {
                            ["mc.x.example", "MC.x.example.", "s1.ns1.play.example", "s2.ns0.play.example", "z.example"]
                                [*h as usize]
                                .into()
                        })
                        .collect(),
                    tenant: Some(format!("t{ns}")),
                    limits: Limits::default(),
                    sleep: None,
                })
                .collect()
        })
    }

    #[test]
    fn a_whitelist_admits_by_name_or_either_uuid_spelling() {
        let s = Sleeping {
            state: SleepState::Asleep,
            wake_on_join: true,
            whitelist: vec!["steve".into(), "069a79f4-44e9-4726-a5be-fca90e38aaf5".into()],
            last_seen: None,
        };
        assert!(s.admits("Steve", None));
        assert!(!s.admits("Alex", None));
        assert!(s.admits("Renamed", Some(0x069a79f444e94726a5befca90e38aaf5)));
        assert!(!s.admits("Renamed", Some(1)));
        let open = Sleeping { whitelist: vec![], ..s };
        assert!(open.admits("Anyone", None));
    }

    proptest! {
        /// Whatever the servers: the table does not depend on their order,
        /// every hostname named goes to exactly one server that named it,
        /// and that server precedes every other one naming it.
        #[test]
        fn one_server_per_hostname_whatever_the_order(mut servers in any_servers(), seed in any::<u64>()) {
            // Keys are unique, as in a cluster.
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
                    let host = normalize(h);
                    let holder = &t.lookup(h).expect("every named host routes").server;
                    let holder = servers.iter().find(|x| &x.key == holder).unwrap();
                    prop_assert!(holder.hostnames.iter().any(|x| normalize(x) == host));
                    prop_assert!(
                        holder.key == s.key || precedes(holder, s, &host, Some("play.example")) == Ordering::Less,
                        "{} holds {} although {} precedes it", holder.key, host, s.key
                    );
                    let in_lists = servers.iter().filter(|x| t.hostnames_of(&x.key).contains(&host)).count();
                    prop_assert_eq!(in_lists, 1);
                }
            }
        }
    }
}
