//! BackupSnapshots against the real API server and a real S3 server: the
//! Job, status from the store, deletion of stored objects.
//!
//! Pods do not run here (kwok completes Job pods after 5 s), so the test
//! plays the kubelet: it runs the Job's own command line on this machine,
//! against the same store, while the Job "runs".

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::fixture::{Fixture, tail};
use common::operator::{Operator, SHARD_LABEL};
use common::s3::{ACCESS_KEY, S3Server, SECRET_KEY};
use craftplane::api::backup::BackupPhase;
use craftplane::api::server::ServerPhase;
use craftplane::api::{BackupSnapshot, Tenant};
use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

struct Env {
    f: Fixture,
    s3: S3Server,
    op: Operator,
    dir: PathBuf,
}

async fn setup(prefix: &str) -> Env {
    setup_stores(prefix, &["main"]).await
}

/// Like [`setup`], with stores of these names (the first is the default),
/// each at `s3://worlds/<cluster for main, else its name>` with the same
/// credentials.
async fn setup_stores(prefix: &str, names: &[&str]) -> Env {
    let f = Fixture::new(prefix).await;
    let dir = std::env::temp_dir().join(format!("craftplane-{prefix}-{}", common::unique_suffix()));
    let s3 = S3Server::start(dir.join("s3"), "worlds");
    let stores = dir.join("stores.yaml");
    let mut yaml = format!("defaultStore: {}\nstores:\n", names[0]);
    for name in names {
        let path = if *name == "main" { "cluster" } else { name };
        yaml += &format!(
            "- name: {name}\n  url: s3://worlds/{path}\n  config:\n    AWS_ENDPOINT: http://127.0.0.1:{}\n    AWS_ALLOW_HTTP: \"true\"\n    AWS_REGION: us-east-1\n  credentialsSecret: s3-creds\n",
            s3.port
        );
    }
    std::fs::write(&stores, yaml).unwrap();
    // The credentials live in the operator's namespace (here: the test's).
    let creds = Secret {
        metadata: kube::api::ObjectMeta { name: Some("s3-creds".into()), ..Default::default() },
        data: Some(BTreeMap::from([
            ("AWS_ACCESS_KEY_ID".to_string(), ByteString(ACCESS_KEY.into())),
            ("AWS_SECRET_ACCESS_KEY".to_string(), ByteString(SECRET_KEY.into())),
        ])),
        ..Default::default()
    };
    f.api::<Secret>().create(&PostParams::default(), &creds).await.unwrap();
    let op = Operator::start(
        &f.shard,
        &[
            "--backup-stores",
            stores.to_str().unwrap(),
            "--operator-namespace",
            &f.ns,
            "--helper-image",
            "craftplane:test",
            // Schedules here run every few seconds, to see several slots.
            "--min-backup-interval-seconds",
            "0",
        ],
    )
    .await;
    Env { f, s3, op, dir }
}

async fn create_snapshot(e: &Env, name: &str, spec: Value) {
    let mut full = json!({"server": "mc"});
    for (k, v) in spec.as_object().unwrap() {
        full[k] = v.clone();
    }
    let s: BackupSnapshot = serde_json::from_value(json!({
        "apiVersion": "craftplane.io/v1alpha1", "kind": "BackupSnapshot",
        "metadata": {"name": name, "namespace": e.f.ns, "labels": {SHARD_LABEL: e.f.shard}},
        "spec": full,
    }))
    .unwrap();
    e.f.api::<BackupSnapshot>().create(&PostParams::default(), &s).await.expect("create snapshot");
}

async fn wait_snapshot(e: &Env, name: &str, what: &str, pred: impl Fn(&BackupSnapshot) -> bool) -> BackupSnapshot {
    let api = e.f.api::<BackupSnapshot>();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut last = None;
    while tokio::time::Instant::now() < deadline {
        if let Ok(s) = api.get(name).await {
            if pred(&s) {
                return s;
            }
            last = Some(s);
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    panic!(
        "snapshot {name}: {what} not reached; status: {}\noperator log tail:\n{}",
        serde_json::to_string_pretty(&last.and_then(|s| s.status)).unwrap(),
        tail(&e.op.log_text(), 40)
    );
}

fn phase(s: &BackupSnapshot) -> Option<BackupPhase> {
    s.status.as_ref().and_then(|s| s.phase)
}

fn reason(s: &BackupSnapshot) -> String {
    s.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| format!("{}: {}", c.reason, c.message))
        .unwrap_or_default()
}

async fn wait_job(e: &Env, name: &str) -> Job {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(j)) = e.f.api::<Job>().get_opt(name).await {
            return j;
        }
        assert!(tokio::time::Instant::now() < deadline, "no Job {name}\n{}", tail(&e.op.log_text(), 30));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the Job's command on this machine (the kubelet's part), with the
