//! The e2e suite's real server: a MinecraftServer on the stand-in image
//! (tests/images/test-server) on the real node, driven only through
//! Kubernetes objects and observed as a user would (`kubectl get`, `logs`,
//! `exec`, a real protocol client):
//! probes and in-cluster Server List Ping; a plugin downloaded by the real
//! init-container from an HTTP server on this machine, kept through a
//! restart with that server gone, and a wrong checksum refused; a backup Job
//! on the server's node (read-only volume, RCON save-off / save-all flush /
//! save-on) into s3s-fs; restore of that snapshot over a changed world, and a
//! corrupted archive refused with the world kept; live operations
//! (`e2e_live`); `state: Stopped` with the
//! announce, save and clean stop in the server's log; `deletionPolicy`
//! Retain (world back on re-create) and Delete (a fresh world).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use crate::cluster::Cluster;
use crate::e2e::{Kube, Stopper, free_port, retry, tail};

pub(crate) const NS: &str = "default";
pub(crate) const SERVER: &str = "real";
pub(crate) const POD: &str = "real-0";

/// What the real-server steps need from the rest of the suite.
pub struct Setup<'a> {
    pub kube: &'a Kube,
    pub cluster: &'a Cluster,
    /// npm test peers (minecraft-protocol) for the client.
    pub node_modules: &'a Path,
    /// The directory s3s-fs serves (bucket `backups`).
    pub s3_root: &'a Path,
}

