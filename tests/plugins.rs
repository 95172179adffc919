//! PluginInstallations against the real API server: resolution (URL and
//! Modrinth via recorded responses), the server's manifest, the pod
//! template, failures as conditions.

mod common;

use std::time::Duration;

use common::fixture::{Fixture, tail};
use common::operator::{Operator, SHARD_LABEL};
use craftplane::api::PluginInstallation;
use craftplane::api::plugin::PluginPhase;
use craftplane::plugins::Manifest;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const SHA256: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

async fn create_plugin(f: &Fixture, name: &str, server: &str, spec: Value) -> PluginInstallation {
    let mut full = json!({"server": server});
    for (k, v) in spec.as_object().unwrap() {
        full[k] = v.clone();
    }
    let p: PluginInstallation = serde_json::from_value(json!({
        "apiVersion": "craftplane.io/v1alpha1", "kind": "PluginInstallation",
        "metadata": {"name": name, "namespace": f.ns, "labels": {SHARD_LABEL: f.shard}},
        "spec": full,
    }))
    .unwrap();
    f.api::<PluginInstallation>().create(&PostParams::default(), &p).await.expect("create plugin")
}

async fn wait_plugin(
    f: &Fixture,
    name: &str,
    what: &str,
    op: &Operator,
    pred: impl Fn(&PluginInstallation) -> bool,
) -> PluginInstallation {
    let api = f.api::<PluginInstallation>();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut last = None;
    while tokio::time::Instant::now() < deadline {
        if let Ok(p) = api.get(name).await {
            if pred(&p) {
                return p;
            }
            last = Some(p);
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    panic!(
        "plugin {name}: {what} not reached in 60s; status: {}\noperator log tail:\n{}",
        serde_json::to_string_pretty(&last.and_then(|p| p.status)).unwrap(),
        tail(&op.log_text(), 40)
    )
}

fn phase(p: &PluginInstallation) -> Option<PluginPhase> {
    p.status.as_ref().and_then(|s| s.phase)
}

fn reason(p: &PluginInstallation) -> String {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| format!("{}: {}", c.reason, c.message))
        .unwrap_or_default()
}

async fn manifest(f: &Fixture, server: &str) -> Option<Manifest> {
    let cm = f.api::<ConfigMap>().get_opt(&format!("{server}-config")).await.ok()??;
    serde_json::from_str(cm.data?.get("plugins.json")?).ok()
}

async fn manifest_names(f: &Fixture, server: &str) -> Vec<String> {
    manifest(f, server).await.map(|m| m.plugins.into_iter().map(|e| e.name).collect()).unwrap_or_default()
}

async fn wait_manifest(f: &Fixture, server: &str, want: &[&str], op: &Operator) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline {
        if manifest_names(f, server).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    panic!(
        "{server}: manifest is {:?}, wanted {want:?}\noperator log tail:\n{}",
        manifest_names(f, server).await,
        tail(&op.log_text(), 40)
    );
}

async fn template_hash(f: &Fixture, server: &str) -> Option<String> {
    let sts = f.api::<StatefulSet>().get_opt(server).await.ok()??;
    sts.spec?.template.metadata?.annotations?.get("craftplane.io/config-hash").cloned()
}

/// Waits until the pod template's hash is no longer `from` (the manifest
/// ConfigMap is applied before the StatefulSet, so the two are not seen at
/// once) and returns the new one.
async fn wait_template_change(f: &Fixture, server: &str, from: &str, why: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match template_hash(f, server).await {
            Some(h) if h != from => return h,
            _ => {}
        }
        assert!(tokio::time::Instant::now() < deadline, "{why}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_plugins_resolve_enter_the_manifest_and_roll_the_pod() {
    let f = Fixture::new("plugins-url").await;
    let op = Operator::start(&f.shard, &["--modrinth-url", "http://127.0.0.1:1/v2"]).await;
    f.create_server("mc", json!({})).await;
    f.wait("mc", "Running", &op, |s| {
        s.status.as_ref().and_then(|s| s.phase) == Some(craftplane::api::server::ServerPhase::Running)
    })
    .await;
    let before = template_hash(&f, "mc").await.expect("template hash");
    assert!(manifest_names(&f, "mc").await.is_empty());

    // A config ConfigMap for the plugin's data folder.
    let cm: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "lp-config"}, "data": {"config.yml": "server: survival\n"}}),
    )
    .unwrap();
    f.api::<ConfigMap>().create(&PostParams::default(), &cm).await.unwrap();
    create_plugin(
        &f,
        "luckperms",
        "mc",
        json!({"source": {"url": {"url": "https://plugins.example/LuckPerms-Bukkit-5.5.71.jar", "sha256": SHA256}},
               "configFiles": {"name": "lp-config"}, "configDirectory": "LuckPerms"}),
    )
    .await;
    let p = wait_plugin(&f, "luckperms", "Resolved", &op, |p| {
        matches!(phase(p), Some(PluginPhase::Resolved | PluginPhase::Installed))
    })
    .await;
    let r = p.status.as_ref().unwrap().resolved.clone().unwrap();
    assert_eq!(r.file_name.as_deref(), Some("LuckPerms-Bukkit-5.5.71.jar"));
    assert_eq!(r.sha256.as_deref(), Some(SHA256));
    wait_manifest(&f, "mc", &["luckperms"], &op).await;
    let m = manifest(&f, "mc").await.unwrap();
    assert_eq!(m.directory, "plugins");
    let e = &m.plugins[0];
    assert_eq!(
        (e.url.as_str(), e.sha256.as_deref()),
        ("https://plugins.example/LuckPerms-Bukkit-5.5.71.jar", Some(SHA256))
    );
    let cfg = e.config.as_ref().expect("config files in the manifest");
    assert_eq!((cfg.config_map.as_str(), cfg.target.as_str()), ("lp-config", "plugins/LuckPerms"));

    // The pod template changed (the server restarts with the plugin), and
    // mounts the plugin's ConfigMap into the init-container.
    let after = wait_template_change(&f, "mc", &before, "a manifest change must change the pod template").await;
    let sts = f.api::<StatefulSet>().get("mc").await.unwrap();
    let pod_spec = sts.spec.unwrap().template.spec.unwrap();
    let init = &pod_spec.init_containers.as_ref().unwrap()[0];
    assert_eq!(init.name, "fetch-plugins");
    assert!(
        init.volume_mounts.as_ref().unwrap().iter().any(|m| m.mount_path == "/etc/craftplane/plugin-config/luckperms"),
        "{:?}",
        init.volume_mounts
    );
    assert!(pod_spec.volumes.unwrap().iter().any(|v| v.config_map.as_ref().is_some_and(|c| c.name == "lp-config")));

    // kwok runs the new pod: the plugin becomes Installed.
    wait_plugin(&f, "luckperms", "Installed", &op, |p| phase(p) == Some(PluginPhase::Installed)).await;

    // Editing the config files rolls the server again.
    f.api::<ConfigMap>()
        .patch(
            "lp-config",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"config.yml": "server: creative\n"}})),
        )
        .await
        .unwrap();
    // The referenced ConfigMap is watched: the edit alone is enough, well
    // before the periodic re-check.
    wait_template_change(&f, "mc", &after, "a configFiles edit must change the pod template").await;

    // enabled: false takes it out of the manifest; deleting removes it.
    f.api::<PluginInstallation>()
        .patch("luckperms", &PatchParams::default(), &Patch::Merge(json!({"spec": {"enabled": false}})))
        .await
        .unwrap();
    wait_manifest(&f, "mc", &[], &op).await;
    let p = wait_plugin(&f, "luckperms", "Disabled", &op, |p| reason(p).starts_with("Disabled")).await;
    assert_eq!(phase(&p), Some(PluginPhase::Pending));
    f.api::<PluginInstallation>()
        .patch("luckperms", &PatchParams::default(), &Patch::Merge(json!({"spec": {"enabled": true}})))
        .await
        .unwrap();
    wait_manifest(&f, "mc", &["luckperms"], &op).await;
    f.api::<PluginInstallation>().delete("luckperms", &DeleteParams::default()).await.unwrap();
    wait_manifest(&f, "mc", &[], &op).await;
    op.stop();
    f.cleanup().await;
}

