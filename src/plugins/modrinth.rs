//! Modrinth (API v2) resolution: a project (and optional version) plus a
//! server's loader and Minecraft version → one exact file with its sha512,
//! and the files of its required dependencies.
//!
//! Selection ([`pick`]) is pure; [`Client`] does the HTTP.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::api::plugin::{DependencyPolicy, ResolvedArtifact, ResolvedDependency};

/// The public Modrinth API.
pub const DEFAULT_BASE_URL: &str = "https://api.modrinth.com/v2";
/// How deep dependencies of dependencies are followed.
const MAX_DEPTH: usize = 4;

/// One version of a project.
#[derive(Clone, Debug, Deserialize)]
pub struct Version {
    pub id: String,
    pub project_id: String,
    pub version_number: String,
    #[serde(default)]
    pub game_versions: Vec<String>,
    #[serde(default)]
    pub loaders: Vec<String>,
    /// release, beta or alpha.
    #[serde(default)]
    pub version_type: Option<String>,
    #[serde(default)]
    pub date_published: String,
    #[serde(default)]
    pub files: Vec<File>,
    #[serde(default)]
    pub dependencies: Vec<Dependency>,
}

/// A Minecraft version Modrinth knows (`GET /tag/game_version`).
#[derive(Clone, Debug, Deserialize)]
pub struct GameVersion {
    pub version: String,
    /// release, snapshot, alpha or beta.
    pub version_type: String,
    /// Release date (RFC 3339).
    #[serde(default)]
    pub date: String,
}

/// The newest release and the newest release-or-snapshot (by date) of
/// Modrinth's version list; `None` without any release.
pub fn latest_versions(tags: &[GameVersion]) -> Option<crate::resources::version::LatestVersions> {
    let newest = |ok: &dyn Fn(&str) -> bool| {
        tags.iter()
            .filter(|t| ok(&t.version_type))
            .filter_map(|t| Some((t.date.parse::<k8s_openapi::jiff::Timestamp>().ok()?, &t.version)))
            .max_by_key(|(d, _)| *d)
            .map(|(_, v)| v.clone())
    };
    let release = newest(&|t| t == "release")?;
    let snapshot = newest(&|t| t == "release" || t == "snapshot").unwrap_or_else(|| release.clone());
    Some(crate::resources::version::LatestVersions { release, snapshot })
}

/// A file of a version.
#[derive(Clone, Debug, Deserialize)]
pub struct File {
    pub url: String,
    pub filename: String,
    #[serde(default)]
    pub primary: bool,
    #[serde(default)]
    pub hashes: Hashes,
}

/// Checksums Modrinth publishes for a file.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Hashes {
    #[serde(default)]
    pub sha512: Option<String>,
    #[serde(default)]
    pub sha1: Option<String>,
}

/// A dependency of a version.
#[derive(Clone, Debug, Deserialize)]
pub struct Dependency {
    #[serde(default)]
    pub version_id: Option<String>,
    #[serde(default)]
    pub project_id: Option<String>,
    /// required, optional, incompatible or embedded.
    pub dependency_type: String,
}

/// What a plugin must run on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Modrinth loader names, best first (see [`super::loaders`]).
    pub loaders: Vec<String>,
    /// The server's Minecraft version, e.g. `1.21.4`.
    pub game_version: String,
}

impl Target {
    fn fits(&self, v: &Version) -> bool {
        v.game_versions.iter().any(|g| g == &self.game_version) && v.loaders.iter().any(|l| self.loaders.contains(l))
    }
    fn describe(&self) -> String {
        let loaders = if self.loaders.is_empty() { "no plugin loader".to_string() } else { self.loaders.join("/") };
        format!("{loaders} on Minecraft {}", self.game_version)
    }
}

/// Why a source does not resolve. Each variant is a condition reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// Network error, timeout, 5xx or an unreadable answer.
    #[error("{0}")]
    SourceUnreachable(String),
    /// The project or version does not exist.
    #[error("{0}")]
    SourceNotFound(String),
    /// No version fits the server.
    #[error("{0}")]
    Incompatible(String),
}

