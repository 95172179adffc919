//! Modrinth resolution against a local server replaying recorded Modrinth
//! API v2 responses (tests/data/modrinth/SOURCES.md says where they come from).

mod common;

use std::time::Duration;

use craftplane::api::plugin::DependencyPolicy;
use craftplane::api::server::ServerType;
use craftplane::plugins::modrinth::{Client, Resolution, ResolveError, Target, resolve};

fn target(t: ServerType, game: &str) -> Target {
    Target {
        loaders: craftplane::plugins::loaders(t).iter().map(|s| s.to_string()).collect(),
        game_version: game.into(),
    }
}

async fn run(
    base: &str,
    project: &str,
    version: Option<&str>,
    t: Target,
    policy: DependencyPolicy,
    provided: &[&str],
) -> Result<Resolution, ResolveError> {
    let client = Client::new(&format!("{base}/v2"), Duration::from_secs(5)).unwrap();
    let provided: Vec<String> = provided.iter().map(|s| s.to_string()).collect();
    resolve(&client, project, version, &t, policy, &|p| provided.iter().any(|x| x == p)).await
}

/// The recorded file entry of a version (by version id), for comparison.
fn recorded_primary(file: &str, version_id: &str) -> serde_json::Value {
    let versions = common::modrinth::json(file);
    let list = versions.as_array().cloned().unwrap_or_else(|| vec![versions.clone()]);
    let v = list.into_iter().find(|v| v["id"] == version_id).expect("version in the recording");
    v["files"].as_array().unwrap().iter().find(|f| f["primary"] == true).unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newest_compatible_release_is_chosen_with_its_sha512() {
    let s = common::modrinth::start().await;
    let r = run(&s.base, "luckperms", None, target(ServerType::Paper, "1.21.4"), DependencyPolicy::Install, &[])
        .await
        .unwrap();
    let want = recorded_primary("versions-luckperms.json", "b0mk8uS6");
    assert_eq!(r.project_id, "Vebnzrzj");
    assert_eq!(r.artifact.version.as_deref(), Some("v5.5.71-bukkit"));
    assert_eq!(r.artifact.version_id.as_deref(), Some("b0mk8uS6"));
    assert_eq!(r.artifact.url, want["url"].as_str().unwrap());
    assert_eq!(r.artifact.file_name.as_deref(), want["filename"].as_str());
    assert_eq!(r.artifact.sha512.as_deref(), want["hashes"]["sha512"].as_str());
    assert!(r.dependencies.is_empty());

    // An older game version picks the newest release that lists it.
    let r =
        run(&s.base, "chunky", None, target(ServerType::Spigot, "1.14"), DependencyPolicy::Install, &[]).await.unwrap();
    assert_eq!(r.artifact.version.as_deref(), Some("1.3.38"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_version_takes_its_primary_file_or_is_incompatible() {
    let s = common::modrinth::start().await;
    // 2.20.1 ships several jars; the primary one is installed.
    let r = run(
        &s.base,
        "essentialsx",
        Some("2.20.1"),
        target(ServerType::Paper, "1.20.1"),
        DependencyPolicy::Install,
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.artifact.file_name.as_deref(), Some("EssentialsX-2.20.1.jar"));
    assert_eq!(
        r.artifact.sha512.as_deref(),
        recorded_primary("versions-essentialsx.json", "puUfqBpY")["hashes"]["sha512"].as_str()
    );
    // The same version on a newer server: incompatible, saying what it supports.
    let e = run(
        &s.base,
        "essentialsx",
        Some("2.20.1"),
        target(ServerType::Paper, "1.21.4"),
        DependencyPolicy::Install,
        &[],
    )
    .await
    .unwrap_err();
    assert_eq!(e.reason(), "Incompatible");
    let msg = e.to_string();
    assert!(msg.contains("essentialsx 2.20.1 supports bukkit, paper, spigot on Minecraft 1.8.8 …"), "{msg}");
    assert!(msg.contains("1.20.1"), "{msg}");
    assert!(msg.contains("the server needs paper/spigot/bukkit on Minecraft 1.21.4"), "{msg}");
    // A version that does not exist.
    let e =
        run(&s.base, "essentialsx", Some("9.9.9"), target(ServerType::Paper, "1.21.4"), DependencyPolicy::Install, &[])
            .await
            .unwrap_err();
    assert_eq!(e.reason(), "SourceNotFound");
    assert!(e.to_string().contains("newest: 2.22.0, 2.21.2"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incompatible_projects_name_what_they_support() {
    let s = common::modrinth::start().await;
    // A Bukkit plugin on a Fabric server.
    let e = run(&s.base, "chunky", None, target(ServerType::Fabric, "1.21"), DependencyPolicy::Install, &[])
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "Incompatible");
    assert!(
        e.to_string().contains("no version of chunky supports fabric; it supports: bukkit, folia, paper, spigot"),
        "{e}"
    );
    // The right loader, a Minecraft version it does not support yet.
    let e =
        run(&s.base, "better-boat-movement", None, target(ServerType::Paper, "1.21.4"), DependencyPolicy::Install, &[])
            .await
            .unwrap_err();
    assert_eq!(e.reason(), "Incompatible");
    assert!(e.to_string().contains("for paper/spigot/bukkit it supports Minecraft 26.1"), "{e}");
    // Vanilla runs neither plugins nor mods.
    let e = run(&s.base, "luckperms", None, target(ServerType::Vanilla, "1.21.4"), DependencyPolicy::Install, &[])
        .await
        .unwrap_err();
    assert!(e.to_string().contains("neither plugins nor mods"), "{e}");
    // Only a beta fits: not installed unless pinned.
    let e = run(&s.base, "biomesoplenty", None, target(ServerType::Fabric, "1.21"), DependencyPolicy::Install, &[])
        .await
        .unwrap_err();
    assert!(e.to_string().contains("pre-release 21.0.0.18 fits"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_dependencies_are_installed_or_reported_missing() {
    let s = common::modrinth::start().await;
    let t = target(ServerType::Fabric, "1.21");
    let r = run(&s.base, "biomesoplenty", Some("21.0.0.18"), t.clone(), DependencyPolicy::Install, &[]).await.unwrap();
    assert_eq!(r.artifact.file_name.as_deref(), Some("BiomesOPlenty-fabric-1.21-21.0.0.18.jar"));
    let deps: Vec<(&str, bool)> = r.dependencies.iter().map(|d| (d.project.as_str(), d.satisfied)).collect();
    assert_eq!(deps, vec![("P7dR8mSH", true), ("kkmrDlKT", false), ("s3dmwKy5", false)]);
    let fabric_api = r.dependencies[0].artifact.as_ref().unwrap();
    assert_eq!(fabric_api.version.as_deref(), Some("0.102.0+1.21"), "the dependency version that fits 1.21");
    let missing = r.dependencies[1].message.as_deref().unwrap();
    assert!(missing.contains("SourceNotFound") && missing.contains("kkmrDlKT"), "{missing}");

    // Require: nothing is installed; provided projects count as satisfied.
    let r = run(&s.base, "biomesoplenty", Some("qAKuAKD7"), t, DependencyPolicy::Require, &["P7dR8mSH"]).await.unwrap();
    assert!(r.dependencies.iter().all(|d| d.artifact.is_none()));
    assert!(r.dependencies[0].satisfied);
    assert!(!r.dependencies[1].satisfied);
    assert!(r.dependencies[1].message.as_deref().unwrap().contains("add a PluginInstallation"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_and_unknown_sources_are_told_apart() {
    let s = common::modrinth::start().await;
    let t = target(ServerType::Paper, "1.21.4");
    let e = run(&s.base, "no-such-plugin", None, t.clone(), DependencyPolicy::Install, &[]).await.unwrap_err();
    assert_eq!(e.reason(), "SourceNotFound");
    s.set("/v2/project/luckperms/version", common::files::Reply::Status(503));
    let e = run(&s.base, "luckperms", None, t.clone(), DependencyPolicy::Install, &[]).await.unwrap_err();
    assert_eq!(e.reason(), "SourceUnreachable");
    assert!(e.to_string().contains("503"), "{e}");
    s.set("/v2/project/luckperms/version", common::files::Reply::Body(b"<html>maintenance</html>".to_vec()));
    let e = run(&s.base, "luckperms", None, t.clone(), DependencyPolicy::Install, &[]).await.unwrap_err();
    assert_eq!(e.reason(), "SourceUnreachable");
    // Nothing listens on port 1.
    let e = run("http://127.0.0.1:1", "luckperms", None, t, DependencyPolicy::Install, &[]).await.unwrap_err();
    assert_eq!(e.reason(), "SourceUnreachable");
}