/// world at `world` instead of the volume and without RCON (no real server).
fn run_job_here(job: &Job, world: &Path) -> String {
    let c = &job.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0];
    let mut args: Vec<String> = c.args.clone().unwrap();
    let i = args.iter().position(|a| a == "--data-dir").unwrap();
    args[i + 1] = world.to_str().unwrap().into();
    if let Some(i) = args.iter().position(|a| a == "--rcon-address") {
        args.drain(i..i + 4);
    }
    let env: Vec<(String, String)> =
        c.env.iter().flatten().map(|v| (v.name.clone(), v.value.clone().unwrap_or_default())).collect();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_craftplane"))
        .args(&args)
        .args(["--termination-log", "/nonexistent/log"])
        .envs(env)
        .envs([("AWS_ACCESS_KEY_ID", ACCESS_KEY), ("AWS_SECRET_ACCESS_KEY", SECRET_KEY)])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn small_world(dir: &Path) {
    for i in 0..120 {
        let p = dir.join(format!("world/region/r.{i}.0.mca"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, vec![(i % 251) as u8; 4096 + i * 13]).unwrap();
    }
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    std::fs::write(dir.join("logs/latest.log"), "x").unwrap();
}

/// The object-store key of a location, as a path under the S3 server's root.
fn stored(e: &Env, location: &str) -> PathBuf {
    e.s3.root.join(location.strip_prefix("s3://").unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_runs_its_job_and_completes_from_the_store() {
    let e = setup("backup-job").await;
    e.f.create_server("mc", json!({})).await;
    e.f.wait("mc", "Running", &e.op, |s| s.status.as_ref().and_then(|s| s.phase) == Some(ServerPhase::Running)).await;
    create_snapshot(&e, "snap1", json!({"exclude": ["logs"]})).await;
    let job = wait_job(&e, "snap1-backup").await;

    // The Job: read-only world volume, on the server pod's node, RCON, the store's settings and credentials.
    let pod = e.f.api::<Pod>().get("mc-0").await.unwrap();
    let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone()).expect("the server pod's IP");
    let node = pod.spec.unwrap().node_name.unwrap();
    let js = serde_json::to_value(&job).unwrap();
    let ps = &js["spec"]["template"]["spec"];
    assert_eq!(
        ps["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]["matchFields"]
            [0]["values"][0],
        node
    );
    assert_eq!(ps["volumes"][0]["persistentVolumeClaim"], json!({"claimName": "mc-data", "readOnly": true}));
    let args: Vec<String> = serde_json::from_value(ps["containers"][0]["args"].clone()).unwrap();
    assert!(args.windows(2).any(|w| w[0] == "--rcon-address" && w[1] == format!("{ip}:25575")), "{args:?}");
    assert!(args.windows(2).any(|w| w[0] == "--exclude" && w[1] == "logs"), "{args:?}");
    assert!(args.windows(2).any(|w| w[0] == "--server" && w[1] == format!("{}/mc/PAPER/1.21.4", e.f.ns)), "{args:?}");
    assert_eq!(ps["containers"][0]["image"], "craftplane:test");
    assert_eq!(ps["containers"][0]["envFrom"][0]["secretRef"]["name"], "snap1-store");
    let copy = e.f.api::<Secret>().get("snap1-store").await.expect("credentials copied next to the Job");
    assert_eq!(copy.data.unwrap()["AWS_ACCESS_KEY_ID"].0, ACCESS_KEY.as_bytes());
    let running = wait_snapshot(&e, "snap1", "Running", |s| phase(s) == Some(BackupPhase::Running)).await;
    let location = running.status.unwrap().location.unwrap();
    assert!(location.starts_with(&format!("s3://worlds/cluster/{}/mc/snap1-", e.f.ns)), "{location}");

    let world = e.dir.join("world");
    small_world(&world);
    let result: Value = serde_json::from_str(run_job_here(&job, &world).trim()).unwrap();
    assert_eq!(result["location"], location.as_str());

    let done = wait_snapshot(&e, "snap1", "Completed", |s| phase(s) == Some(BackupPhase::Completed)).await;
    let st = done.status.unwrap();
    let manifest = std::fs::read(stored(&e, &location).join("manifest.json")).unwrap();
    let m: Value = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(st.files, Some(120), "logs excluded");
    assert_eq!(st.bytes, m["archive"]["bytes"].as_i64());
    let sha: String = Sha256::digest(&manifest).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(st.manifest_sha256.as_deref(), Some(sha.as_str()));
    assert!(st.completed_at.is_some() && st.started_at.is_some());
    // The copied credentials are gone once the Job is done.
    let gone = common::wait_until(Duration::from_secs(20), || async {
        e.f.api::<Secret>().get_opt("snap1-store").await.unwrap().is_none()
    })
    .await;
    assert!(gone.is_ok(), "credentials copy not deleted");
    // kubectl verify from outside agrees.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_craftplane"))
        .args(["backup", "verify", &location])
        .envs(e.s3.env())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Deleting the snapshot deletes the stored objects (finalizer).
    e.f.api::<BackupSnapshot>().delete("snap1", &DeleteParams::default()).await.unwrap();
    let deleted = common::wait_until(Duration::from_secs(30), || async {
        e.f.api::<BackupSnapshot>().get_opt("snap1").await.unwrap().is_none()
    })
    .await;
    assert!(deleted.is_ok(), "snapshot not deleted\n{}", tail(&e.op.log_text(), 30));
    assert!(!stored(&e, &location).join("manifest.json").exists());
    assert!(!stored(&e, &location).join("world.tar.zst").exists());

    // A retained snapshot keeps its objects when deleted.
    create_snapshot(&e, "keep", json!({"retain": true})).await;
    let job = wait_job(&e, "keep-backup").await;
    run_job_here(&job, &world);
    let done = wait_snapshot(&e, "keep", "Completed", |s| phase(s) == Some(BackupPhase::Completed)).await;
    let location = done.status.unwrap().location.unwrap();
    e.f.api::<BackupSnapshot>().delete("keep", &DeleteParams::default()).await.unwrap();
    common::wait_until(Duration::from_secs(30), || async {
        e.f.api::<BackupSnapshot>().get_opt("keep").await.unwrap().is_none()
    })
    .await
    .expect("retained snapshot deleted");
    assert!(stored(&e, &location).join("manifest.json").exists(), "retained objects must stay");
    e.op.stop();
    e.f.cleanup().await;
    let _ = std::fs::remove_dir_all(&e.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_conditions_never_completed() {
    let e = setup("backup-fail").await;
    e.f.create_server("mc", json!({})).await;
    // The Job "succeeds" but wrote nothing: not Completed.
    create_snapshot(&e, "empty", json!({})).await;
    let s = wait_snapshot(&e, "empty", "Failed", |s| phase(s) == Some(BackupPhase::Failed)).await;
    assert!(reason(&s).starts_with("ManifestMissing: "), "{}", reason(&s));
    // The Job fails (here: its deadline passes, as when its pod is killed
    // again and again): Failed with the reason, never Completed.
    create_snapshot(&e, "killed", json!({})).await;
    wait_job(&e, "killed-backup").await;
    e.f.api::<Job>()
        .patch(
            "killed-backup",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"activeDeadlineSeconds": 1}})),
        )
        .await
        .unwrap();
    let s = wait_snapshot(&e, "killed", "Failed", |s| phase(s) == Some(BackupPhase::Failed)).await;
    assert!(reason(&s).starts_with("BackupJobFailed: "), "{}", reason(&s));
    assert!(s.status.unwrap().manifest_sha256.is_none());
    // No such store.
    create_snapshot(&e, "nostore", json!({"store": {"name": "elsewhere"}})).await;
    let s = wait_snapshot(&e, "nostore", "Failed", |s| phase(s) == Some(BackupPhase::Failed)).await;
    assert!(
        reason(&s).starts_with("StoreNotConfigured: store \"elsewhere\" is not configured; configured: main"),
        "{}",
        reason(&s)
    );
    assert!(e.f.api::<Job>().get_opt("nostore-backup").await.unwrap().is_none());
    // No such server (yet): it waits, as GitOps may apply it before the server.
    create_snapshot(&e, "noserver", json!({"server": "ghost"})).await;
    let s = wait_snapshot(&e, "noserver", "ServerNotFound", |s| reason(s).starts_with("ServerNotFound: ")).await;
    assert_eq!(phase(&s), Some(BackupPhase::Pending));
    e.op.stop();
    e.f.cleanup().await;
    let _ = std::fs::remove_dir_all(&e.dir);
}

/// Plays the kubelet for every backup Job of the namespace until stopped:
/// runs each new Job's command here as soon as it appears.
fn kubelet(e: &Env, world: PathBuf) -> (std::sync::Arc<std::sync::atomic::AtomicBool>, tokio::task::JoinHandle<usize>) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop.clone();
    let jobs = e.f.api::<Job>();
    let task = tokio::spawn(async move {
        let mut done = std::collections::BTreeSet::new();
        while !s.load(std::sync::atomic::Ordering::SeqCst) {
            if let Ok(list) =
                jobs.list(&kube::api::ListParams::default().labels("app.kubernetes.io/component=backup")).await
            {
                for j in list.items {
                    let name = j.metadata.name.clone().unwrap();
                    if done.insert(name) {
                        let w = world.clone();
                        tokio::task::spawn_blocking(move || run_job_here(&j, &w)).await.unwrap();
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        done.len()
    });
    (stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_create_snapshots_and_retention_prunes_them() {
    let e = setup("backup-sched").await;
    let world = e.dir.join("world");
    small_world(&world);
    let (stop, kube_task) = kubelet(&e, world);
    // Every 5 seconds, keep the newest 2.
    e.f.create_server("mc", json!({"backup": {"schedule": "*/5 * * * * *", "retention": {"keepLast": 2}}})).await;
    let api = e.f.api::<BackupSnapshot>();
    let mut seen = std::collections::BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let list = api.list(&kube::api::ListParams::default()).await.unwrap().items;
        for s in &list {
            if phase(s) == Some(BackupPhase::Completed) {
                seen.insert((s.metadata.name.clone().unwrap(), s.status.as_ref().unwrap().location.clone().unwrap()));
            }
        }
        let completed_now = list.iter().filter(|s| phase(s) == Some(BackupPhase::Completed)).count();
        if seen.len() >= 4 && completed_now <= 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "completed so far {seen:?}, now {completed_now}\n{}",
            tail(&e.op.log_text(), 30)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let jobs_run = kube_task.await.unwrap();
    // Scheduled snapshots: named by slot, labelled, reason Scheduled.
    let list = api.list(&kube::api::ListParams::default().labels("craftplane.io/scheduled=true")).await.unwrap().items;
    assert!(list.iter().all(|s| s.spec.reason == craftplane::api::backup::BackupReason::Scheduled));
    assert!(
        list.iter().all(|s| s.metadata.name.as_deref().unwrap().starts_with("mc-2")),
        "{:?}",
        list.iter().map(|s| s.metadata.name.clone()).collect::<Vec<_>>()
    );
    // Pruned snapshots took their stored objects with them.
    let remaining: std::collections::BTreeSet<String> = list.iter().filter_map(|s| s.metadata.name.clone()).collect();
    let pruned: Vec<&(String, String)> = seen.iter().filter(|(n, _)| !remaining.contains(n)).collect();
    assert!(pruned.len() >= 2, "pruned {pruned:?}");
    for (_, loc) in &pruned {
        let gone =
            common::wait_until(Duration::from_secs(20), || async { !stored(&e, loc).join("manifest.json").exists() })
                .await;
        assert!(gone.is_ok(), "{loc} still stored");
    }
    let server = e.f.servers().get("mc").await.unwrap();
    let st = server.status.unwrap();
    let sched = st.backup_schedule.unwrap();
    assert!(sched.next_scheduled_time.unwrap().0 > sched.last_scheduled_time.unwrap().0);
    assert!(st.last_backup.is_some(), "lastBackup names the newest completed snapshot");
    println!("kubelet ran {jobs_run} backup Jobs; {} completed snapshots seen, {} pruned", seen.len(), pruned.len());
    e.op.stop();
    e.f.cleanup().await;
    let _ = std::fs::remove_dir_all(&e.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_stops_the_server_runs_the_job_and_starts_it_again() {
    let e = setup("restore").await;
    let world = e.dir.join("world");
    small_world(&world);
    e.f.create_server("mc", json!({})).await;
    e.f.wait("mc", "Running", &e.op, |s| s.status.as_ref().and_then(|s| s.phase) == Some(ServerPhase::Running)).await;
    create_snapshot(&e, "snap", json!({})).await;
    let job = wait_job(&e, "snap-backup").await;
    run_job_here(&job, &world);
    let snap = wait_snapshot(&e, "snap", "Completed", |s| phase(s) == Some(BackupPhase::Completed)).await;
    let location = snap.status.unwrap().location.unwrap();

    // A snapshot that is not Completed (or not there) is refused without stopping anything.
    e.f.patch_spec("mc", json!({"restore": {"snapshot": "nope"}})).await;
    let s =
        e.f.wait("mc", "restore refused", &e.op, |s| {
            s.status
                .as_ref()
                .and_then(|s| s.restore.as_ref())
                .is_some_and(|r| r.phase == craftplane::api::server::RestorePhase::Failed)
        })
        .await;
    assert!(s.status.as_ref().unwrap().restore.as_ref().unwrap().message.as_ref().unwrap().contains("does not exist"));
    assert_eq!(s.status.unwrap().phase, Some(ServerPhase::Running), "the server keeps running");

    e.f.patch_spec("mc", json!({"restore": {"snapshot": "snap"}})).await;
    // While the restore runs the server is Restoring and not Ready (it read
    // Stopped/Ready=True).
    let s =
        e.f.wait("mc", "phase Restoring, Ready=False", &e.op, |s| {
            s.status.as_ref().and_then(|s| s.phase) == Some(ServerPhase::Restoring)
                && s.status.as_ref().is_some_and(|st| {
                    st.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "False" && c.reason == "Restoring")
                })
        })
        .await;
    assert!(s.status.unwrap().conditions.iter().all(|c| c.type_ != "Ready" || c.status == "False"));
    // Stopped first, then a restore Job with the snapshot's location.
    let restore_job = {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let jobs =
                e.f.api::<Job>()
                    .list(&kube::api::ListParams::default().labels("app.kubernetes.io/component=restore"))
                    .await
                    .unwrap();
            if let Some(j) = jobs.items.into_iter().next() {
                break j;
            }
            assert!(tokio::time::Instant::now() < deadline, "no restore Job\n{}", tail(&e.op.log_text(), 30));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    assert!(e.f.api::<Pod>().get_opt("mc-0").await.unwrap().is_none(), "the server is stopped during the restore");
    let sts = e.f.api::<k8s_openapi::api::apps::v1::StatefulSet>().get("mc").await.unwrap();
    assert_eq!(sts.spec.unwrap().replicas, Some(0));
    let c = &restore_job.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0];
    let args = c.args.clone().unwrap();
    assert_eq!(args[..3], ["restore".to_string(), "--from".into(), location.clone()]);
    let pod_spec = serde_json::to_value(restore_job.spec.as_ref().unwrap().template.spec.as_ref().unwrap()).unwrap();
    assert_eq!(pod_spec["volumes"][0]["persistentVolumeClaim"]["claimName"], "mc-data");
    assert_ne!(pod_spec["volumes"][0]["persistentVolumeClaim"]["readOnly"], true, "a restore writes the world");
    // The kubelet's part: the Job's command restores into a world here.
    let target = e.dir.join("target");
    std::fs::create_dir_all(target.join("world")).unwrap();
    std::fs::write(target.join("world/old.dat"), b"old").unwrap();
    let mut a = args.clone();
    let i = a.iter().position(|x| x == "--data-dir").unwrap();
    a[i + 1] = target.to_str().unwrap().into();
    let env: Vec<(String, String)> =
        c.env.iter().flatten().map(|v| (v.name.clone(), v.value.clone().unwrap_or_default())).collect();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_craftplane"))
        .args(&a)
        .args(["--termination-log", "/nonexistent/x"])
        .envs(env)
        .envs([("AWS_ACCESS_KEY_ID", ACCESS_KEY), ("AWS_SECRET_ACCESS_KEY", SECRET_KEY)])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!target.join("world/old.dat").exists());
    assert!(target.join("world/region/r.0.0.mca").exists());

    // kwok completes the Job: restore Completed, the server runs again.
    let s =
        e.f.wait("mc", "restore Completed and Running", &e.op, |s| {
            let st = s.status.as_ref();
            st.and_then(|s| s.restore.as_ref())
                .is_some_and(|r| r.phase == craftplane::api::server::RestorePhase::Completed)
                && st.and_then(|s| s.phase) == Some(ServerPhase::Running)
        })
        .await;
    let first = s.status.unwrap().restore.unwrap();
    assert_eq!(first.snapshot, "snap");
    let first_job = first.job.clone().expect("the request names its Job");
    assert_eq!(restore_job.metadata.name.as_deref(), Some(first_job.as_str()));
    // The finished Job is cleaned up; its result stays in the status.
    let gone = common::wait_until(Duration::from_secs(30), || async {
        e.f.api::<Job>().get_opt(&first_job).await.unwrap().is_none()
    })
    .await;
    assert!(gone.is_ok(), "finished restore Job {first_job} not deleted\n{}", tail(&e.op.log_text(), 20));

    // The documented retry: clear spec.restore (the result stays), set it again.
    e.f.patch_spec("mc", json!({"restore": null})).await;
    e.f.wait("mc", "request cleared, result kept", &e.op, |s| {
        s.status.as_ref().and_then(|s| s.restore.as_ref()).is_some_and(|r| {
            r.request_generation.is_none() && r.phase == craftplane::api::server::RestorePhase::Completed
        })
    })
    .await;
    e.f.patch_spec("mc", json!({"restore": {"snapshot": "snap"}})).await;
    let s =
        e.f.wait("mc", "a second restore with its own Job, Completed", &e.op, |s| {
            s.status.as_ref().and_then(|s| s.restore.as_ref()).is_some_and(|r| {
                r.job.as_deref().is_some_and(|j| j != first_job)
                    && r.phase == craftplane::api::server::RestorePhase::Completed
            }) && s.status.as_ref().and_then(|s| s.phase) == Some(ServerPhase::Running)
        })
        .await;
    let second = s.status.unwrap().restore.unwrap();
    assert!(second.completed_at.unwrap().0 > first.completed_at.unwrap().0, "the second request ran");
    e.op.stop();
    e.f.cleanup().await;
    let _ = std::fs::remove_dir_all(&e.dir);
}

fn condition<'a>(
    s: &'a craftplane::api::MinecraftServer,
    t: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    s.status.as_ref()?.conditions.iter().find(|c| c.type_ == t)
}

/// A schedule of the right shape that the parser still refuses is reported
/// on the server (it used to be a log line only), and the server's status
/// goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_that_slips_through_admission_is_a_condition() {
    let f = Fixture::new("backup-badcron").await;
    let op = Operator::start(&f.shard, &[]).await;
    // Three letters pass the admission shape check, but name no weekday.
    f.create_server("mc", json!({"backup": {"schedule": "0 4 * * MOO"}})).await;
    let s = f
        .wait("mc", "BackupSchedule=False, reason InvalidSchedule", &op, |s| {
            condition(s, "BackupSchedule").is_some_and(|c| c.status == "False" && c.reason == "InvalidSchedule")
        })
        .await;
    assert!(condition(&s, "BackupSchedule").unwrap().message.contains("MOO"));
    assert!(s.status.as_ref().unwrap().phase.is_some(), "the server's status is reported");
    // Fixing the schedule clears it.
    f.patch_spec("mc", json!({"backup": {"schedule": "0 4 * * MON"}})).await;
    f.wait("mc", "BackupSchedule=True", &op, |s| {
        condition(s, "BackupSchedule").is_some_and(|c| c.status == "True" && c.reason == "Scheduled")
    })
    .await;
    op.stop();
    f.cleanup().await;
}

/// Issue 30 item 8(c): a schedule with a seconds field that runs more
/// often than the operator's minimum (default 5 minutes) is refused with a
/// condition, and takes no snapshot at all (it used to take one a second).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_below_the_minimum_interval_is_a_condition_and_takes_no_snapshot() {
    let f = Fixture::new("backup-flood").await;
    let op = Operator::start(&f.shard, &[]).await;
    f.create_server("mc", json!({"backup": {"schedule": "* * * * * *"}})).await;
    let s = f
        .wait("mc", "BackupSchedule=False, reason ScheduleTooFrequent", &op, |s| {
            condition(s, "BackupSchedule").is_some_and(|c| c.status == "False" && c.reason == "ScheduleTooFrequent")
        })
        .await;
    let msg = &condition(&s, "BackupSchedule").unwrap().message;
    assert!(msg.contains("1s apart") && msg.contains("300s"), "{msg}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let snaps = f.api::<BackupSnapshot>().list(&Default::default()).await.unwrap().items;
    assert!(
        snaps.is_empty(),
        "no snapshot flood: {:?}",
        snaps.iter().map(|s| s.metadata.name.clone()).collect::<Vec<_>>()
    );
    // Every 5 minutes is allowed.
    f.patch_spec("mc", json!({"backup": {"schedule": "*/5 * * * *"}})).await;
    f.wait("mc", "BackupSchedule=True", &op, |s| {
        condition(s, "BackupSchedule").is_some_and(|c| c.status == "True" && c.reason == "Scheduled")
    })
    .await;
    op.stop();
    f.cleanup().await;
}

/// Issue 30 item 8(c): a new scheduled snapshot is taken only once the
/// previous scheduled one has finished (here nothing runs its Job: it
/// stays unfinished until kwok ends its pod).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_snapshot_waits_for_the_previous_one_to_finish() {
    let e = setup("backup-one").await;
    e.f.create_server("mc", json!({"backup": {"schedule": "* * * * * *"}})).await;
    e.f.wait("mc", "BackupSchedule reason WaitingForPrevious", &e.op, |s| {
        condition(s, "BackupSchedule").is_some_and(|c| c.status == "True" && c.reason == "WaitingForPrevious")
    })
    .await;
    let api = e.f.api::<BackupSnapshot>();
    let mut names = std::collections::BTreeSet::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(6);
    while tokio::time::Instant::now() < until {
        let snaps = api.list(&Default::default()).await.unwrap().items;
        let unfinished: Vec<_> = snaps
            .iter()
            .filter(|s| !matches!(phase(s), Some(BackupPhase::Completed | BackupPhase::Failed)))
            .filter_map(|s| s.metadata.name.clone())
            .collect();
        assert!(unfinished.len() <= 1, "one unfinished scheduled snapshot at a time: {unfinished:?}");
        names.extend(snaps.into_iter().filter_map(|s| s.metadata.name));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(names.len() <= 3, "no snapshot a second: {names:?}");
    e.op.stop();
    e.f.cleanup().await;
    let _ = std::fs::remove_dir_all(&e.dir);
}

/// A scheduled snapshot the API refuses (here the namespace's quota of
/// BackupSnapshots, as a tenant's maxBackups sets it) is a condition on
/// the server, and the server's status keeps following its spec.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_scheduled_snapshot_is_a_condition_and_the_server_goes_on() {
    let f = Fixture::new("backup-quota").await;
    let quota: k8s_openapi::api::core::v1::ResourceQuota = serde_json::from_value(json!({
        "metadata": {"name": "no-backups"},
        "spec": {"hard": {"count/backupsnapshots.craftplane.io": "0"}},
    }))
    .unwrap();
    f.api::<k8s_openapi::api::core::v1::ResourceQuota>().create(&PostParams::default(), &quota).await.unwrap();
    let op = Operator::start(&f.shard, &["--min-backup-interval-seconds", "0"]).await;
    f.create_server("mc", json!({"backup": {"schedule": "* * * * * *"}})).await;
    let s = f
        .wait("mc", "BackupSchedule=False, reason SnapshotCreateFailed", &op, |s| {
            condition(s, "BackupSchedule").is_some_and(|c| c.status == "False" && c.reason == "SnapshotCreateFailed")
        })
        .await;
    let msg = &condition(&s, "BackupSchedule").unwrap().message;
    assert!(msg.contains("quota"), "{msg}");
    let st = s.status.as_ref().unwrap();
    assert!(st.phase.is_some() && st.config_revision.is_some(), "the rest of the status is written: {st:?}");
    assert_eq!(st.observed_generation, s.metadata.generation);
    // The server still follows spec changes.
    f.patch_spec("mc", json!({"maxPlayers": 7})).await;
    f.wait("mc", "the new generation observed", &op, |s| {
        s.status.as_ref().and_then(|st| st.observed_generation) == s.metadata.generation
            && s.metadata.generation > Some(1)
    })
    .await;
    assert!(f.api::<BackupSnapshot>().list(&Default::default()).await.unwrap().items.is_empty());
    op.stop();
    f.cleanup().await;
}

/// A Secret of this test's own, as an admin or another tool would have it.
async fn foreign_secret(e: &Env, name: &str, labels: Value) -> Secret {
    let s: Secret = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "data": {"password": "bm90LWNyYWZ0cGxhbmUncw==", "other-key": "YWRtaW4tb25seQ=="},
    }))
    .unwrap();
    e.f.api::<Secret>().create(&PostParams::default(), &s).await.expect("create foreign Secret")
}