impl ResolveError {
    /// The condition reason (CamelCase).
    pub fn reason(&self) -> &'static str {
        match self {
            ResolveError::SourceUnreachable(_) => "SourceUnreachable",
            ResolveError::SourceNotFound(_) => "SourceNotFound",
            ResolveError::Incompatible(_) => "Incompatible",
        }
    }
}

/// Chooses the version to install: `requested` (a version id or version
/// number) when given, else the newest release that fits `target`.
pub fn pick<'a>(
    project: &str,
    versions: &'a [Version],
    target: &Target,
    requested: Option<&str>,
) -> Result<&'a Version, ResolveError> {
    if let Some(req) = requested {
        let v = versions.iter().find(|v| v.id == req || v.version_number == req).ok_or_else(|| {
            let newest: Vec<&str> = newest_first(versions).iter().take(5).map(|v| v.version_number.as_str()).collect();
            ResolveError::SourceNotFound(format!(
                "Modrinth project {project} has no version {req:?}; newest: {}",
                if newest.is_empty() { "none".into() } else { newest.join(", ") }
            ))
        })?;
        if !target.fits(v) {
            return Err(ResolveError::Incompatible(format!(
                "{project} {} supports {} on Minecraft {}; the server needs {}",
                v.version_number,
                list(&v.loaders),
                summarize(&v.game_versions),
                target.describe()
            )));
        }
        return Ok(v);
    }
    let ordered = newest_first(versions);
    if let Some(v) = ordered.iter().find(|v| target.fits(v) && is_release(v)) {
        return Ok(v);
    }
    if let Some(v) = ordered.iter().find(|v| target.fits(v)) {
        return Err(ResolveError::Incompatible(format!(
            "{project} has no release for {}; pre-release {} fits: pin it with `version` to use it",
            target.describe(),
            v.version_number
        )));
    }
    Err(ResolveError::Incompatible(incompatible_message(project, versions, target)))
}

fn is_release(v: &Version) -> bool {
    v.version_type.as_deref().is_none_or(|t| t == "release")
}

fn newest_first(versions: &[Version]) -> Vec<&Version> {
    let mut v: Vec<&Version> = versions.iter().collect();
    // RFC 3339 timestamps of one format sort as strings.
    v.sort_by(|a, b| b.date_published.cmp(&a.date_published));
    v
}

fn incompatible_message(project: &str, versions: &[Version], target: &Target) -> String {
    let for_loader: Vec<&Version> =
        versions.iter().filter(|v| v.loaders.iter().any(|l| target.loaders.contains(l))).collect();
    if target.loaders.is_empty() {
        return format!("{project} cannot be installed: the server type runs neither plugins nor mods");
    }
    if for_loader.is_empty() {
        let all: BTreeSet<&str> = versions.iter().flat_map(|v| v.loaders.iter().map(String::as_str)).collect();
        return format!(
            "no version of {project} supports {}; it supports: {}",
            target.loaders.join("/"),
            if all.is_empty() { "nothing".into() } else { all.into_iter().collect::<Vec<_>>().join(", ") }
        );
    }
    let games: Vec<String> = for_loader.iter().flat_map(|v| v.game_versions.iter().cloned()).collect();
    format!(
        "no version of {project} supports {}; for {} it supports Minecraft {}",
        target.describe(),
        target.loaders.join("/"),
        summarize(&games)
    )
}

fn list(items: &[String]) -> String {
    if items.is_empty() { "nothing".into() } else { items.join(", ") }
}

