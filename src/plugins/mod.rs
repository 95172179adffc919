//! Plugins and mods: the manifest the operator writes into a server's
//! ConfigMap, Modrinth resolution, and `craftplane fetch-plugins`, the
//! server pod's init-container that installs what the manifest lists.

pub mod fetch;
pub mod modrinth;

use crate::api::plugin::{PluginInstallation, PluginPhase};
use crate::api::server::ServerType;

// The manifest's format and where the init-container finds it are a
// contract between the operator and this init-container: they live in the API.
pub use crate::api::contract::{
    CONFIG_ROOT, ConfigFiles, MANIFEST_DIR, MANIFEST_KEY, Manifest, ManifestEntry, plugin_directory,
};

/// What a Modrinth plugin of `server` must run on: its loaders and its
/// Minecraft version (LATEST/SNAPSHOT as resolved in its status; `None`
/// until then).
pub fn modrinth_target(server: &crate::api::MinecraftServer) -> Option<modrinth::Target> {
    Some(modrinth::Target {
        loaders: loaders(server.spec.server_type).iter().map(|s| s.to_string()).collect(),
        game_version: crate::resources::version::minecraft_version(server)?,
    })
}

/// Folder a plugin's configuration lives in, relative to /data.
pub fn config_directory(t: ServerType, folder: &str) -> String {
    match plugin_directory(t) {
        "mods" => format!("config/{folder}"),
        _ => format!("plugins/{folder}"),
    }
}

/// Modrinth loader names a server type can run, best match first. Empty:
/// the type runs neither plugins nor mods.
pub fn loaders(t: ServerType) -> &'static [&'static str] {
    match t {
        ServerType::Vanilla => &[],
        ServerType::Paper => &["paper", "spigot", "bukkit"],
        ServerType::Purpur => &["purpur", "paper", "spigot", "bukkit"],
        ServerType::Folia => &["folia"],
        ServerType::Spigot => &["spigot", "bukkit"],
        ServerType::Bukkit => &["bukkit"],
        ServerType::Fabric => &["fabric"],
        ServerType::Quilt => &["quilt", "fabric"],
        ServerType::Forge => &["forge"],
        ServerType::NeoForge => &["neoforge"],
    }
}

/// Whether `name` is a safe file name for the plugins folder: no path
/// separators, no leading dot, a `.jar` (or `.zip`) ending.
pub fn valid_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0'])
        && (name.ends_with(".jar") || name.ends_with(".zip"))
}

/// File name of a URL's last path segment, percent-decoded.
pub fn file_name_from_url(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    let last = parsed.path_segments()?.next_back()?.to_string();
    let decoded = percent_encoding::percent_decode_str(&last).decode_utf8().ok()?.into_owned();
    valid_file_name(&decoded).then_some(decoded)
}

/// Whether an installation belongs in its server's manifest: enabled,
/// resolved, compatible, with every required dependency satisfied. A
/// failed re-resolution (e.g. Modrinth unreachable) keeps the last good
/// resolution, so an outage never removes a plugin.
pub fn installable(p: &PluginInstallation) -> bool {
    let Some(st) = &p.status else { return false };
    p.spec.enabled
        && p.metadata.deletion_timestamp.is_none()
        && st.resolved.is_some()
        && st.phase != Some(PluginPhase::Incompatible)
        && st.dependencies.iter().all(|d| d.satisfied)
}

/// The manifest of a server from its PluginInstallations (any order):
/// installations by name, then the dependencies they pulled in, skipping
/// projects already installed and file names already taken.
pub fn manifest_for(server_type: ServerType, installs: &[&PluginInstallation]) -> Manifest {
    let mut installs: Vec<&PluginInstallation> = installs.iter().copied().filter(|p| installable(p)).collect();
    installs.sort_by_key(|p| p.metadata.name.clone());
    let mut plugins: Vec<ManifestEntry> = Vec::new();
    let mut files = std::collections::BTreeSet::new();
    let mut projects = std::collections::BTreeSet::new();
    for p in &installs {
        let st = p.status.as_ref().expect("installable");
        let r = st.resolved.as_ref().expect("installable");
        let name = p.metadata.name.clone().unwrap_or_default();
        let Some(file_name) = r.file_name.clone().filter(|f| valid_file_name(f)) else { continue };
        if !files.insert(file_name.clone()) {
            continue;
        }
        if let Some(id) = &r.project_id {
            projects.insert(id.clone());
        }
        let config_map = match &p.spec.config_files {
            Some(cm) => Some(cm.name.clone()),
            None if !p.spec.files.is_empty() => Some(crate::resources::config_map::plugin_files_name(&name)),
            None => None,
        };
        let config = config_map.map(|config_map| ConfigFiles {
            config_map,
            target: config_directory(server_type, p.spec.config_directory.as_deref().unwrap_or(&name)),
            hash: st.config_files_hash.clone(),
        });
        plugins.push(ManifestEntry {
            name,
            file_name,
            url: r.url.clone(),
            sha256: r.sha256.clone(),
            sha512: r.sha512.clone(),
            config,
        });
    }
    for p in &installs {
        let st = p.status.as_ref().expect("installable");
        for d in &st.dependencies {
            let Some(a) = &d.artifact else { continue };
            let Some(file_name) = a.file_name.clone().filter(|f| valid_file_name(f)) else { continue };
            if projects.contains(&d.project) || !files.insert(file_name.clone()) {
                continue;
            }
            projects.insert(d.project.clone());
            plugins.push(ManifestEntry {
                name: format!("{}+{}", p.metadata.name.as_deref().unwrap_or_default(), d.project),
                file_name,
                url: a.url.clone(),
                sha256: a.sha256.clone(),
                sha512: a.sha512.clone(),
                config: None,
            });
        }
    }
    Manifest { version: 1, directory: plugin_directory(server_type).into(), plugins }
}