/// The Secret is exactly as created: not written, not adopted, not deleted.
async fn assert_untouched(e: &Env, before: &Secret) {
    let name = before.metadata.name.as_deref().unwrap();
    let now = e.f.api::<Secret>().get_opt(name).await.unwrap().unwrap_or_else(|| panic!("Secret {name} was deleted"));
    assert_eq!(now.metadata.resource_version, before.metadata.resource_version, "Secret {name} was written");
    assert_eq!(now.metadata.uid, before.metadata.uid, "Secret {name} was replaced");
    assert!(now.metadata.owner_references.is_none(), "Secret {name} was adopted");
    assert_eq!(now.data, before.data);
    assert_eq!(now.metadata.labels, before.metadata.labels);
}

fn server_condition(s: &craftplane::api::MinecraftServer, t: &str) -> Option<(String, String, String)> {
    let c = condition(s, t)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Secrets that are not craftplane's — named like a server's RCON Secret,
/// a snapshot's or a restore's credentials copy — are never overwritten,
/// adopted, mounted or deleted: the object that needs the name gets a
/// condition naming the Secret, and the normal path goes on elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_that_are_not_craftplanes_are_left_alone() {
    let e = setup("secret-conflict").await;
    let world = e.dir.join("world");
    small_world(&world);
    // RCON Secrets in the way: one without craftplane's label, one with it
    // (it is in the operator's cache then) but not owned by the server.
    let plain = foreign_secret(&e, "mc2-rcon", json!({"team": "admins"})).await;
    let labelled =
        foreign_secret(&e, "mc3-rcon", json!({"app.kubernetes.io/managed-by": "craftplane", "team": "admins"})).await;
    e.f.create_server("mc", json!({})).await;
    for name in ["mc2", "mc3"] {
        e.f.create_server(name, json!({})).await;
        let s =
            e.f.wait(name, "Stalled, reason SecretConflict", &e.op, |s| {
                server_condition(s, "Stalled").is_some_and(|(st, r, _)| st == "True" && r == "SecretConflict")
            })
            .await;
        let (_, _, msg) = server_condition(&s, "Ready").unwrap();
        assert!(msg.contains(&format!("Secret {}/{name}-rcon", e.f.ns)), "{msg}");
        let sts = e.f.api::<k8s_openapi::api::apps::v1::StatefulSet>().get_opt(name).await.unwrap();
        assert!(sts.is_none(), "no workload mounts a foreign Secret ({name})");
    }
    assert_untouched(&e, &plain).await;
    assert_untouched(&e, &labelled).await;

    // The normal path: mc runs with its own RCON Secret.
    e.f.wait("mc", "Running", &e.op, |s| s.status.as_ref().and_then(|s| s.phase) == Some(ServerPhase::Running)).await;
    let rcon = e.f.api::<Secret>().get("mc-rcon").await.unwrap();
    assert!(rcon.metadata.owner_references.unwrap().iter().any(|o| o.kind == "MinecraftServer" && o.name == "mc"));

    // A snapshot whose credentials copy is taken: it waits with the reason, no Job.
    let copy = foreign_secret(&e, "blocked-store", json!({})).await;
    create_snapshot(&e, "blocked", json!({})).await;
    let s = wait_snapshot(&e, "blocked", "reason SecretConflict", |s| reason(s).starts_with("SecretConflict: ")).await;
    assert!(reason(&s).contains(&format!("Secret {}/blocked-store", e.f.ns)), "{}", reason(&s));
    assert!(e.f.api::<Job>().get_opt("blocked-backup").await.unwrap().is_none());
    e.f.api::<BackupSnapshot>().delete("blocked", &DeleteParams::default()).await.unwrap();
    common::wait_until(Duration::from_secs(30), || async {
        e.f.api::<BackupSnapshot>().get_opt("blocked").await.unwrap().is_none()
    })
    .await
    .expect("snapshot deleted");
    assert_untouched(&e, &copy).await;

    // A copy of craftplane's that someone replaced while the Job ran is
    // not deleted when the Job ends (the deletion checks owner and UID).
    create_snapshot(&e, "snap", json!({})).await;
    let job = wait_job(&e, "snap-backup").await;
    let ours = e.f.api::<Secret>().get("snap-store").await.unwrap();
    assert!(ours.metadata.owner_references.is_some());
    e.f.api::<Secret>().delete("snap-store", &DeleteParams::default()).await.unwrap();
    let replaced = foreign_secret(&e, "snap-store", json!({})).await;
    run_job_here(&job, &world);
    wait_snapshot(&e, "snap", "Completed", |s| phase(s) == Some(BackupPhase::Completed)).await;
    // The operator deletes the Job once the result is in: by then it would have deleted the copy.
    common::wait_until(Duration::from_secs(30), || async {
        e.f.api::<Job>().get_opt("snap-backup").await.unwrap().is_none()
    })
    .await
    .expect("finished Job deleted");
    assert_untouched(&e, &replaced).await;

    // A restore whose credentials copy is taken: refused before anything
    // stops, with the reason on the server.
    let restore_copy = foreign_secret(&e, "mc-restore-store", json!({})).await;
    e.f.patch_spec("mc", json!({"restore": {"snapshot": "snap"}})).await;
    let s =
        e.f.wait("mc", "Restore=False, reason SecretConflict", &e.op, |s| {
            server_condition(s, "Restore").is_some_and(|(st, r, _)| st == "False" && r == "SecretConflict")
        })
        .await;
    let st = serde_json::to_value(s.status.as_ref().unwrap()).unwrap();
    assert_eq!(st["restore"]["phase"], "Failed");
    assert_eq!(st["restore"]["reason"], "SecretConflict");
    assert!(st["restore"]["message"].as_str().unwrap().contains("mc-restore-store"), "{st}");
    assert_eq!(s.status.as_ref().unwrap().phase, Some(ServerPhase::Running), "the server was never stopped");
    let restores =
        e.f.api::<Job>().list(&kube::api::ListParams::default().labels("app.kubernetes.io/component=restore")).await;
    assert!(restores.unwrap().items.is_empty(), "no restore Job");
    assert_untouched(&e, &restore_copy).await;
    e.op.stop();
    e.f.cleanup().await;
    let _ = std::fs::remove_dir_all(&e.dir);
}