pub fn run(s: &Setup) -> Result<()> {
    let k = s.kube;
    let host = s.cluster.host_ip();
    // The plugin "CDN": a jar served by Python's http.server on the host end
    // of the node's veth, where pods reach it.
    let cdn = s.cluster.dir.join("plugin-cdn");
    std::fs::create_dir_all(&cdn)?;
    let jar = b"PK\x03\x04 craftplane e2e plugin (not a real jar)\n".repeat(64);
    std::fs::write(cdn.join("hello-1.0.0.jar"), &jar)?;
    std::fs::write(cdn.join("other-2.0.0.jar"), b"another plugin\n")?;
    let sha = hex(&Sha256::digest(&jar));
    let cdn_port = free_port(&host)?;
    let cdn_server = serve(&host, cdn_port, &cdn)?;
    let cdn_url = format!("http://{host}:{cdn_port}");

    let manifest = s.cluster.dir.join("real-server.yaml");
    std::fs::write(&manifest, server_yaml(&format!("{cdn_url}/hello-1.0.0.jar"), &sha, "Retain"))?;
    let t_apply = Instant::now();
    k.run(&["apply", "-f", &path(&manifest)])?;
    wait_running(k, Duration::from_secs(240))?;
    let to_ready = t_apply.elapsed();
    println!("e2e: ok   MinecraftServer real Running/Ready on a real pod {to_ready:.1?} after kubectl apply");
    print_timing(k);
    let node_name = k.get("pod", POD, "{.spec.nodeName}")?;
    if node_name != crate::node::NODE_NAME {
        bail!("{POD} runs on {node_name}, not the real node");
    }

    // --- the plugin, fetched by the real init-container
    k.expect(
        "PluginInstallation hello",
        &["get", "plugin", "hello", "-n", NS, "-o", "jsonpath={.status.phase}"],
        "Installed",
    )?;
    let log = server_log(k)?;
    if !log.contains("plugins: hello-1.0.0.jar") {
        bail!("the server did not see the plugin at start:\n{}", tail(&log, 20));
    }
    let on_disk = exec_node(
        k,
        "process.stdout.write(require('crypto').createHash('sha256').update(require('fs').readFileSync('/data/plugins/hello-1.0.0.jar')).digest('hex'))",
    )?;
    if on_disk != sha {
        bail!("/data/plugins/hello-1.0.0.jar on the volume has sha256 {on_disk}, expected {sha}");
    }
    let config =
        exec_node(k, "process.stdout.write(require('fs').readFileSync('/data/plugins/hello/config.yml', 'utf8'))")?;
    if config != CONFIG {
        bail!("/data/plugins/hello/config.yml is {config:?}, expected the inline file {CONFIG:?}");
    }
    println!(
        "e2e: ok   plugin hello downloaded by the init-container into the volume (sha256 checked), listed by the server at start, its inline config file in plugins/hello/"
    );

    // --- Server List Ping and a real client
    expect_real(
        k,
        "real players and version (the operator's in-cluster Server List Ping)",
        "{.status.players.online}/{.status.players.max} {.status.version}",
        "0/8 1.21.4",
        90,
    )?;
    // Its game Service is headless (the default): its name resolves to the
    // pod, whose address the client uses here.
    if k.get("service", SERVER, "{.spec.clusterIP}")? != "None" {
        bail!("the default game Service of {SERVER} is not headless");
    }
    let ip = pod_ip(k)?;
    join(s, "alice")?;
    if !server_log(k)?.contains("alice") {
        bail!("the server's log does not show alice joining");
    }
    println!(
        "e2e: ok   a minecraft-protocol client joined real at its pod's address ({ip}:25565; headless game Service)"
    );

    // --- backup on the real node
    let players_at_snapshot = backup(s, "real-1")?;

    // --- change the world (bob joins, the game is saved), restore
    join(s, "bob")?;
    rcon(k, &["save-all", "flush"])?;
    let changed = players(k)?;
    let bob: Vec<&String> = changed.iter().filter(|p| !players_at_snapshot.contains(p)).collect();
    if bob.is_empty() {
        bail!("bob's join left no new playerdata file: before {players_at_snapshot:?}, after {changed:?}");
    }
    let bob = bob[0].clone();
    println!("e2e: ok   world changed after the snapshot: playerdata {bob} (bob)");
    let t_restore = Instant::now();
    patch_spec(k, r#"{"restore":{"snapshot":"real-1"}}"#)?;
    expect_real(k, "real phase while its restore runs", "{.status.phase}", "Restoring", 120)?;
    expect_real(k, "real restore", "{.status.restore.snapshot} {.status.restore.phase}", "real-1 Completed", 180)?;
    wait_running(k, Duration::from_secs(180))?;
    let restored = players(k)?;
    if restored.contains(&bob) || !players_at_snapshot.iter().all(|p| restored.contains(p)) {
        bail!("after the restore playerdata is {restored:?}; the snapshot had {players_at_snapshot:?} (bob: {bob})");
    }
    println!(
        "e2e: ok   restored real-1 over the changed world in {:.0?}: bob's playerdata gone, the snapshot's back, server Running",
        t_restore.elapsed()
    );

    // --- a corrupted archive: the restore fails, the world stays
    join(s, "bob")?;
    rcon(k, &["save-all", "flush"])?;
    if !players(k)?.contains(&bob) {
        bail!("bob's second join was not saved: {:?}", players(k)?);
    }
    let before_bad = world(k)?;
    let archive = k.get("backup", "real-1", "{.status.location}")?;
    corrupt(s.s3_root, &archive)?;
    // A second request for the same snapshot, the documented way: clear
    // spec.restore, wait until the operator has closed the first request,
    // set it again.
    patch_spec(k, r#"{"restore":null}"#)?;
    k.wait_for(
        &["get", "mcs", SERVER, "-n", NS, "-o", "jsonpath={.status.restore.phase}/{.status.restore.requestGeneration}"],
        "Completed/",
        Duration::from_secs(60),
    )?;
    patch_spec(k, r#"{"restore":{"snapshot":"real-1"}}"#)?;
    expect_real(k, "restore from the corrupted archive", "{.status.restore.phase}", "Failed", 180)?;
    let why = k.get("mcs", SERVER, "{.status.restore.message}")?;
    wait_running(k, Duration::from_secs(180))?;
    let after_bad = same_world(k, &before_bad).context("a failed restore changed the world")?;
    println!(
        "e2e: ok   restore from a corrupted archive Failed ({why}); world unchanged ({after_bad}), server Running"
    );
    patch_spec(k, r#"{"restore":null}"#)?;

    // --- a wrong checksum keeps the server from starting, with the reason
    let bad = s.cluster.dir.join("bad-plugin.yaml");
    std::fs::write(&bad, plugin_yaml("other", &format!("{cdn_url}/other-2.0.0.jar"), &"0".repeat(64)))?;
    k.run(&["apply", "-f", &path(&bad)])?;
    expect_real(
        k,
        "real with a plugin of the wrong checksum",
        "{.status.phase}/{.status.conditions[?(@.type==\"Ready\")].reason}",
        "Failed/PluginFetchFailed",
        180,
    )?;
    k.expect(
        "PluginInstallation other",
        &[
            "get",
            "plugin",
            "other",
            "-n",
            NS,
            "-o",
            "jsonpath={.status.phase}/{.status.conditions[?(@.type==\"Ready\")].reason}",
        ],
        "Failed/ChecksumMismatch",
    )?;
    let started = k.get("pod", POD, "{.status.containerStatuses[?(@.name==\"minecraft\")].state.running}")?;
    if !started.is_empty() {
        bail!("the server container runs although fetch-plugins failed: {started}");
    }
    println!(
        "e2e: ok   a wrong checksum: server Failed/PluginFetchFailed, plugin Failed/ChecksumMismatch, server container not started"
    );
    k.run(&["delete", "-f", &path(&bad), "--wait"])?;
    wait_running(k, Duration::from_secs(180))?;
    println!("e2e: ok   the bad plugin removed: real Running again");

    // --- pinned: a restart with the plugin CDN gone still starts with it
    drop(cdn_server);
    if std::net::TcpStream::connect((host.as_str(), cdn_port)).is_ok() {
        bail!("the plugin CDN still answers after it was stopped");
    }
    let uid = k.get("pod", POD, "{.metadata.uid}")?;
    k.run(&["delete", "pod", POD, "-n", NS, "--wait"])?;
    retry(Duration::from_secs(60), || {
        if k.get("pod", POD, "{.metadata.uid}")? == uid {
            bail!("{POD} not replaced yet");
        }
        Ok(())
    })?;
    wait_running(k, Duration::from_secs(180))?;
    let log = server_log(k)?;
    if !log.contains("plugins: hello-1.0.0.jar") {
        bail!("after a restart without the CDN the server started without its plugin:\n{}", tail(&log, 20));
    }
    println!("e2e: ok   restarted with the plugin CDN stopped: the server still starts with hello-1.0.0.jar");

    // --- live operations: whitelist, difficulty, game rules, console commands
    crate::e2e_live::run(s)?;
    // The world as the Retain step below must find it again.
    let before_delete = world(k)?;

    // --- state: Stopped: announce, save, clean stop within the grace period
    let grace: u64 = k.get("pod", POD, "{.spec.terminationGracePeriodSeconds}")?.parse()?;
    let follow_file = s.cluster.dir.join("real-stop.log");
    let mut follow = Stopper(
        k.command(&["logs", "-f", POD, "-n", NS, "-c", "minecraft", "--tail=5"])
            .stdout(std::fs::File::create(&follow_file)?)
            .stderr(Stdio::null())
            .spawn()?,
    );
    std::thread::sleep(Duration::from_secs(1));
    let t_stop = Instant::now();
    patch_spec(k, r#"{"state":"Stopped"}"#)?;
    retry(Duration::from_secs(grace + 30), || {
        if k.run(&["get", "pod", POD, "-n", NS, "-o", "name"]).is_ok() {
            bail!("{POD} still exists");
        }
        Ok(())
    })?;
    let stopped_in = t_stop.elapsed();
    // `kubectl logs -f` ends with the container; give it a moment to.
    let deadline = Instant::now() + Duration::from_secs(5);
    while follow.0.try_wait()?.is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let stop_log = std::fs::read_to_string(&follow_file)?;
    let order = ["[RCON] say Server restarting for e2e", "Stopping the server", "Saved the game", "Server stopped"];
    let mut at = 0;
    for want in order {
        match stop_log[at..].find(want) {
            Some(i) => at += i + want.len(),
            None => bail!("the stop log lacks {want:?} (after the lines before it):\n{stop_log}"),
        }
    }
    if stopped_in > Duration::from_secs(grace) {
        bail!("the pod took {stopped_in:?} to stop, longer than its grace period {grace}s");
    }
    expect_real(k, "real phase", "{.status.phase}", "Stopped", 90)?;
    println!(
        "e2e: ok   state Stopped: announce, save and \"Server stopped\" in the log; pod gone after {stopped_in:.0?} (grace {grace}s)"
    );

    // --- deletionPolicy Retain: the world comes back with the server
    let pvc = format!("{SERVER}-data");
    let volume = k.get("pvc", &pvc, "{.spec.volumeName}")?;
    k.run(&["delete", "mcs", SERVER, "-n", NS, "--wait", "--timeout=120s"])?;
    retry(Duration::from_secs(30), || {
        if k.run(&["get", "statefulset", SERVER, "-n", NS, "-o", "name"]).is_ok() {
            bail!("StatefulSet {SERVER} still exists");
        }
        Ok(())
    })?;
    let kept = k.get("pvc", &pvc, "{.status.phase} {.spec.volumeName}")?;
    if kept != format!("Bound {volume}") {
        bail!("deletionPolicy Retain: PVC {pvc} is {kept:?} after the server was deleted");
    }
    std::fs::write(&manifest, server_yaml(&format!("{cdn_url}/hello-1.0.0.jar"), &sha, "Delete"))?;
    k.run(&["apply", "-f", &path(&manifest)])?;
    wait_running(k, Duration::from_secs(180))?;
    let back = same_world(k, &before_delete).context("deletionPolicy Retain: the re-created server's world")?;
    println!(
        "e2e: ok   deletionPolicy Retain: PVC kept when the server was deleted; re-created, its world is back ({back})"
    );

    // --- deletionPolicy Delete: the claim goes, a new server starts fresh
    // (and fetches its plugin again: the CDN is back)
    let _cdn_again = serve(&host, cdn_port, &cdn)?;
    k.run(&["delete", "mcs", SERVER, "-n", NS, "--wait", "--timeout=120s"])?;
    let gone = retry(Duration::from_secs(90), || {
        if k.run(&["get", "pvc", &pvc, "-n", NS, "-o", "name"]).is_ok() {
            bail!("PVC {pvc} still exists");
        }
        Ok(())
    });
    if let Err(e) = gone {
        let _ = k.command(&["get", "pvc", &pvc, "-n", NS, "-o", "yaml"]).status();
        let _ = k.command(&["get", "pods", "-n", NS, "-o", "wide"]).status();
        return Err(e.context("deletionPolicy Delete"));
    }
    let released = k.run(&["get", "pv", &volume, "-o", "jsonpath={.status.phase}"])?;
    if released == "Bound" {
        bail!("deletionPolicy Delete: volume {volume} is still Bound");
    }
    k.run(&["apply", "-f", &path(&manifest)])?;
    wait_running(k, Duration::from_secs(180))?;
    let fresh = players(k)?;
    if !fresh.is_empty() {
        bail!("deletionPolicy Delete: a new server of the same name found the old world's playerdata {fresh:?}");
    }
    let new_volume = k.get("pvc", &pvc, "{.spec.volumeName}")?;
    println!(
        "e2e: ok   deletionPolicy Delete: PVC deleted (volume {volume} {released}); a new server starts with a fresh world on {new_volume}"
    );
    Ok(())
}

/// Waits (up to `secs`) until the server's `jsonpath` reads `want`.
pub(crate) fn expect_real(k: &Kube, what: &str, jsonpath: &str, want: &str, secs: u64) -> Result<()> {
    let path = format!("jsonpath={jsonpath}");
    k.expect_within(what, &["get", "mcs", SERVER, "-n", NS, "-o", &path], want, Duration::from_secs(secs))
}

/// Merge-patches the server's spec with `spec` (JSON), as `kubectl patch` would.
pub(crate) fn patch_spec(k: &Kube, spec: &str) -> Result<String> {
    k.run(&["patch", "mcs", SERVER, "-n", NS, "--type", "merge", "-p", &format!(r#"{{"spec":{spec}}}"#)])
}

/// The plugin "CDN": Python's http.server for `dir` on `host:port`, up
/// when this returns, stopped when the result is dropped.
pub(crate) fn serve(host: &str, port: u16, dir: &Path) -> Result<Stopper> {
    let server = Stopper(
        Command::new("python3")
            .args(["-m", "http.server", "--bind", host, &port.to_string(), "--directory"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start python3 -m http.server (the plugin CDN)")?,
    );
    retry(Duration::from_secs(10), || {
        std::net::TcpStream::connect((host, port))?;
        Ok(())
    })?;
    Ok(server)
}

/// Takes snapshot `name` of the running server and checks it end to end;
/// returns the playerdata files the world had.
fn backup(s: &Setup, name: &str) -> Result<Vec<String>> {
    let k = s.kube;
    let log_before = server_log(k)?.len();
    let file = s.cluster.dir.join(format!("{name}.yaml"));
    std::fs::write(
        &file,
        format!(
            "apiVersion: craftplane.io/v1alpha1\nkind: BackupSnapshot\nmetadata: {{name: {name}, namespace: {NS}}}\nspec: {{server: {SERVER}}}\n"
        ),
    )?;
    let t0 = Instant::now();
    k.run(&["apply", "-f", &path(&file)])?;
    // The Job's pod, seen while it exists (the operator deletes the
    // finished Job once the result is in the status).
    let selector = format!("craftplane.io/snapshot={name},app.kubernetes.io/component=backup");
    let mut pod = serde_json::Value::Null;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Ok(list) = k.run(&["get", "pods", "-n", NS, "-l", &selector, "-o", "json"])
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&list)
            && let Some(p) = v["items"].as_array().and_then(|p| p.first())
        {
            pod = p.clone();
        }
        let phase = k.get("backup", name, "{.status.phase}").unwrap_or_default();
        if phase == "Completed" {
            break;
        }
        if Instant::now() > deadline || phase == "Failed" {
            bail!(
                "BackupSnapshot {name} is {phase:?}: {}\noperator log:\n{}",
                k.get("backup", name, "{.status.conditions}").unwrap_or_default(),
                tail(&k.operator_log(), 30)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let took = t0.elapsed();
    if pod.is_null() {
        bail!("no pod of the backup Job of {name} was ever seen");
    }
    if pod["spec"]["nodeName"] != crate::node::NODE_NAME {
        bail!("the backup pod ran on {}, not the server's node", pod["spec"]["nodeName"]);
    }
    let data_ro = pod["spec"]["volumes"].as_array().into_iter().flatten().any(|v| {
        v["persistentVolumeClaim"]["claimName"] == format!("{SERVER}-data")
            && v["persistentVolumeClaim"]["readOnly"] == true
    }) && pod["spec"]["containers"][0]["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|m| m["mountPath"] == "/data" && m["readOnly"] == true);
    if !data_ro {
        bail!("the backup pod does not mount the world read-only: {}", pod["spec"]);
    }
    // The finished Job is cleaned up (it would hold the volume).
    retry(Duration::from_secs(30), || match k.run(&["get", "jobs", "-n", NS, "-l", &selector, "-o", "name"])? {
        j if j.is_empty() => Ok(()),
        j => bail!("the finished backup Job {j} is still there"),
    })?;
    let log = server_log(k)?;
    let rcon: Vec<&str> = log
        .get(log_before.min(log.len())..)
        .unwrap_or(&log)
        .lines()
        .filter_map(|l| l.split("[RCON] ").nth(1))
        .collect();
    let want = ["save-off", "save-all flush", "save-on"];
    let mut it = rcon.iter();
    if !want.iter().all(|w| it.any(|c| c == w)) {
        bail!("the server's log does not show save-off, save-all flush, save-on in order: {rcon:?}");
    }
    let bytes: u64 = k.get("backup", name, "{.status.bytes}")?.parse().context("status.bytes")?;
    let files: u64 = k.get("backup", name, "{.status.files}")?.parse().context("status.files")?;
    let manifest = k.get("backup", name, "{.status.manifestSha256}")?;
    if files == 0 || manifest.len() != 64 || !manifest.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("snapshot {name} status: files {files}, manifestSha256 {manifest:?}");
    }
    let location = k.get("backup", name, "{.status.location}")?;
    let size = std::fs::metadata(archive_file(s.s3_root, &location)?)?.len();
    if size != bytes {
        bail!("{location}: {size} bytes in the store, status says {bytes}");
    }
    let players = players(k)?;
    if players.is_empty() {
        bail!("no playerdata in the world at the snapshot (alice joined)");
    }
    println!(
        "e2e: ok   BackupSnapshot {name} Completed in {took:.0?}: Job pod on {} with the world read-only, server log save-off → save-all flush → save-on, {bytes} bytes / {files} files in s3s-fs ({location}), manifest {}…",
        crate::node::NODE_NAME,
        &manifest[..12]
    );
    Ok(players)
}

/// The archive object (`world.tar…`) s3s-fs keeps under a snapshot's
/// `s3://bucket/prefix` location, which must also hold `manifest.json`.
fn archive_file(root: &Path, location: &str) -> Result<PathBuf> {
    let key = location.strip_prefix("s3://").with_context(|| format!("not an s3:// location: {location}"))?;
    let dir = root.join(key);
    let names: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("{location} is not in s3s-fs ({})", dir.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    if !names.iter().any(|n| n == "manifest.json") {
        bail!("{location} has no manifest.json: {names:?}");
    }
    let archive = names
        .iter()
        .find(|n| n.starts_with("world.tar"))
        .with_context(|| format!("{location} has no archive: {names:?}"))?;
    Ok(dir.join(archive))
}

/// Overwrites the middle of the stored archive (size kept).
fn corrupt(root: &Path, location: &str) -> Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    let file = archive_file(root, location)?;
    let len = std::fs::metadata(&file)?.len();
    let mut f = std::fs::OpenOptions::new().write(true).open(&file)?;
    f.seek(SeekFrom::Start(len / 2))?;
    f.write_all(&vec![0x5a; (len / 4).clamp(1, 4096) as usize])?;
    Ok(())
}

/// Waits until the server is Running and Ready.
pub(crate) fn wait_running(k: &Kube, timeout: Duration) -> Result<()> {
    let got = k.wait_for(
        &[
            "get",
            "mcs",
            SERVER,
            "-n",
            NS,
            "-o",
            "jsonpath={.status.phase}/{.status.conditions[?(@.type==\"Ready\")].status}",
        ],
        "Running/True",
        timeout,
    );
    if let Err(e) = got {
        let _ = k.command(&["describe", "pod", POD, "-n", NS]).status();
        let _ = k.command(&["logs", POD, "-n", NS, "--all-containers", "--tail=50"]).status();
        bail!("MinecraftServer {SERVER} not Running/Ready: {e:#}\noperator log:\n{}", tail(&k.operator_log(), 30));
    }
    Ok(())
}

/// Where the apply→Ready time went (API server timestamps, 1 s resolution).
fn print_timing(k: &Kube) {
    let at = |kind: &str, name: &str, path: &str| crate::e2e::parse_rfc3339(&k.get(kind, name, path).ok()?);
    let applied = at("mcs", SERVER, "{.metadata.creationTimestamp}");
    let sts = at("statefulset", SERVER, "{.metadata.creationTimestamp}");
    let pod = at("pod", POD, "{.metadata.creationTimestamp}");
    let started = at("pod", POD, "{.status.containerStatuses[0].state.running.startedAt}");
    let ready = at("pod", POD, "{.status.conditions[?(@.type==\"Ready\")].lastTransitionTime}");
    let log = server_log(k).unwrap_or_default();
    let done = log.lines().find_map(|l| l.split("Done (").nth(1)?.split(')').next().map(str::to_string));
    if let (Some(a), Some(b), Some(p), Some(c), Some(r)) = (applied, sts, pod, started, ready) {
        println!(
            "e2e: timing apply→StatefulSet {}s (operator), StatefulSet→pod {}s, pod→container started {}s (scheduling, volume, init-container fetch-plugins), started→Ready {}s (server start {}, probes); total {}s",
            b - a,
            p - b,
            c - p,
            r - c,
            done.as_deref().unwrap_or("?"),
            r - a
        );
    }
}

pub(crate) fn server_log(k: &Kube) -> Result<String> {
    k.run(&["logs", POD, "-n", NS, "-c", "minecraft"])
}

/// Runs a node.js snippet in the server container (the image has no shell).
pub(crate) fn exec_node(k: &Kube, js: &str) -> Result<String> {
    k.run(&["exec", POD, "-n", NS, "-c", "minecraft", "--", "node", "-e", js])
}

/// The world's playerdata files, sorted.
fn players(k: &Kube) -> Result<Vec<String>> {
    let out = exec_node(
        k,
        "const fs=require('fs');const d='/data/world/playerdata';console.log(JSON.stringify(fs.existsSync(d)?fs.readdirSync(d).filter(f=>f.endsWith('.dat')).sort():[]))",
    )?;
    serde_json::from_str(out.trim()).with_context(|| format!("playerdata listing {out:?}"))
}

/// The whole world directory as a sha256 tree, taken in the server's pod
/// after a `save-all flush`: file (relative to /data/world) → sha256, and
/// the stand-in's save journal (`craftplane-save.json`, rewritten by every
/// save with its count and time) kept apart as its save count.
struct World {
    files: std::collections::BTreeMap<String, String>,
    saves: u64,
}

fn world(k: &Kube) -> Result<World> {
    rcon(k, &["save-all", "flush"])?;
    let out = exec_node(
        k,
        "const fs=require('fs'),p=require('path'),c=require('crypto');const r='/data/world',f={};\
         const w=(d)=>{for(const e of fs.readdirSync(d,{withFileTypes:true})){const x=p.join(d,e.name);\
         if(e.isDirectory())w(x);else f[p.relative(r,x)]=e.isFile()?c.createHash('sha256').update(fs.readFileSync(x)).digest('hex'):'not a file'}};\
         w(r);console.log(JSON.stringify(f))",
    )?;
    let mut files: std::collections::BTreeMap<String, String> =
        serde_json::from_str(out.trim()).with_context(|| format!("world tree {out:?}"))?;
    let journal = files.remove("craftplane-save.json").context("the world has no craftplane-save.json")?;
    let saves = exec_node(k, "console.log(require('/data/world/craftplane-save.json').saves)")?;
    let saves = saves.trim().parse().with_context(|| format!("save count {saves:?} ({journal})"))?;
    Ok(World { files, saves })
}

/// Waits (30 s, for a save in progress) until the world is `before` again,
/// file for file, and its save journal went on from there (a world put back
/// from an older copy would count fewer saves); a summary, or which files
/// differ.
fn same_world(k: &Kube, before: &World) -> Result<String> {
    retry(Duration::from_secs(30), || {
        let now = world(k)?;
        let keys: std::collections::BTreeSet<&String> = before.files.keys().chain(now.files.keys()).collect();
        let differ: Vec<String> = keys
            .into_iter()
            .filter(|f| before.files.get(*f) != now.files.get(*f))
            .map(|f| match (before.files.get(f), now.files.get(f)) {
                (Some(_), None) => format!("{f} gone"),
                (None, Some(_)) => format!("{f} new"),
                _ => format!("{f} changed"),
            })
            .collect();
        if !differ.is_empty() {
            bail!("world files differ from before: {differ:?}");
        }
        if now.saves <= before.saves {
            bail!("the save journal counts {} saves, {} before: an older copy of the world", now.saves, before.saves);
        }
        Ok(format!("{} files, sha256 each equal; saves {} → {}", now.files.len(), before.saves, now.saves))
    })
}

/// `rcon-cli` in the server container, as an admin with exec rights would.
fn rcon(k: &Kube, command: &[&str]) -> Result<String> {
    let mut args = vec!["exec", POD, "-n", NS, "-c", "minecraft", "--", "rcon-cli"];
    args.extend_from_slice(command);
    k.run(&args)
}

/// The server pod's address now (the game Service is headless: clients
/// dial the pod, whose address changes whenever it is re-created).
pub(crate) fn pod_ip(k: &Kube) -> Result<String> {
    let ip = k.get("pod", POD, "{.status.podIP}")?;
    if ip.is_empty() {
        bail!("{POD} has no address");
    }
    Ok(ip)
}

/// A real client (minecraft-protocol) joins the server pod's current
/// address from the node's network, and leaves.
pub(crate) fn join(s: &Setup, user: &str) -> Result<()> {
    let ip = pod_ip(s.kube)?;
    let ip = ip.as_str();
    let js = r#"
const mc = require('minecraft-protocol');
const c = mc.createClient({ host: process.argv[1], port: 25565, username: process.argv[2], version: '1.21.4', auth: 'offline' });
const t = setTimeout(() => { console.log('timeout'); process.exit(1); }, 20000);
c.on('login', () => { console.log('joined'); clearTimeout(t); setTimeout(() => { c.end(); process.exit(0); }, 1000); });
c.on('error', (e) => { console.log('error ' + e.message); process.exit(1); });
"#;
    let node = s.cluster.node().context("real node")?;
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", node.netns()))
        .args(["node", "-e", js, ip, user])
        .env("NODE_PATH", s.node_modules)
        .output()?;
    let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if said != "joined" {
        bail!("{user} could not join {ip}:25565: {said} {}", String::from_utf8_lossy(&out.stderr));
    }
    // The server saves the player as they leave the game; give it the
    // moment the disconnect takes.
    std::thread::sleep(Duration::from_millis(500));
    Ok(())
}

fn server_yaml(plugin_url: &str, sha256: &str, deletion_policy: &str) -> String {
    format!(
        "apiVersion: craftplane.io/v1alpha1
kind: Sku
metadata: {{name: real-node}}
spec:
  displayName: Real node (test)
  resources: {{cpu: 500m, memory: 1Gi, storage: 1Gi}}
  maxPlayers: 8
  storageClassName: {sc}
  allowedImages: [{image_repo}]
  placement:
    nodeSelector: {{{label}: {value}}}
    tolerations: [{{key: {taint}, operator: Exists, effect: NoSchedule}}]
---
apiVersion: craftplane.io/v1alpha1
kind: MinecraftServer
metadata: {{name: {SERVER}, namespace: {NS}}}
spec:
  sku: real-node
  eula: true
  type: PAPER
  version: \"1.21.4\"
  motd: craftplane e2e
  image: {image}
  deletionPolicy: {deletion_policy}
  gracefulStop: {{timeoutSeconds: 60, warning: Server restarting for e2e}}
---
{plugin}",
        sc = crate::node::STORAGE_CLASS,
        label = crate::node::LABEL.0,
        value = crate::node::LABEL.1,
        taint = crate::node::TAINT_KEY,
        image = crate::images::test_server_image(),
        image_repo =
            crate::images::test_server_image().rsplit_once(':').map(|(r, _)| r.to_string()).unwrap_or_default(),
        plugin = plugin_yaml("hello", plugin_url, sha256),
    )
}

fn plugin_yaml(name: &str, url: &str, sha256: &str) -> String {
    format!(
        "apiVersion: craftplane.io/v1alpha1
kind: PluginInstallation
metadata: {{name: {name}, namespace: {NS}}}
spec:
  server: {SERVER}
  source: {{url: {{url: \"{url}\", sha256: \"{sha256}\"}}}}
  files: [{{name: config.yml, content: \"{CONFIG}\"}}]
"
    )
}

/// An inline configuration file of the plugins (`spec.files`).
const CONFIG: &str = "greeting: hello from craftplane";

fn path(p: &Path) -> String {
    p.display().to_string()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
