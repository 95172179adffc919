//! Who may hold a hostname: within the domains the admin gave the tenant
//! (`Tenant.spec.hostnameDomains`) and one server per hostname cluster-wide,
//! the first claimant keeping it. Pure, so a gateway routing several
//! hostnames per server can ask the same question per hostname. Names
//! under the admin's base domain are the default hostnames
//! (`<server>.<namespace>.<base domain>`), one per server by construction,
//! and never a custom hostname's.

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

/// Whether `name` is a DNS name a client can send: labels of 1–63 letters,
/// digits and inner `-`, at most 253 characters (a trailing dot allowed).
pub fn valid_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            (1..=63).contains(&l.len())
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// The default hostname of a server, `<server>.<namespace>.<base>`
/// (lowercase), or why it cannot have one (a name that makes no valid DNS
/// name: [`Refusal::DefaultInvalid`]).
pub fn default_hostname(server: &str, namespace: &str, base: &str) -> Result<String, Refusal> {
    let host = normalize(&format!("{server}.{namespace}.{}", normalize(base)));
    let labels_ok = [server, namespace].iter().all(|l| !l.contains('.'));
    if labels_ok && valid_dns_name(&host) && !normalize(base).is_empty() {
        Ok(host)
    } else {
        Err(Refusal::DefaultInvalid { host })
    }
}

/// What players type: the first custom hostname held, else the default
/// one, with `:port` only when the gateway does not listen on 25565.
pub fn address(custom: &[String], default: Option<&str>, port: u16) -> Option<String> {
    let host = custom.first().map(String::as_str).or(default)?;
    Some(if port == 25565 { host.to_string() } else { format!("{host}:{port}") })
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
    #[error(
        "hostname {host:?} is not allowed: names under the base domain {base:?} are the servers' default hostnames (<server>.<namespace>.{base})"
    )]
    Reserved { host: String, base: String },
    #[error(
        "no default hostname: {host:?} is not a valid DNS name (labels of at most 63 characters, 253 in all); custom hostnames still work"
    )]
    DefaultInvalid { host: String },
}

impl Refusal {
    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::NotAllowed { .. } => "HostnameNotAllowed",
            Refusal::Conflict { .. } => "HostnameConflict",
            Refusal::Reserved { .. } => "HostnameNotAllowed",
            Refusal::DefaultInvalid { .. } => "DefaultHostnameInvalid",
        }
    }
}

/// Whether `me` may hold its hostname given every other claim of any
/// hostname (`others` may include `me` and unrelated hostnames): it must be
/// within its tenant's domains and not under the base domain `base` (the
/// default hostnames'), and no earlier claimant that may itself use the
/// hostname may ask for the same one.
pub fn may_claim<'a>(
    me: &Claim<'_>,
    others: impl IntoIterator<Item = Claim<'a>>,
    base: Option<&str>,
) -> Result<(), Refusal> {
    if let Some(base) = base.filter(|b| !normalize(b).is_empty())
        && within(me.hostname, &[base.to_string()])
    {
        return Err(Refusal::Reserved { host: me.hostname.into(), base: normalize(base) });
    }
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

/// The outcome of a server's custom hostnames: those it holds (in the
/// order asked) and those refused, each with why.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Grants {
    pub held: Vec<String>,
    pub refused: Vec<Refusal>,
}