/// A Tenant of this test's shard whose namespace `tenant-<name>` the
/// operator creates; returns its name and namespace once the namespace is
/// there.
async fn tenant(e: &Env, suffix: &str, spec: Value) -> (String, String) {
    let name = format!("{}-{suffix}", e.f.shard);
    let mut full = json!({"owners": [{"kind": "User", "name": format!("owner-{name}")}]});
    for (k, v) in spec.as_object().unwrap() {
        full[k] = v.clone();
    }
    let t: Tenant = serde_json::from_value(json!({
        "apiVersion": "craftplane.io/v1alpha1", "kind": "Tenant",
        "metadata": {"name": name, "labels": {SHARD_LABEL: e.f.shard}},
        "spec": full,
    }))
    .unwrap();
    Api::<Tenant>::all(e.f.client.clone()).create(&PostParams::default(), &t).await.expect("create tenant");
    let ns = format!("tenant-{name}");
    let nss = Api::<k8s_openapi::api::core::v1::Namespace>::all(e.f.client.clone());
    common::wait_until(Duration::from_secs(30), || async { nss.get_opt(&ns).await.unwrap().is_some() })
        .await
        .unwrap_or_else(|_| panic!("namespace {ns} not created\n{}", tail(&e.op.log_text(), 30)));
    (name, ns)
}