#[tokio::test]
async fn inline_files_become_an_owned_config_map_and_roll_the_server() {
    let f = Fixture::new("plugins-files").await;
    let op = Operator::start(&f.shard, &["--modrinth-url", "http://127.0.0.1:1/v2"]).await;
    f.create_server("mc", json!({})).await;
    f.wait("mc", "Running", &op, |s| {
        s.status.as_ref().and_then(|s| s.phase) == Some(craftplane::api::server::ServerPhase::Running)
    })
    .await;
    let url = json!({"url": {"url": "https://plugins.example/LuckPerms-Bukkit-5.5.71.jar", "sha256": SHA256}});
    // Not both ways at once (refused at admission).
    let both: PluginInstallation = serde_json::from_value(json!({
        "apiVersion": "craftplane.io/v1alpha1", "kind": "PluginInstallation",
        "metadata": {"name": "both", "labels": {SHARD_LABEL: f.shard}},
        "spec": {"server": "mc", "source": url, "configFiles": {"name": "x"}, "files": [{"name": "a.yml", "content": ""}]},
    }))
    .unwrap();
    let err = f.api::<PluginInstallation>().create(&PostParams::default(), &both).await.unwrap_err();
    assert!(err.to_string().contains("either configFiles or files"), "{err}");

    create_plugin(
        &f,
        "lp",
        "mc",
        json!({"source": url, "configDirectory": "LuckPerms",
               "files": [{"name": "config.yml", "content": "server: survival\n"}, {"name": "motd.txt", "content": "hi"}]}),
    )
    .await;
    wait_manifest(&f, "mc", &["lp"], &op).await;
    let m = manifest(&f, "mc").await.unwrap();
    let cfg = m.plugins[0].config.clone().expect("inline files in the manifest");
    assert_eq!((cfg.config_map.as_str(), cfg.target.as_str()), ("lp-files", "plugins/LuckPerms"));
    let cm = f.api::<ConfigMap>().get("lp-files").await.expect("the operator writes the files' ConfigMap");
    let data = cm.data.clone().unwrap();
    assert_eq!((data["config.yml"].as_str(), data["motd.txt"].as_str()), ("server: survival\n", "hi"));
    let pi = f.api::<PluginInstallation>().get("lp").await.unwrap();
    let owner = &cm.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), Some(&owner.uid)), ("PluginInstallation", pi.metadata.uid.as_ref()));
    let sts = f.api::<StatefulSet>().get("mc").await.unwrap();
    let volumes = sts.spec.unwrap().template.spec.unwrap().volumes.unwrap();
    assert!(volumes.iter().any(|v| v.config_map.as_ref().is_some_and(|c| c.name == "lp-files")), "{volumes:?}");

    // Editing a file in the spec rolls the server.
    let before = template_hash(&f, "mc").await.unwrap();
    f.api::<PluginInstallation>()
        .patch(
            "lp",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"files": [{"name": "config.yml", "content": "server: creative\n"}]}})),
        )
        .await
        .unwrap();
    wait_template_change(&f, "mc", &before, "an inline file edit must change the pod template").await;
    let data = f.api::<ConfigMap>().get("lp-files").await.unwrap().data.unwrap();
    assert_eq!(data.keys().collect::<Vec<_>>(), vec!["config.yml"], "a removed file is gone");
    assert_eq!(data["config.yml"], "server: creative\n");

    // A ConfigMap of that name that is not the installation's is never taken over.
    let theirs: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "other-files"}, "data": {"keep": "me"}})).unwrap();
    f.api::<ConfigMap>().create(&PostParams::default(), &theirs).await.unwrap();
    create_plugin(&f, "other", "mc", json!({"source": url, "files": [{"name": "c.yml", "content": "x"}]})).await;
    let p =
        wait_plugin(&f, "other", "ConfigFilesConflict", &op, |p| reason(p).starts_with("ConfigFilesConflict")).await;
    assert_eq!(phase(&p), Some(PluginPhase::Failed));
    assert_eq!(f.api::<ConfigMap>().get("other-files").await.unwrap().data.unwrap()["keep"], "me");
    op.stop();
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modrinth_plugins_resolve_or_explain_why_not() {
    let modrinth = common::modrinth::start().await;
    let f = Fixture::new("plugins-mr").await;
    let url = format!("{}/v2", modrinth.base);
    let op = Operator::start(&f.shard, &["--modrinth-url", &url]).await;
    f.create_server("paper", json!({"type": "PAPER", "version": "1.21.4"})).await;
    f.create_server("fabric", json!({"type": "FABRIC", "version": "1.21"})).await;

    create_plugin(&f, "luckperms", "paper", json!({"source": {"modrinth": {"project": "luckperms"}}})).await;
    create_plugin(&f, "boats", "paper", json!({"source": {"modrinth": {"project": "better-boat-movement"}}})).await;
    create_plugin(
        &f,
        "bop",
        "fabric",
        json!({"source": {"modrinth": {"project": "biomesoplenty", "version": "21.0.0.18"}}}),
    )
    .await;
    create_plugin(&f, "orphan", "nope", json!({"source": {"modrinth": {"project": "luckperms"}}})).await;

    let p = wait_plugin(&f, "luckperms", "Resolved", &op, |p| {
        matches!(phase(p), Some(PluginPhase::Resolved | PluginPhase::Installed))
    })
    .await;
    let r = p.status.unwrap().resolved.unwrap();
    assert_eq!(r.version.as_deref(), Some("v5.5.71-bukkit"));
    assert_eq!(r.project_id.as_deref(), Some("Vebnzrzj"));
    let recorded = common::modrinth::json("versions-luckperms.json");
    assert_eq!(r.sha512.as_deref(), recorded[0]["files"][0]["hashes"]["sha512"].as_str());

    let p = wait_plugin(&f, "boats", "Incompatible", &op, |p| phase(p) == Some(PluginPhase::Incompatible)).await;
    assert!(reason(&p).starts_with("Incompatible: no version of better-boat-movement supports"), "{}", reason(&p));
    assert!(reason(&p).contains("26.1"), "names the supported versions: {}", reason(&p));

    let p = wait_plugin(&f, "bop", "DependencyMissing", &op, |p| reason(p).starts_with("DependencyMissing")).await;
    assert_eq!(phase(&p), Some(PluginPhase::Failed));
    let deps = p.status.unwrap().dependencies;
    assert_eq!(deps.len(), 3);
    assert!(deps[0].satisfied && deps[0].artifact.is_some(), "{deps:?}");
    assert!(reason(&f.api::<PluginInstallation>().get("bop").await.unwrap()).contains("kkmrDlKT"));

    let p = wait_plugin(&f, "orphan", "ServerNotFound", &op, |p| reason(p).starts_with("ServerNotFound")).await;
    assert_eq!(phase(&p), Some(PluginPhase::Pending));

    // Only the resolved plugin reaches a manifest.
    wait_manifest(&f, "paper", &["luckperms"], &op).await;
    // A server without plugins gets a manifest too, a moment after it is created.
    common::wait_until(Duration::from_secs(60), || async { manifest(&f, "fabric").await.is_some() })
        .await
        .unwrap_or_else(|()| {
            panic!("fabric: no manifest after 60 s\noperator log tail:\n{}", tail(&op.log_text(), 40))
        });
    let fabric = manifest(&f, "fabric").await.expect("the manifest written above");
    assert!(fabric.plugins.is_empty(), "{:?}", fabric.plugins);
    assert_eq!(fabric.directory, "mods");
    op.stop();
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checksum_mismatch_in_the_pod_becomes_a_condition() {
    let f = Fixture::new("plugins-sum").await;
    let op = Operator::start(&f.shard, &["--modrinth-url", ""]).await;
    f.create_server("mc", json!({})).await;
    create_plugin(
        &f,
        "lp",
        "mc",
        json!({"source": {"url": {"url": "https://plugins.example/LP.jar", "sha256": SHA256}}}),
    )
    .await;
    wait_plugin(&f, "lp", "Installed", &op, |p| phase(p) == Some(PluginPhase::Installed)).await;
    // What the kubelet reports when fetch-plugins exits with a mismatch.
    // kwok's pod-ready stage turns a Pending pod back to Running (its
    // init-container statuses to Completed) a moment later, so the status
    // is written again until the plugin and the server have each seen it.
    let pods = f.api::<Pod>();
    let msg = format!("ChecksumMismatch: plugin lp: LP.jar has sha256 {}, expected {SHA256}\n", "0".repeat(64));
    let status = json!({"status": {"phase": "Pending", "conditions": [{"type": "Ready", "status": "False"}],
        "initContainerStatuses": [{"name": "fetch-plugins", "image": "x", "imageID": "", "ready": false, "restartCount": 1,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "message": msg}}}]}});
    let server_ready = |s: &craftplane::api::MinecraftServer| {
        s.status.as_ref().and_then(|st| st.conditions.iter().find(|c| c.type_ == "Ready").cloned())
    };
    let (mut plugin, mut server) = (None, None);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while (plugin.is_none() || server.is_none()) && tokio::time::Instant::now() < deadline {
        pods.patch_status("mc-0", &PatchParams::default(), &Patch::Merge(status.clone())).await.unwrap();
        for _ in 0..20 {
            let p = f.api::<PluginInstallation>().get("lp").await.unwrap();
            if plugin.is_none() && reason(&p).starts_with("ChecksumMismatch") {
                plugin = Some(p);
            }
            let s = f.servers().get("mc").await.unwrap();
            if server.is_none() && server_ready(&s).is_some_and(|c| c.reason == "PluginFetchFailed") {
                server = Some(s);
            }
            if plugin.is_some() && server.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let p = plugin.unwrap_or_else(|| panic!("lp never ChecksumMismatch\n{}", tail(&op.log_text(), 30)));
    assert_eq!(phase(&p), Some(PluginPhase::Failed));
    assert!(reason(&p).contains(&format!("expected {SHA256}")), "{}", reason(&p));
    let s = server.unwrap_or_else(|| panic!("mc's Ready never PluginFetchFailed\n{}", tail(&op.log_text(), 30)));
    let ready = server_ready(&s).unwrap();
    assert_eq!(ready.status, "False", "{ready:?}");
    assert_eq!(s.status.unwrap().phase, Some(craftplane::api::server::ServerPhase::Failed));
    op.stop();
    f.cleanup().await;
}

/// A server on LATEST gets LATEST resolved once (status.resolvedVersion),
/// its plugins resolve for that version (they were all Incompatible: the
/// operator asked Modrinth for Minecraft "LATEST"), the image runs it, and
/// a newer Minecraft later does not move the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latest_server_resolves_latest_once_and_its_plugins_for_it() {
    let modrinth = common::modrinth::start().await;
    let tags = |newest: &str| {
        common::files::Reply::Body(
            serde_json::to_vec(&json!([
                {"version": newest, "version_type": "release", "date": "2026-11-01T00:00:00Z", "major": false},
                {"version": "1.21.4", "version_type": "release", "date": "2024-12-03T10:12:57Z", "major": false},
                {"version": "24w46a", "version_type": "snapshot", "date": "2024-11-13T12:00:00Z", "major": false},
            ]))
            .unwrap(),
        )
    };
    // Newest release 1.21.4 (the newest the recorded luckperms supports).
    modrinth.set("/v2/tag/game_version", tags("1.21.4"));
    let f = Fixture::new("plugins-latest").await;
    let url = format!("{}/v2", modrinth.base);
    let op = Operator::start(&f.shard, &["--modrinth-url", &url]).await;
    f.create_server("paper", json!({"type": "PAPER", "version": "LATEST"})).await;
    create_plugin(&f, "luckperms", "paper", json!({"source": {"modrinth": {"project": "luckperms"}}})).await;
    let s = f
        .wait("paper", "status.resolvedVersion", &op, |s| {
            s.status.as_ref().and_then(|st| st.resolved_version.as_ref()).is_some()
        })
        .await;
    let r = s.status.unwrap().resolved_version.unwrap();
    assert_eq!((r.from.as_str(), r.version.as_str()), ("LATEST", "1.21.4"));
    let p = wait_plugin(&f, "luckperms", "Resolved", &op, |p| {
        matches!(phase(p), Some(PluginPhase::Resolved | PluginPhase::Installed))
    })
    .await;
    assert_eq!(p.status.unwrap().resolved_for.as_deref(), Some("PAPER 1.21.4"));
    let sts = f.api::<StatefulSet>().get("paper").await.unwrap();
    let c = &sts.spec.unwrap().template.spec.unwrap().containers[0];
    let version = c.env.iter().flatten().find(|e| e.name == "VERSION").and_then(|e| e.value.clone());
    assert_eq!(version.as_deref(), Some("1.21.4"));
    assert!(c.image.as_deref().unwrap().ends_with("-java21"), "{:?}", c.image);
    // A newer Minecraft appears: the server stays where it is.
    modrinth.set("/v2/tag/game_version", tags("26.1"));
    f.patch_spec("paper", json!({"maxPlayers": 5})).await;
    let s = f
        .wait("paper", "the new generation observed", &op, |s| {
            s.status.as_ref().and_then(|st| st.observed_generation) == s.metadata.generation
        })
        .await;
    assert_eq!(s.status.unwrap().resolved_version.unwrap().version, "1.21.4");
    op.stop();
    f.cleanup().await;
}