/// Decides each of `wanted` (a server's custom hostnames) on its own:
/// `claim(h)` is the server's claim of `h`, `rivals(h)` every claim of `h`
/// by any server. A server may hold some and be refused others.
pub fn grant<'a>(
    wanted: &'a [String],
    claim: impl Fn(&'a str) -> Claim<'a>,
    rivals: impl Fn(&str) -> Vec<Claim<'a>>,
    base: Option<&str>,
) -> Grants {
    let mut g = Grants::default();
    for h in wanted {
        match may_claim(&claim(h), rivals(h), base) {
            Ok(()) => g.held.push(normalize(h)),
            Err(r) => g.refused.push(r),
        }
    }
    g
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
        assert_eq!(may_claim(&a, [a.clone(), b.clone()], None), Ok(()));
        let e = may_claim(&b, [a.clone(), b.clone()], None).unwrap_err();
        assert_eq!(e.reason(), "HostnameConflict");
        assert!(e.to_string().contains("tenant-a/srv"), "{e}");
        // The holder gone: B gets it.
        assert_eq!(may_claim(&b, [b.clone()], None), Ok(()));
        // An earlier claimant outside its own domains holds nothing.
        let squatter = claim("tenant-c", "early", Some("2025-01-01T00:00:00Z"), "mc.a.example", &b_dom);
        assert_eq!(may_claim(&a, [squatter.clone(), a.clone()], None), Ok(()));
        assert_eq!(may_claim(&squatter, [a.clone()], None).unwrap_err().reason(), "HostnameNotAllowed");
        // Same creation time: namespace, then name, decides.
        let t = Some("2026-01-01T00:00:00Z");
        let x = claim("ns1", "b", t, "mc.a.example", &a_dom);
        let y = claim("ns1", "c", t, "mc.a.example", &a_dom);
        let z = claim("ns0", "z", t, "mc.a.example", &a_dom);
        assert_eq!(may_claim(&x, [y.clone()], None), Ok(()));
        assert!(may_claim(&y, [x.clone()], None).is_err());
        assert!(may_claim(&x, [z.clone(), y.clone()], None).unwrap_err().to_string().contains("ns0/z"));
        // Other hostnames do not matter.
        let other = claim("ns0", "o", Some("2020-01-01T00:00:00Z"), "play.a.example", &a_dom);
        assert_eq!(may_claim(&x, [other], None), Ok(()));
    }

    #[test]
    fn no_tenant_or_no_domains_allows_no_hostname() {
        let none: Vec<String> = vec![];
        let me = claim("games", "s", None, "mc.example.com", &none);
        let e = may_claim(&me, [], None).unwrap_err();
        assert_eq!(e.reason(), "HostnameNotAllowed");
        assert!(e.to_string().contains("hostnameDomains"), "{e}");
        let dom = d(&["other.net"]);
        let me = claim("games", "s", None, "mc.example.com", &dom);
        assert!(may_claim(&me, [], None).unwrap_err().to_string().contains("other.net"));
    }

    #[test]
    fn each_hostname_is_decided_on_its_own() {
        let a_dom = d(&["a.example"]);
        let b_dom = d(&["a.example", "b.example"]);
        let wanted = d(&["play.a.example", "mc.b.example", "eu.play.a.example", "srv.ns.games.example"]);
        // An earlier server of another tenant holds eu.play.a.example.
        let holder = claim("tenant-b", "old", Some("2025-01-01T00:00:00Z"), "eu.play.a.example", &b_dom);
        let t = Some("2026-01-01T00:00:00Z");
        let mine = claim("tenant-a", "srv", t, "eu.play.a.example", &a_dom);
        let g = grant(
            &wanted,
            |h| claim("tenant-a", "srv", t, h, &a_dom),
            |h| if h == holder.hostname { vec![holder.clone(), mine.clone()] } else { vec![] },
            Some("Games.Example."),
        );
        assert_eq!(g.held, ["play.a.example"]);
        let reasons: Vec<_> = g.refused.iter().map(|r| (r.reason(), r.to_string())).collect();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert_eq!(reasons[0].0, "HostnameNotAllowed", "outside the tenant's domains");
        assert_eq!(reasons[1].0, "HostnameConflict");
        assert!(reasons[1].1.contains("tenant-b/old"), "{}", reasons[1].1);
        assert_eq!(reasons[2].0, "HostnameNotAllowed", "under the base domain");
        assert!(reasons[2].1.contains("default hostnames"), "{}", reasons[2].1);
        // A tenant whose domains include the base domain still may not take
        // another server's default hostname.
        let wide = d(&["games.example"]);
        let thief = claim("tenant-a", "srv", None, "victim.tenant-b.games.example", &wide);
        assert_eq!(may_claim(&thief, [], Some("games.example")).unwrap_err().reason(), "HostnameNotAllowed");
        assert_eq!(may_claim(&thief, [], None), Ok(()), "no base domain: an ordinary domain");
    }

    #[test]
    fn default_hostnames_are_built_and_checked() {
        assert_eq!(
            default_hostname("survival", "tenant-a", "Games.Example.").unwrap(),
            "survival.tenant-a.games.example"
        );
        // Longest server name (52) and namespace (63): fine under a short base.
        let (srv, ns) = ("s".repeat(52), "n".repeat(63));
        assert!(default_hostname(&srv, &ns, "games.example").is_ok());
        // Too long in all (> 253).
        let base = ["b".repeat(63), "c".repeat(63), "example".into(), "com".into()].join(".");
        let e = default_hostname(&srv, &ns, &base).unwrap_err();
        assert_eq!(e.reason(), "DefaultHostnameInvalid");
        assert!(e.to_string().contains("253"), "{e}");
        // A label too long, or not a DNS label at all.
        assert!(default_hostname(&"x".repeat(64), "ns", "games.example").is_err());
        assert!(default_hostname("a.b", "ns", "games.example").is_err(), "a dot in a name");
        assert!(default_hostname("a_b", "ns", "games.example").is_err());
        assert!(default_hostname("-a", "ns", "games.example").is_err());
        assert!(default_hostname("a", "ns", "").is_err(), "no base domain");
        for bad in ["", ".", "a..b", "a.-b", "é.example", &"a".repeat(254)] {
            assert!(!valid_dns_name(bad), "{bad:?}");
        }
        for ok in ["a", "a.b.", "x-1.example", "1.2.3"] {
            assert!(valid_dns_name(ok), "{ok:?}");
        }
    }

    #[test]
    fn the_address_is_the_first_custom_hostname_else_the_default() {
        let custom = d(&["play.a.example", "eu.a.example"]);
        assert_eq!(address(&custom, Some("s.ns.games.example"), 25565).unwrap(), "play.a.example");
        assert_eq!(address(&[], Some("s.ns.games.example"), 25565).unwrap(), "s.ns.games.example");
        assert_eq!(address(&[], Some("s.ns.games.example"), 30000).unwrap(), "s.ns.games.example:30000");
        assert_eq!(address(&custom, None, 443).unwrap(), "play.a.example:443");
        assert_eq!(address(&[], None, 25565), None);
    }
}