async fn delete_tenant(e: &Env, name: &str, ns: &str) {
    let dp = DeleteParams::default();
    let _ = Api::<craftplane::api::MinecraftServer>::namespaced(e.f.client.clone(), ns)
        .delete_collection(&dp, &Default::default())
        .await;
    let _ = Api::<Tenant>::all(e.f.client.clone()).delete(name, &dp).await;
}

/// A running server `mc` in `ns`, for snapshots there.
async fn running_server_in(e: &Env, ns: &str) {
    let s: craftplane::api::MinecraftServer = serde_json::from_value(json!({
        "apiVersion": "craftplane.io/v1alpha1", "kind": "MinecraftServer",
        "metadata": {"name": "mc", "namespace": ns, "labels": {SHARD_LABEL: e.f.shard}},
        "spec": {"sku": e.f.sku, "eula": true, "type": "PAPER", "version": "1.21.4"},
    }))
    .unwrap();
    let api = Api::<craftplane::api::MinecraftServer>::namespaced(e.f.client.clone(), ns);
    // Where the chart's admission policy is installed (tenant.rs installs
    // it, and its binary may run beside this one), a tenant namespace
    // refuses servers until the operator has written the Tenant's policy
    // parameter: retried as a GitOps sync would.
    let created = common::wait_until(Duration::from_secs(30), || async {
        match api.create(&PostParams::default(), &s).await {
            Ok(_) => true,
            Err(kube::Error::Api(e)) if e.code == 409 => true,
            Err(kube::Error::Api(e)) if e.message.contains("no params found") => false,
            Err(e) => panic!("create server: {e}"),
        }
    })
    .await;
    assert!(created.is_ok(), "server mc in {ns} not accepted within 30 s");
    let running = common::wait_until(Duration::from_secs(60), || async {
        api.get("mc").await.ok().and_then(|s| s.status?.phase) == Some(ServerPhase::Running)
    })
    .await;
    assert!(running.is_ok(), "server {ns}/mc not Running\n{}", tail(&e.op.log_text(), 30));
}