/// An error with its sources, one line ("a: b: c").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_from_urls() {
        assert_eq!(
            file_name_from_url("https://cdn.modrinth.com/data/AAA/versions/BBB/LuckPerms-Bukkit-5.4.141.jar")
                .as_deref(),
            Some("LuckPerms-Bukkit-5.4.141.jar")
        );
        assert_eq!(file_name_from_url("https://x.example/a%20b.jar?x=1").as_deref(), Some("a b.jar"));
        assert_eq!(file_name_from_url("https://x.example/download"), None);
        assert_eq!(file_name_from_url("https://x.example/..%2F..%2Fetc.jar"), None);
        assert_eq!(file_name_from_url("https://x.example/.hidden.jar"), None);
        assert_eq!(file_name_from_url("not a url"), None);
    }

    fn install(name: &str, status: serde_json::Value) -> PluginInstallation {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "craftplane.io/v1alpha1", "kind": "PluginInstallation",
            "metadata": {"name": name, "namespace": "games"},
            "spec": {"server": "s", "source": {"url": {"url": "https://x.example/a.jar", "sha256": "a".repeat(64)}}},
            "status": status,
        }))
        .unwrap()
    }

    fn resolved(file: &str, project: Option<&str>) -> serde_json::Value {
        serde_json::json!({"url": format!("https://x.example/{file}"), "fileName": file, "sha512": "b".repeat(128), "projectId": project})
    }

    #[test]
    fn manifests_list_installable_plugins_then_new_dependencies() {
        let a = install(
            "b-plugin",
            serde_json::json!({"phase": "Resolved", "resolved": resolved("B.jar", Some("PB")),
            "dependencies": [
                {"project": "PA", "satisfied": true, "artifact": resolved("A-dep.jar", Some("PA"))},
                {"project": "PC", "satisfied": true, "artifact": resolved("C.jar", Some("PC"))}]}),
        );
        let b =
            install("a-plugin", serde_json::json!({"phase": "Installed", "resolved": resolved("A.jar", Some("PA"))}));
        let missing = install(
            "c",
            serde_json::json!({"phase": "Failed", "resolved": resolved("X.jar", None),
            "dependencies": [{"project": "PZ", "satisfied": false}]}),
        );
        let incompatible =
            install("d", serde_json::json!({"phase": "Incompatible", "resolved": resolved("Y.jar", None)}));
        let pending = install("e", serde_json::json!({"phase": "Pending"}));
        let mut disabled = install("f", serde_json::json!({"phase": "Resolved", "resolved": resolved("F.jar", None)}));
        disabled.spec.enabled = false;
        let m = manifest_for(ServerType::Paper, &[&a, &b, &missing, &incompatible, &pending, &disabled]);
        let names: Vec<(&str, &str)> = m.plugins.iter().map(|e| (e.name.as_str(), e.file_name.as_str())).collect();
        // PA is installed explicitly, so b-plugin's dependency on it is not added twice.
        assert_eq!(names, vec![("a-plugin", "A.jar"), ("b-plugin", "B.jar"), ("b-plugin+PC", "C.jar")]);
        assert_eq!(m.directory, "plugins");
        assert_eq!(manifest_for(ServerType::Fabric, &[]).directory, "mods");
    }

    #[test]
    fn loaders_follow_the_server_type() {
        assert!(loaders(ServerType::Vanilla).is_empty());
        assert_eq!(loaders(ServerType::Paper)[0], "paper");
        assert!(loaders(ServerType::Quilt).contains(&"fabric"));
        assert_eq!(plugin_directory(ServerType::Fabric), "mods");
        assert_eq!(plugin_directory(ServerType::Paper), "plugins");
        assert_eq!(config_directory(ServerType::Paper, "LuckPerms"), "plugins/LuckPerms");
        assert_eq!(config_directory(ServerType::Fabric, "lithium"), "config/lithium");
    }
}