/// The distinct Minecraft versions, in release order, shortened to the
/// first and the newest few.
fn summarize(versions: &[String]) -> String {
    let mut v: Vec<&String> = versions.iter().collect::<BTreeSet<_>>().into_iter().collect();
    v.sort_by_key(|a| game_version_key(a));
    match v.len() {
        0 => "none".into(),
        1..=6 => v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
        n => format!("{} … {}", v[0], v[n - 5..].iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")),
    }
}

fn game_version_key(v: &str) -> Vec<u64> {
    v.split(['.', '-']).map(|p| p.parse().unwrap_or(0)).collect()
}

/// The file a version installs, as a resolved artifact.
pub fn artifact(v: &Version) -> Result<ResolvedArtifact, ResolveError> {
    let file = v.files.iter().find(|f| f.primary).or_else(|| v.files.first()).ok_or_else(|| {
        ResolveError::SourceUnreachable(format!("Modrinth version {} has no files", v.version_number))
    })?;
    let sha512 =
        file.hashes.sha512.clone().filter(|h| h.len() == 128 && h.bytes().all(|b| b.is_ascii_hexdigit())).ok_or_else(
            || {
                ResolveError::SourceUnreachable(format!(
                    "Modrinth gave no sha512 for {}; refusing an unverifiable file",
                    file.filename
                ))
            },
        )?;
    if !super::valid_file_name(&file.filename) {
        return Err(ResolveError::SourceUnreachable(format!(
            "Modrinth file name {:?} is not a plain .jar name",
            file.filename
        )));
    }
    Ok(ResolvedArtifact {
        url: file.url.clone(),
        version: Some(v.version_number.clone()),
        project_id: Some(v.project_id.clone()),
        version_id: Some(v.id.clone()),
        file_name: Some(file.filename.clone()),
        sha256: None,
        sha512: Some(sha512.to_ascii_lowercase()),
    })
}

/// A Modrinth API client with a configurable base URL.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    /// A client for `base` (e.g. [`DEFAULT_BASE_URL`]).
    pub fn new(base: &str, timeout: Duration) -> Result<Client, String> {
        let parsed = url::Url::parse(base).map_err(|e| format!("invalid Modrinth URL {base:?}: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!("invalid Modrinth URL {base:?}: not http(s)"));
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("craftplane/", env!("CARGO_PKG_VERSION"), " (Kubernetes operator)"))
            .timeout(timeout)
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        Ok(Client { http, base: base.trim_end_matches('/').to_string() })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str, what: &str) -> Result<T, ResolveError> {
        let url = format!("{}{path}", self.base);
        let resp = self.http.get(&url).send().await.map_err(|e| {
            ResolveError::SourceUnreachable(format!("cannot reach Modrinth for {what}: {}", super::error_chain(&e)))
        })?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(ResolveError::SourceNotFound(format!("Modrinth has no {what}")));
        }
        if !status.is_success() {
            return Err(ResolveError::SourceUnreachable(format!("Modrinth answered {status} for {what}")));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| ResolveError::SourceUnreachable(format!("reading Modrinth's answer for {what}: {e}")))?;
        serde_json::from_slice(&body)
            .map_err(|e| ResolveError::SourceUnreachable(format!("unexpected Modrinth answer for {what}: {e}")))
    }

    /// GET /project/{id|slug}/version
    pub async fn versions(&self, id: &str) -> Result<Vec<Version>, ResolveError> {
        check_id(id)?;
        self.get(&format!("/project/{id}/version"), &format!("project {id:?}")).await
    }

    /// GET /tag/game_version: every Minecraft version, newest first.
    pub async fn game_versions(&self) -> Result<Vec<GameVersion>, ResolveError> {
        self.get("/tag/game_version", "the list of Minecraft versions").await
    }

    /// GET /version/{id}
    pub async fn version(&self, id: &str) -> Result<Version, ResolveError> {
        check_id(id)?;
        self.get(&format!("/version/{id}"), &format!("version {id:?}")).await
    }
}

fn check_id(id: &str) -> Result<(), ResolveError> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        return Err(ResolveError::SourceNotFound(format!("{id:?} is not a Modrinth id or slug")));
    }
    Ok(())
}

/// A resolved Modrinth source.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolution {
    /// Modrinth id of the project.
    pub project_id: String,
    pub artifact: ResolvedArtifact,
    /// Required dependencies (transitively), each satisfied or not.
    pub dependencies: Vec<ResolvedDependency>,
}