fn snapshot_in(ns: &str, shard: &str, name: &str, spec: Value) -> BackupSnapshot {
    let mut full = json!({"server": "mc"});
    for (k, v) in spec.as_object().unwrap() {
        full[k] = v.clone();
    }
    serde_json::from_value(json!({
        "apiVersion": "craftplane.io/v1alpha1", "kind": "BackupSnapshot",
        "metadata": {"name": name, "namespace": ns, "labels": {SHARD_LABEL: shard}},
        "spec": full,
    }))
    .unwrap()
}

async fn wait_snapshot_in(
    e: &Env,
    ns: &str,
    name: &str,
    what: &str,
    pred: impl Fn(&BackupSnapshot) -> bool,
) -> BackupSnapshot {
    let api = Api::<BackupSnapshot>::namespaced(e.f.client.clone(), ns);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut last = None;
    while tokio::time::Instant::now() < deadline {
        if let Some(s) = api.get_opt(name).await.unwrap() {
            if pred(&s) {
                return s;
            }
            last = Some(s);
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    panic!(
        "snapshot {ns}/{name}: {what} not reached: {:?}\n{}",
        last.and_then(|s| s.status),
        tail(&e.op.log_text(), 30)
    );
}

/// A tenant's snapshots use only its own store and the ones its admin
/// lists; every key lies under the tenant's prefix and namespace, and a
/// prefix that would leave it is refused by the schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_snapshots_stay_in_the_tenants_stores_and_prefix() {
    let e = setup_stores("backup-confine", &["main", "other"]).await;
    let (t, ns) = tenant(&e, "t", json!({"backupStore": {"name": "main", "prefix": "tenants/t"}})).await;
    running_server_in(&e, &ns).await;
    let api = Api::<BackupSnapshot>::namespaced(e.f.client.clone(), &ns);
    let pp = PostParams::default();

    // A store the admin did not give the tenant: refused with the reason.
    api.create(&pp, &snapshot_in(&ns, &e.f.shard, "elsewhere", json!({"store": {"name": "other"}}))).await.unwrap();
    let s = wait_snapshot_in(&e, &ns, "elsewhere", "Failed, StoreNotAllowed", |s| {
        phase(s) == Some(BackupPhase::Failed) && reason(s).starts_with("StoreNotAllowed: ")
    })
    .await;
    assert!(reason(&s).contains("\"other\"") && reason(&s).contains(&t), "{}", reason(&s));
    let jobs = Api::<Job>::namespaced(e.f.client.clone(), &ns);
    assert!(jobs.get_opt("elsewhere-backup").await.unwrap().is_none());
    let secrets = Api::<Secret>::namespaced(e.f.client.clone(), &ns);
    assert!(secrets.get_opt("elsewhere-store").await.unwrap().is_none(), "no credentials copied");

    // Prefixes that leave the tenant's part: refused at admission.
    for (i, bad) in ["..", "../other", "a/../../b", "%2e%2e", "/abs", "a//b", "a\\b", ".hidden"].iter().enumerate() {
        let snap = snapshot_in(&ns, &e.f.shard, &format!("bad{i}"), json!({"store": {"name": "main", "prefix": bad}}));
        let err = api.create(&pp, &snap).await.expect_err(&format!("prefix {bad:?} accepted"));
        let kube::Error::Api(err) = err else { panic!("{err}") };
        assert_eq!(err.code, 422, "{bad:?}: {}", err.message);
        assert!(err.message.contains("spec.store.prefix"), "{bad:?}: {}", err.message);
    }

    // Another tenant's prefix as a sub-path: under this tenant's part and namespace.
    api.create(
        &pp,
        &snapshot_in(&ns, &e.f.shard, "sub", json!({"store": {"name": "main", "prefix": "tenants/other"}})),
    )
    .await
    .unwrap();
    let s = wait_snapshot_in(&e, &ns, "sub", "Running", |s| phase(s) == Some(BackupPhase::Running)).await;
    let st = serde_json::to_value(s.status.as_ref().unwrap()).unwrap();
    let location = st["location"].as_str().unwrap();
    assert!(location.starts_with(&format!("s3://worlds/cluster/tenants/t/{ns}/tenants/other/mc/sub-")), "{location}");
    assert_eq!(st["store"], "main", "the store is recorded by name");

    // A store the admin lists: allowed, under the prefix the admin gave.
    Api::<Tenant>::all(e.f.client.clone())
        .patch(
            &t,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"allowedBackupStores": [{"name": "other", "prefix": "t"}]}})),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    api.create(&pp, &snapshot_in(&ns, &e.f.shard, "listed", json!({"store": {"name": "other"}}))).await.unwrap();
    let s = wait_snapshot_in(&e, &ns, "listed", "Running", |s| phase(s) == Some(BackupPhase::Running)).await;
    let location = s.status.unwrap().location.unwrap();
    assert!(location.starts_with(&format!("s3://worlds/other/t/{ns}/mc/listed-")), "{location}");
    delete_tenant(&e, &t, &ns).await;
    e.op.stop();
    e.f.cleanup().await;
    let _ = std::fs::remove_dir_all(&e.dir);
}

