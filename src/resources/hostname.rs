//! Who may hold a hostname: within the domains the admin gave the tenant
//! (`Tenant.spec.hostnameDomains`) and one server per hostname cluster-wide,
//! the first claimant keeping it. Pure, so a gateway routing several
//! hostnames per server can ask the same question per hostname.

use k8s_openapi::jiff::Timestamp;

/// A hostname in the form compared: lowercase, without a trailing dot.
pub fn normalize(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether `host` is one of `domains` or a subdomain of one (whole labels:
/// `example.com` covers `mc.example.com`, not `badexample.com`). Case and a
/// trailing dot are ignored.
pub fn within(host: &str, domains: &[String]) -> bool {
    let host = normalize(host);
    !host.is_empty()
        && domains.iter().map(|d| normalize(d)).any(|d| {
            !d.is_empty()
                && (host == d
                    || host.strip_suffix(d.as_str()).is_some_and(|rest| rest.ends_with('.') && rest.len() > 1))
        })
}

/// A server asking for a hostname.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    /// Creation time; an object not yet stored (none) sorts last.
    pub created: Option<Timestamp>,
    pub hostname: &'a str,
    /// The `hostnameDomains` of the server's tenant (none: not in a tenant).
    pub domains: &'a [String],
}

impl Claim<'_> {
    /// Earlier claims win: oldest creation, then namespace/name.
    fn order(&self) -> (bool, Option<Timestamp>, &str, &str) {
        (self.created.is_none(), self.created, self.namespace, self.name)
    }

    fn same_server(&self, other: &Claim<'_>) -> bool {
        self.namespace == other.namespace && self.name == other.name
    }
}

/// Why a server may not hold its hostname; each variant is a condition
/// reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "hostname {host:?} is not allowed: {}",
        if domains.is_empty() {
            "this namespace's tenant has no hostnameDomains (an admin assigns them in Tenant.spec.hostnameDomains)".to_string()
        } else {
            format!("it is not within the tenant's hostnameDomains ({})", domains.join(", "))
        }
    )]
    NotAllowed { host: String, domains: Vec<String> },
    #[error("hostname {host:?} is held by MinecraftServer {holder}, which claimed it first")]
    Conflict { host: String, holder: String },
}

impl Refusal {
    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::NotAllowed { .. } => "HostnameNotAllowed",
            Refusal::Conflict { .. } => "HostnameConflict",
        }
    }
}

/// Whether `me` may hold its hostname given every other claim of any
/// hostname (`others` may include `me` and unrelated hostnames): it must be
/// within its tenant's domains, and no earlier claimant that is itself
/// within its own tenant's domains may ask for the same hostname.
pub fn may_claim<'a>(me: &Claim<'_>, others: impl IntoIterator<Item = Claim<'a>>) -> Result<(), Refusal> {
    if !within(me.hostname, me.domains) {
        return Err(Refusal::NotAllowed { host: me.hostname.into(), domains: me.domains.to_vec() });
    }
    let host = normalize(me.hostname);
    let holder = others
        .into_iter()
        .filter(|o| !o.same_server(me) && normalize(o.hostname) == host && within(o.hostname, o.domains))
        .filter(|o| o.order() < me.order())
        .min_by(|a, b| a.order().cmp(&b.order()));
    match holder {
        Some(h) => Err(Refusal::Conflict { host: me.hostname.into(), holder: format!("{}/{}", h.namespace, h.name) }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn within_matches_whole_labels_without_case_or_trailing_dot() {
        let domains = d(&["Example.COM."]);
        for ok in ["example.com", "mc.example.com", "a.b.example.com.", "MC.Example.com"] {
            assert!(within(ok, &domains), "{ok}");
        }
        for bad in ["badexample.com", "example.com.evil.net", "com", "", ".example.com", "xexample.com"] {
            assert!(!within(bad, &domains), "{bad}");
        }
        assert!(!within("example.com", &[]), "no domains: nothing");
        assert!(!within("example.com", &d(&[""])), "an empty domain allows nothing");
        assert!(!within("example.com", &d(&["."])), "the root allows nothing");
    }

    fn claim<'a>(ns: &'a str, name: &'a str, t: Option<&str>, host: &'a str, domains: &'a [String]) -> Claim<'a> {
        Claim { namespace: ns, name, created: t.map(|t| t.parse().unwrap()), hostname: host, domains }
    }

    #[test]
    fn the_first_allowed_claimant_keeps_a_hostname() {
        let a_dom = d(&["a.example"]);
        let b_dom = d(&["b.example"]);
        let both = d(&["a.example", "b.example"]);
        let a = claim("tenant-a", "srv", Some("2026-01-01T00:00:00Z"), "mc.a.example", &a_dom);
        // B, later, in a tenant that may use the domain too.
        let b = claim("tenant-b", "srv", Some("2026-01-02T00:00:00Z"), "MC.a.example.", &both);
        assert_eq!(may_claim(&a, [a.clone(), b.clone()]), Ok(()));
        let e = may_claim(&b, [a.clone(), b.clone()]).unwrap_err();
        assert_eq!(e.reason(), "HostnameConflict");
        assert!(e.to_string().contains("tenant-a/srv"), "{e}");
        // The holder gone: B gets it.
        assert_eq!(may_claim(&b, [b.clone()]), Ok(()));
        // An earlier claimant outside its own domains holds nothing.
        let squatter = claim("tenant-c", "early", Some("2025-01-01T00:00:00Z"), "mc.a.example", &b_dom);
        assert_eq!(may_claim(&a, [squatter.clone(), a.clone()]), Ok(()));
        assert_eq!(may_claim(&squatter, [a.clone()]).unwrap_err().reason(), "HostnameNotAllowed");
        // Same creation time: namespace, then name, decides.
        let t = Some("2026-01-01T00:00:00Z");
        let x = claim("ns1", "b", t, "mc.a.example", &a_dom);
        let y = claim("ns1", "c", t, "mc.a.example", &a_dom);
        let z = claim("ns0", "z", t, "mc.a.example", &a_dom);
        assert_eq!(may_claim(&x, [y.clone()]), Ok(()));
        assert!(may_claim(&y, [x.clone()]).is_err());
        assert!(may_claim(&x, [z.clone(), y.clone()]).unwrap_err().to_string().contains("ns0/z"));
        // Other hostnames do not matter.
        let other = claim("ns0", "o", Some("2020-01-01T00:00:00Z"), "play.a.example", &a_dom);
        assert_eq!(may_claim(&x, [other]), Ok(()));
    }

    #[test]
    fn no_tenant_or_no_domains_allows_no_hostname() {
        let none: Vec<String> = vec![];
        let me = claim("games", "s", None, "mc.example.com", &none);
        let e = may_claim(&me, []).unwrap_err();
        assert_eq!(e.reason(), "HostnameNotAllowed");
        assert!(e.to_string().contains("hostnameDomains"), "{e}");
        let dom = d(&["other.net"]);
        let me = claim("games", "s", None, "mc.example.com", &dom);
        assert!(may_claim(&me, []).unwrap_err().to_string().contains("other.net"));
    }
}
