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

    /// The store for a snapshot: its own ref, else the tenant's, else the default.
    pub fn pick<'a>(
        &'a self,
        own: Option<&'a StoreRef>,
        tenant: Option<&'a StoreRef>,
    ) -> Result<(&'a StoreConfig, Option<&'a str>), String> {
        let (name, prefix) = match own.or(tenant) {
            Some(r) => (r.name.as_str(), r.prefix.as_deref()),
            None => match &self.default_store {
                Some(d) => (d.as_str(), None),
                None => return Err("no store named and no default store configured (--backup-stores)".into()),
            },
        };
        let store = self.stores.iter().find(|s| s.name == name).ok_or_else(|| {
            let known: Vec<&str> = self.stores.iter().map(|s| s.name.as_str()).collect();
            format!(
                "store {name:?} is not configured; configured: {}",
                if known.is_empty() { "none".into() } else { known.join(", ") }
            )
        })?;
        Ok((store, prefix))
    }
}

/// Location URL of one snapshot: `<store url>/<prefix>/<namespace>/<server>/<snapshot>-<uid8>`.
pub fn snapshot_url(
    store: &StoreConfig,
    prefix: Option<&str>,
    ns: &str,
    server: &str,
    snapshot: &str,
    uid: &str,
) -> String {
    let mut url = store.url.trim_end_matches('/').to_string();
    if let Some(p) = prefix.map(|p| p.trim_matches('/')).filter(|p| !p.is_empty()) {
        url.push('/');
        url.push_str(p);
    }
    let short: String = uid.chars().filter(|c| c.is_ascii_alphanumeric()).take(8).collect();
    format!("{url}/{ns}/{server}/{snapshot}-{short}")
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

    #[test]
    fn snapshots_pick_their_store_then_the_tenants_then_the_default() {
        let s = stores();
        assert!(s.check().is_ok());
        let own = StoreRef { name: "cold".into(), prefix: Some("x/".into()) };
        let tenant = StoreRef { name: "main".into(), prefix: Some("tenants/acme".into()) };
        assert_eq!(s.pick(Some(&own), Some(&tenant)).unwrap().0.name, "cold");
        let (st, prefix) = s.pick(None, Some(&tenant)).unwrap();
        assert_eq!((st.name.as_str(), prefix), ("main", Some("tenants/acme")));
        assert_eq!(
            snapshot_url(st, prefix, "games", "survival", "nightly", "0a1b2c3d-99"),
            "s3://b/prod/tenants/acme/games/survival/nightly-0a1b2c3d"
        );
        assert_eq!(s.pick(None, None).unwrap().0.name, "main");
        let unknown = StoreRef { name: "nope".into(), prefix: None };
        assert!(s.pick(Some(&unknown), None).unwrap_err().contains("configured: main, cold"));
        let bad: Stores = serde_yaml::from_str("defaultStore: x\nstores: []\n").unwrap();
        assert!(bad.check().is_err());
        assert!(Stores { default_store: None, stores: vec![] }.pick(None, None).is_err());
    }
}