/// Resolves `project` (and `version`) for `target`; `provided(project_id)`
/// tells whether another installation on the same server already provides a
/// project, which then satisfies a dependency on it.
pub async fn resolve(
    client: &Client,
    project: &str,
    version: Option<&str>,
    target: &Target,
    policy: DependencyPolicy,
    provided: &(dyn Fn(&str) -> bool + Sync),
) -> Result<Resolution, ResolveError> {
    // The version list answers for slugs and ids alike and names the
    // project id: no separate project lookup is needed.
    let versions = client.versions(project).await?;
    let v = pick(project, &versions, target, version)?;
    let main = artifact(v)?;
    let project_id = v.project_id.clone();
    let mut dependencies = Vec::new();
    let mut seen = BTreeSet::from([project_id.clone()]);
    let mut queue: Vec<(Version, usize)> = vec![(v.clone(), 0)];
    while let Some((ver, depth)) = queue.pop() {
        for dep in ver.dependencies.iter().filter(|d| d.dependency_type == "required") {
            let (dep_project, pinned) = match (&dep.project_id, &dep.version_id) {
                (Some(p), vid) => (p.clone(), vid.clone()),
                (None, Some(vid)) => (client.version(vid).await?.project_id, Some(vid.clone())),
                (None, None) => continue,
            };
            if !seen.insert(dep_project.clone()) {
                continue;
            }
            if provided(&dep_project) {
                dependencies.push(ResolvedDependency {
                    project: dep_project,
                    artifact: None,
                    satisfied: true,
                    message: Some("provided by another PluginInstallation".into()),
                });
                continue;
            }
            if policy == DependencyPolicy::Require {
                dependencies.push(ResolvedDependency {
                    project: dep_project.clone(),
                    artifact: None,
                    satisfied: false,
                    message: Some(format!(
                        "required by {}; add a PluginInstallation for Modrinth project {dep_project} (dependencyPolicy is Require)",
                        ver.version_number
                    )),
                });
                continue;
            }
            match resolve_dependency(client, &dep_project, pinned.as_deref(), target).await {
                Ok(dv) => {
                    let art = artifact(&dv);
                    match art {
                        Ok(a) => {
                            dependencies.push(ResolvedDependency {
                                project: dep_project,
                                artifact: Some(a),
                                satisfied: true,
                                message: None,
                            });
                            if depth + 1 < MAX_DEPTH {
                                queue.push((dv, depth + 1));
                            }
                        }
                        Err(e) => dependencies.push(unsatisfied(dep_project, &e)),
                    }
                }
                Err(e) => dependencies.push(unsatisfied(dep_project, &e)),
            }
        }
    }
    Ok(Resolution { project_id, artifact: main, dependencies })
}

fn unsatisfied(project: String, e: &ResolveError) -> ResolvedDependency {
    ResolvedDependency { project, artifact: None, satisfied: false, message: Some(format!("{}: {e}", e.reason())) }
}

