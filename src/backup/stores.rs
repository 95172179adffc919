//! Backup stores the cluster admin configures (`--backup-stores`, Helm
//! `backup.stores`). Tenants only name them (`StoreRef`); they never point
//! the operator at credentials of their own.
//!
//! ```yaml
//! defaultStore: main
//! stores:
//!   - name: main
//!     url: s3://craftplane-backups/prod
//!     config: {AWS_REGION: eu-west-1}          # AWS_* / GOOGLE_* / AZURE_* settings
//!     credentialsSecret: craftplane-backup-s3   # Secret in the operator namespace; its keys are such settings too
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::api::common::StoreRef;

/// The stores file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Stores {
    /// Store used when neither the snapshot nor its tenant names one.
    #[serde(default)]
    pub default_store: Option<String>,
    #[serde(default)]
    pub stores: Vec<StoreConfig>,
}

/// One store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StoreConfig {
    pub name: String,
    /// Base URL: s3://bucket/prefix, gs://…, az://…, file:///dir.
    pub url: String,
    /// Non-secret settings, as environment variable names (AWS_ENDPOINT, …).
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Secret (operator namespace) whose keys are secret settings
    /// (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, …).
    #[serde(default)]
    pub credentials_secret: Option<String>,
}

impl Stores {
    /// Reads and checks a stores file.
    pub fn load(path: &std::path::Path) -> Result<Stores, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let s: Stores = serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        s.check().map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(s)
    }

    fn check(&self) -> Result<(), String> {
        let mut names = std::collections::BTreeSet::new();
        for st in &self.stores {
            if !names.insert(st.name.as_str()) {
                return Err(format!("store {:?} is defined twice", st.name));
            }
            super::Location::check_url(&st.url).map_err(|e| format!("store {:?}: {e}", st.name))?;
        }
        if let Some(d) = &self.default_store
            && !names.contains(d.as_str())
        {
            return Err(format!("defaultStore {d:?} is not one of the stores"));
        }
        Ok(())
    }

    /// A configured store by its exact name.
    pub fn named(&self, name: &str) -> Result<&StoreConfig, String> {
        self.stores.iter().find(|s| s.name == name).ok_or_else(|| {
            let known: Vec<&str> = self.stores.iter().map(|s| s.name.as_str()).collect();
            format!(
                "store {name:?} is not configured; configured: {}",
                if known.is_empty() { "none".into() } else { known.join(", ") }
            )
        })
    }

    /// The name of the store a snapshot asks for: its own reference, else
    /// its tenant's store, else the default store.
    pub fn requested_name<'a>(
        &'a self,
        requested: Option<&'a StoreRef>,
        tenant: Option<&Grants<'a>>,
    ) -> Option<&'a str> {
        requested.or(tenant.and_then(|g| g.own)).map(|r| r.name.as_str()).or(self.default_store.as_deref())
    }

    /// Where a new snapshot goes. The store is the one the snapshot names,
    /// else its tenant's own (`Tenant.spec.backupStore`, else the default
    /// store); a tenant may name only its own store and the ones its admin
    /// lists (`allowedBackupStores`). The key is
    /// `<store url>/<tenant prefix>/<namespace>/<prefix>/<server>/<snapshot>-<uid8>`:
    /// the tenant's prefix is the admin's, the snapshot's own prefix only a
    /// sub-path under the tenant's namespace. A namespace of no tenant may
    /// name any store.
    pub fn place(
        &self,
        requested: Option<&StoreRef>,
        tenant: Option<&Grants>,
        key: &SnapshotKey,
    ) -> Result<Placement<'_>, Refusal> {
        let sub = match requested.and_then(|r| r.prefix.as_deref()) {
            Some(p) => check_prefix(p).map_err(|e| Refusal::new(INVALID_PREFIX, format!("prefix {p:?}: {e}")))?,
            None => vec![],
        };
        let default = || {
            self.default_store.as_deref().ok_or_else(|| {
                Refusal::new(STORE_NOT_CONFIGURED, "no store named and no default store configured (--backup-stores)")
            })
        };
        let (name, root): (&str, Option<&str>) = match (requested, tenant) {
            (Some(r), None) => (r.name.as_str(), None),
            (None, None) => (default()?, None),
            (requested, Some(g)) => {
                let own = match g.own {
                    Some(o) => (o.name.as_str(), o.prefix.as_deref()),
                    None => (default()?, None),
                };
                let grants: Vec<(&str, Option<&str>)> = std::iter::once(own)
                    .chain(g.allowed.iter().map(|a| (a.name.as_str(), a.prefix.as_deref())))
                    .collect();
                let name = requested.map(|r| r.name.as_str()).unwrap_or(own.0);
                match grants.iter().find(|(n, _)| *n == name) {
                    Some(&(_, root)) => (name, root),
                    None => {
                        let names: Vec<&str> = grants.iter().map(|(n, _)| *n).collect();
                        return Err(Refusal::new(
                            STORE_NOT_ALLOWED,
                            format!(
                                "store {name:?} is not allowed for tenant {}; it may use: {}",
                                g.tenant,
                                names.join(", ")
                            ),
                        ));
                    }
                }
            }
        };
        let root = match root {
            Some(p) => {
                check_prefix(p).map_err(|e| Refusal::new(INVALID_PREFIX, format!("the tenant's prefix {p:?}: {e}")))?
            }
            None => vec![],
        };
        let store = self.named(name).map_err(|e| Refusal::new(STORE_NOT_CONFIGURED, e))?;
        let mut location = store.url.trim_end_matches('/').to_string();
        let leaf = key.leaf();
        for seg in root.iter().chain([&key.namespace]).chain(sub.iter()).chain([&key.server, &leaf.as_str()]) {
            location.push('/');
            location.push_str(seg);
        }
        Ok(Placement { store, location })
    }
}