/// In a tenant's namespace `retain` pins a snapshot against retention but
/// does not keep its archive once the snapshot is deleted (unless the
/// tenant's admin allows it): creating and deleting retained snapshots
/// cannot fill the store past `maxBackups` (which counts snapshots).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_snapshots_of_a_tenant_take_their_archive_with_them() {
    let e = setup("backup-retain").await;
    let world = e.dir.join("world");
    small_world(&world);
    let (t, ns) = tenant(&e, "r", json!({})).await;
    running_server_in(&e, &ns).await;
    let api = Api::<BackupSnapshot>::namespaced(e.f.client.clone(), &ns);
    let jobs = Api::<Job>::namespaced(e.f.client.clone(), &ns);
    let mut locations = vec![];
    for (i, keep) in [(0, false), (1, false), (2, true)] {
        if keep {
            Api::<Tenant>::all(e.f.client.clone())
                .patch(
                    &t,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(json!({"spec": {"keepRetainedArchives": true}})),
                )
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let name = format!("keep{i}");
        let snap = snapshot_in(&ns, &e.f.shard, &name, json!({"retain": true}));
        api.create(&PostParams::default(), &snap).await.expect("create snapshot");
        let job = {
            let job_name = format!("{name}-backup");
            common::wait_until(Duration::from_secs(30), || async { jobs.get_opt(&job_name).await.unwrap().is_some() })
                .await
                .unwrap_or_else(|_| panic!("no Job {job_name}\n{}", tail(&e.op.log_text(), 30)));
            jobs.get(&job_name).await.unwrap()
        };
        run_job_here(&job, &world);
        let s = wait_snapshot_in(&e, &ns, &name, "Completed", |s| phase(s) == Some(BackupPhase::Completed)).await;
        let location = s.status.unwrap().location.unwrap();
        assert!(stored(&e, &location).join("manifest.json").exists());
        api.delete(&name, &DeleteParams::default()).await.unwrap();
        common::wait_until(Duration::from_secs(30), || async { api.get_opt(&name).await.unwrap().is_none() })
            .await
            .expect("snapshot deleted");
        locations.push((location, keep));
    }
    for (location, keep) in &locations {
        let held = stored(&e, location).join("manifest.json").exists();
        assert_eq!(held, *keep, "{location}: archive kept only where the tenant's admin allows it");
    }
    delete_tenant(&e, &t, &ns).await;
    e.op.stop();
    e.f.cleanup().await;
    let _ = std::fs::remove_dir_all(&e.dir);
}