/// A dependency's version: the pinned one when it fits, else the newest
/// release of its project that fits.
async fn resolve_dependency(
    client: &Client,
    project: &str,
    pinned: Option<&str>,
    target: &Target,
) -> Result<Version, ResolveError> {
    if let Some(vid) = pinned
        && let Ok(v) = client.version(vid).await
        && target.fits(&v)
    {
        return Ok(v);
    }
    let versions = client.versions(project).await?;
    pick(project, &versions, target, None).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(id: &str, number: &str, date: &str, games: &[&str], loaders: &[&str], kind: &str) -> Version {
        Version {
            id: id.into(),
            project_id: "proj".into(),
            version_number: number.into(),
            game_versions: games.iter().map(|s| s.to_string()).collect(),
            loaders: loaders.iter().map(|s| s.to_string()).collect(),
            version_type: Some(kind.into()),
            date_published: date.into(),
            files: vec![],
            dependencies: vec![],
        }
    }

    fn target(loaders: &[&str], game: &str) -> Target {
        Target { loaders: loaders.iter().map(|s| s.to_string()).collect(), game_version: game.into() }
    }

    /// A server on LATEST resolves plugins for the version LATEST meant
    /// (it used to ask Modrinth for Minecraft "LATEST": always Incompatible).
    #[test]
    fn a_latest_server_resolves_plugins_for_the_version_latest_meant() {
        use crate::api::server::{MinecraftServerStatus, ResolvedVersion};
        let mut s = crate::resources::testdata::server("mc", "sku: small\neula: true\ntype: PAPER\n");
        assert_eq!(s.spec.version, "LATEST");
        assert_eq!(super::super::modrinth_target(&s), None, "not resolved yet: nothing to ask Modrinth");
        s.status = Some(MinecraftServerStatus {
            resolved_version: Some(ResolvedVersion { from: "LATEST".into(), version: "1.21.4".into() }),
            ..Default::default()
        });
        let t = super::super::modrinth_target(&s).unwrap();
        assert_eq!(t.game_version, "1.21.4");
        let versions = vec![v("a", "5.4", "2024-12-10T00:00:00Z", &["1.21.4"], &["paper"], "release")];
        assert_eq!(pick("luckperms", &versions, &t, None).unwrap().id, "a");
        // Switched to SNAPSHOT: the LATEST resolution no longer applies.
        s.spec.version = "SNAPSHOT".into();
        assert_eq!(super::super::modrinth_target(&s), None);
    }

    #[test]
    fn latest_and_snapshot_from_modrinths_version_list() {
        let tags: Vec<GameVersion> = serde_json::from_str(
            r#"[
              {"version": "26.2-snapshot-1", "version_type": "snapshot", "date": "2026-11-20T10:00:00Z", "major": false},
              {"version": "26.1.2", "version_type": "release", "date": "2026-10-01T10:00:00Z", "major": false},
              {"version": "26.1", "version_type": "release", "date": "2026-03-24T10:00:00Z", "major": true},
              {"version": "b1.7.3", "version_type": "beta", "date": "2011-07-08T00:00:00Z", "major": false}
            ]"#,
        )
        .unwrap();
        let l = latest_versions(&tags).unwrap();
        assert_eq!((l.release.as_str(), l.snapshot.as_str()), ("26.1.2", "26.2-snapshot-1"));
        // A release newer than every snapshot is also what SNAPSHOT means.
        let l = latest_versions(&tags[1..]).unwrap();
        assert_eq!(l.snapshot, "26.1.2");
        assert_eq!(latest_versions(&tags[3..]), None, "no release");
    }

    #[test]
    fn picks_the_newest_fitting_release() {
        let versions = vec![
            v("a", "1.0", "2024-01-01T00:00:00Z", &["1.20.4"], &["paper"], "release"),
            v("b", "1.1", "2024-06-01T00:00:00Z", &["1.20.4", "1.21"], &["paper", "spigot"], "release"),
            v("c", "1.2-beta", "2024-09-01T00:00:00Z", &["1.21"], &["paper"], "beta"),
            v("d", "1.3", "2024-10-01T00:00:00Z", &["1.21"], &["fabric"], "release"),
        ];
        let t = target(&["paper", "spigot", "bukkit"], "1.21");
        assert_eq!(pick("x", &versions, &t, None).unwrap().id, "b");
        assert_eq!(pick("x", &versions, &t, Some("1.2-beta")).unwrap().id, "c");
        assert_eq!(pick("x", &versions, &t, Some("c")).unwrap().id, "c");
        let e = pick("x", &versions, &t, Some("1.0")).unwrap_err();
        assert_eq!(e.reason(), "Incompatible");
        assert!(e.to_string().contains("1.0 supports paper on Minecraft 1.20.4"), "{e}");
        let e = pick("x", &versions, &t, Some("9.9")).unwrap_err();
        assert_eq!(e.reason(), "SourceNotFound");
        let e = pick("x", &versions, &target(&["paper"], "1.19.4"), None).unwrap_err();
        assert!(e.to_string().contains("for paper it supports Minecraft 1.20.4, 1.21"), "{e}");
        let e = pick("x", &versions, &target(&["forge"], "1.21"), None).unwrap_err();
        assert!(e.to_string().contains("it supports: fabric, paper, spigot"), "{e}");
        let e = pick("x", &versions, &target(&[], "1.21"), None).unwrap_err();
        assert!(e.to_string().contains("neither plugins nor mods"), "{e}");
        // Only a beta fits: say so instead of installing it silently.
        let only_beta = vec![versions[2].clone()];
        let e = pick("x", &only_beta, &t, None).unwrap_err();
        assert!(e.to_string().contains("pre-release 1.2-beta fits"), "{e}");
    }

    #[test]
    fn summarizes_long_version_lists_in_release_order() {
        let games: Vec<String> =
            ["1.9", "1.10", "1.8", "1.21.4", "1.20", "1.21", "1.12.2", "1.21"].iter().map(|s| s.to_string()).collect();
        assert_eq!(summarize(&games), "1.8 … 1.10, 1.12.2, 1.20, 1.21, 1.21.4");
    }
}