/// Condition reason: the snapshot names a store its tenant may not use.
pub const STORE_NOT_ALLOWED: &str = "StoreNotAllowed";
/// Condition reason: a prefix (or a recorded location) is not a plain
/// relative path inside the tenant's part of the store.
pub const INVALID_PREFIX: &str = "InvalidPrefix";
/// Condition reason: a recorded location is not the snapshot's own key in
/// its store (recorded before prefixes were checked).
pub const INVALID_LOCATION: &str = "InvalidLocation";
/// Condition reason: no such store.
pub const STORE_NOT_CONFIGURED: &str = "StoreNotConfigured";

/// What a tenant may use: its own store and the ones its admin lists.
#[derive(Clone, Copy, Debug)]
pub struct Grants<'a> {
    pub tenant: &'a str,
    pub own: Option<&'a StoreRef>,
    pub allowed: &'a [StoreRef],
}

impl<'a> Grants<'a> {
    pub fn of(t: &'a crate::api::Tenant) -> Grants<'a> {
        Grants {
            tenant: t.metadata.name.as_deref().unwrap_or_default(),
            own: t.spec.backup_store.as_ref(),
            allowed: &t.spec.allowed_backup_stores,
        }
    }
}

/// The identity of one snapshot, as its key names it.
#[derive(Clone, Copy, Debug)]
pub struct SnapshotKey<'a> {
    pub namespace: &'a str,
    pub server: &'a str,
    pub snapshot: &'a str,
    pub uid: &'a str,
}

impl SnapshotKey<'_> {
    /// The last key segment: `<snapshot>-<uid8>`.
    pub fn leaf(&self) -> String {
        let short: String = self.uid.chars().filter(|c| c.is_ascii_alphanumeric()).take(8).collect();
        format!("{}-{short}", self.snapshot)
    }
}

/// A store refused, with its condition reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: &'static str,
    pub message: String,
}

impl Refusal {
    fn new(reason: &'static str, message: impl Into<String>) -> Refusal {
        Refusal { reason, message: message.into() }
    }
}

/// A new snapshot's store and location.
#[derive(Debug)]
pub struct Placement<'a> {
    pub store: &'a StoreConfig,
    pub location: String,
}

/// Checks a prefix of a store reference: a relative path of plain segments
/// (letters, digits, `-`, `_`, `.`; none starting with `.`, so no `.` or
/// `..`), no empty segment, no backslash or percent escape, at most 256
/// characters; one trailing `/` is allowed. Returns its segments. The CRD
/// schema has the same rule ([`PREFIX_PATTERN`]).
pub fn check_prefix(p: &str) -> Result<Vec<&str>, String> {
    if p.len() > 256 {
        return Err("longer than 256 characters".into());
    }
    if p.starts_with('/') {
        return Err("must be relative (no leading '/')".into());
    }
    let body = p.strip_suffix('/').unwrap_or(p);
    if body.is_empty() {
        return Ok(vec![]);
    }
    body.split('/').map(check_segment).collect()
}

fn check_segment(s: &str) -> Result<&str, String> {
    if s.is_empty() {
        return Err("empty path segment ('//')".into());
    }
    if s.starts_with('.') {
        return Err(format!("segment {s:?} starts with '.' ('.' and '..' are not allowed)"));
    }
    if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))) {
        return Err(format!("segment {s:?} contains {c:?}: only letters, digits, '-', '_' and '.' are allowed"));
    }
    Ok(s)
}

