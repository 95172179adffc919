//! The concrete Minecraft version a server runs.
//!
//! `LATEST` and `SNAPSHOT` move: the image would download whatever is newest
//! at each start, and Modrinth knows no version called `LATEST`. craftplane
//! resolves them once, to the newest release (or snapshot) Modrinth lists,
//! records that in `status.resolvedVersion`, and from then on uses it for
//! the image tag, the image's `VERSION` and plugin compatibility. It does
//! not move by itself (a world upgrade is one-way and plugins must follow):
//! set `spec.version` to a newer version to upgrade, or to a concrete
//! version and back to `LATEST` to take the newest again.

use crate::api::server::ResolvedVersion;

/// The newest Minecraft versions, as the version source lists them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LatestVersions {
    /// Newest release (what `LATEST` means).
    pub release: String,
    /// Newest release or snapshot (what `SNAPSHOT` means).
    pub snapshot: String,
}

/// True for the moving aliases `LATEST` and `SNAPSHOT`.
pub fn is_alias(version: &str) -> bool {
    matches!(version, "LATEST" | "SNAPSHOT")
}

/// The version to run and the resolution to record: a concrete
/// `spec.version` is itself (nothing recorded); an alias keeps the version
/// it resolved to before, or resolves now from `latest`; without either it
/// stays the alias (the caller retries).
pub fn effective(
    spec_version: &str,
    recorded: Option<&ResolvedVersion>,
    latest: Option<&LatestVersions>,
) -> (String, Option<ResolvedVersion>) {
    if !is_alias(spec_version) {
        return (spec_version.to_string(), None);
    }
    if let Some(r) = recorded.filter(|r| r.from == spec_version) {
        return (r.version.clone(), Some(r.clone()));
    }
    match latest {
        Some(l) => {
            let version = if spec_version == "LATEST" { l.release.clone() } else { l.snapshot.clone() };
            (version.clone(), Some(ResolvedVersion { from: spec_version.to_string(), version }))
        }
        None => (spec_version.to_string(), None),
    }
}

/// The Minecraft version a server's plugins are resolved for:
/// `spec.version`, or what `LATEST`/`SNAPSHOT` resolved to (`None` until then).
pub fn minecraft_version(server: &crate::api::MinecraftServer) -> Option<String> {
    let v = &server.spec.version;
    if !is_alias(v) {
        return Some(v.clone());
    }
    server.status.as_ref()?.resolved_version.as_ref().filter(|r| &r.from == v).map(|r| r.version.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latest(release: &str, snapshot: &str) -> LatestVersions {
        LatestVersions { release: release.into(), snapshot: snapshot.into() }
    }

    #[test]
    fn aliases_resolve_once_and_stay() {
        let l = latest("26.1", "26.2-snapshot-1");
        assert_eq!(effective("1.21.4", None, Some(&l)), ("1.21.4".into(), None));
        let (v, r) = effective("LATEST", None, Some(&l));
        assert_eq!(v, "26.1");
        let r = r.unwrap();
        assert_eq!(r, ResolvedVersion { from: "LATEST".into(), version: "26.1".into() });
        // A newer release later does not move the server.
        let newer = latest("26.2", "26.3-snapshot-1");
        assert_eq!(effective("LATEST", Some(&r), Some(&newer)).0, "26.1");
        // Switching to SNAPSHOT resolves again.
        assert_eq!(effective("SNAPSHOT", Some(&r), Some(&newer)).0, "26.3-snapshot-1");
        // Unknown yet: stays the alias, nothing recorded.
        assert_eq!(effective("LATEST", None, None), ("LATEST".into(), None));
        assert_eq!(effective("LATEST", Some(&r), None).0, "26.1");
    }
}