/// The schema pattern of a store reference's prefix ([`check_prefix`]).
pub const PREFIX_PATTERN: &str = r"^([A-Za-z0-9_-][A-Za-z0-9_.-]*/)*([A-Za-z0-9_-][A-Za-z0-9_.-]*)?$";

/// Checks that a recorded location is this snapshot's own key in `store`:
/// under the store's URL, plain segments only, the snapshot's namespace
/// among them and `<server>/<snapshot>-<uid8>` at the end. Guards restore
/// and deletion against locations recorded before prefixes were checked.
pub fn check_location(store: &StoreConfig, location: &str, key: &SnapshotKey) -> Result<(), String> {
    let base = format!("{}/", store.url.trim_end_matches('/'));
    let rest = location
        .strip_prefix(&base)
        .ok_or_else(|| format!("{location} is not under the URL of store {:?}", store.name))?;
    let segs: Vec<&str> =
        rest.split('/').map(check_segment).collect::<Result<_, _>>().map_err(|e| format!("{location}: {e}"))?;
    let n = segs.len();
    let own =
        n >= 3 && segs[n - 1] == key.leaf() && segs[n - 2] == key.server && segs[..n - 2].contains(&key.namespace);
    if !own {
        return Err(format!(
            "{location} is not the key of snapshot {}/{} of server {}",
            key.namespace, key.snapshot, key.server
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stores() -> Stores {
        serde_yaml::from_str(
            "defaultStore: main\nstores:\n- name: main\n  url: s3://b/prod/\n- name: cold\n  url: file:///var/backups\n",
        )
        .unwrap()
    }

    fn key() -> SnapshotKey<'static> {
        SnapshotKey { namespace: "games", server: "survival", snapshot: "nightly", uid: "0a1b2c3d-99" }
    }

    fn r(name: &str, prefix: Option<&str>) -> StoreRef {
        StoreRef { name: name.into(), prefix: prefix.map(str::to_string) }
    }

    #[test]
    fn snapshots_use_their_store_then_the_tenants_then_the_default() {
        let s = stores();
        assert!(s.check().is_ok());
        let own = r("cold", Some("x/"));
        let (place, refuse) = (|o, t| s.place(o, t, &key()).unwrap(), |o, t| s.place(o, t, &key()).unwrap_err());
        // No tenant (an admin's namespace): any store.
        let p = place(Some(&own), None);
        assert_eq!(
            (p.store.name.as_str(), p.location.as_str()),
            ("cold", "file:///var/backups/games/x/survival/nightly-0a1b2c3d")
        );
        assert_eq!(place(None, None).location, "s3://b/prod/games/survival/nightly-0a1b2c3d");
        // A tenant: its own store, under the admin's prefix.
        let mine = r("main", Some("tenants/acme"));
        let acme = Grants { tenant: "acme", own: Some(&mine), allowed: &[] };
        let p = place(None, Some(&acme));
        assert_eq!(
            (p.store.name.as_str(), p.location.as_str()),
            ("main", "s3://b/prod/tenants/acme/games/survival/nightly-0a1b2c3d")
        );
        // Its own prefix is a sub-path under the tenant's namespace.
        let nightly = r("main", Some("nightly/"));
        assert_eq!(
            place(Some(&nightly), Some(&acme)).location,
            "s3://b/prod/tenants/acme/games/nightly/survival/nightly-0a1b2c3d"
        );
        // Another store only when the admin lists it.
        let e = refuse(Some(&own), Some(&acme));
        assert_eq!(e.reason, STORE_NOT_ALLOWED);
        assert_eq!(e.message, "store \"cold\" is not allowed for tenant acme; it may use: main");
        let listed = [r("cold", Some("acme"))];
        let acme2 = Grants { tenant: "acme", own: Some(&mine), allowed: &listed };
        assert_eq!(
            place(Some(&own), Some(&acme2)).location,
            "file:///var/backups/acme/games/x/survival/nightly-0a1b2c3d"
        );
        // A tenant without a store of its own has the default store.
        let plain = Grants { tenant: "p", own: None, allowed: &[] };
        assert_eq!(place(None, Some(&plain)).store.name, "main");
        assert_eq!(refuse(Some(&own), Some(&plain)).reason, STORE_NOT_ALLOWED);
        assert_eq!(s.requested_name(None, Some(&acme)), Some("main"));
        assert_eq!(s.requested_name(Some(&own), Some(&acme)), Some("cold"));
        // Unknown stores, no default.
        let unknown = r("nope", None);
        let e = refuse(Some(&unknown), None);
        assert_eq!(e.reason, STORE_NOT_CONFIGURED);
        assert!(e.message.contains("configured: main, cold"), "{}", e.message);
        let bad: Stores = serde_yaml::from_str("defaultStore: x\nstores: []\n").unwrap();
        assert!(bad.check().is_err());
        let none = Stores { default_store: None, stores: vec![] };
        assert_eq!(none.place(None, None, &key()).unwrap_err().reason, STORE_NOT_CONFIGURED);
    }

    /// A tenant's prefix never leaves its part of the store: `..`, escapes,
    /// absolute and empty segments are refused, and another tenant's prefix
    /// only lands under this tenant's namespace.
    #[test]
    fn prefixes_stay_inside_the_tenants_part_of_the_store() {
        let re = regex::Regex::new(PREFIX_PATTERN).unwrap();
        for bad in [
            "..",
            "../x",
            "a/../b",
            "a/..",
            ".",
            "./a",
            "%2e%2e",
            "a/%2e%2e/b",
            "/abs",
            "/",
            "a//b",
            "a\\b",
            "..\\x",
            "a/.hidden",
            "s3://b/x",
            "a?x=1",
            "a#f",
            "a b",
            "é",
        ] {
            assert!(check_prefix(bad).is_err(), "{bad:?} accepted");
            assert!(!re.is_match(bad), "the schema pattern accepts {bad:?}");
        }
        for good in ["", "a", "a/", "tenants/acme", "tenants/acme/", "v1.2_x-y/z"] {
            assert!(check_prefix(good).is_ok(), "{good:?} refused");
            assert!(re.is_match(good), "the schema pattern refuses {good:?}");
        }
        assert!(check_prefix(&"a".repeat(257)).is_err());
        let s = stores();
        let mine = r("main", Some("tenants/acme"));
        let acme = Grants { tenant: "acme", own: Some(&mine), allowed: &[] };
        for bad in ["..", "%2e%2e", "/abs", "a//b", "../../tenants/other"] {
            let e = s.place(Some(&r("main", Some(bad))), Some(&acme), &key()).unwrap_err();
            assert_eq!(e.reason, INVALID_PREFIX, "{bad}");
        }
        // Naming another tenant's prefix: still under this tenant's namespace.
        let p = s.place(Some(&r("main", Some("tenants/other"))), Some(&acme), &key()).unwrap();
        assert_eq!(p.location, "s3://b/prod/tenants/acme/games/tenants/other/survival/nightly-0a1b2c3d");
        // A bad prefix of the admin's is refused too, not used.
        let broken = r("main", Some("a/../b"));
        let g = Grants { tenant: "acme", own: Some(&broken), allowed: &[] };
        assert_eq!(s.place(None, Some(&g), &key()).unwrap_err().reason, INVALID_PREFIX);
    }

    #[test]
    fn the_schema_checks_prefixes_as_the_reconciler_does() {
        for crd in [
            <crate::api::BackupSnapshot as kube::CustomResourceExt>::crd(),
            <crate::api::Tenant as kube::CustomResourceExt>::crd(),
            <crate::api::MinecraftServer as kube::CustomResourceExt>::crd(),
        ] {
            let text = serde_json::to_string(&crd).unwrap();
            assert!(text.contains(&serde_json::to_string(PREFIX_PATTERN).unwrap()), "{:?}", crd.metadata.name);
        }
    }

    /// Restore and deletion use a recorded location only when it is the
    /// snapshot's own key under its store's URL.
    #[test]
    fn recorded_locations_must_be_the_snapshots_own_key() {
        let s = stores();
        let main = s.named("main").unwrap();
        let k = key();
        for ok in [
            "s3://b/prod/games/survival/nightly-0a1b2c3d",
            "s3://b/prod/tenants/acme/games/survival/nightly-0a1b2c3d",
            "s3://b/prod/tenants/acme/games/sub/survival/nightly-0a1b2c3d",
            "s3://b/prod/old-prefix/games/survival/nightly-0a1b2c3d",
        ] {
            assert!(check_location(main, ok, &k).is_ok(), "{ok}");
        }
        for bad in [
            "s3://b/prod/../games/survival/nightly-0a1b2c3d",
            "s3://b/prod/x/%2e%2e/games/survival/nightly-0a1b2c3d",
            "s3://b/prod//games/survival/nightly-0a1b2c3d",
            "s3://b/production/games/survival/nightly-0a1b2c3d",
            "s3://b/prod/other/survival/nightly-0a1b2c3d",
            "s3://b/prod/games/creative/nightly-0a1b2c3d",
            "s3://b/prod/games/survival/nightly-ffffffff",
            "file:///var/backups/games/survival/nightly-0a1b2c3d",
        ] {
            assert!(check_location(main, bad, &k).is_err(), "{bad}");
        }
    }
}
