//! The API server restarts while the operator reconciles: the operator
//! recovers on its own (same process) and converges. In its own test binary
//! so no other test runs while the API server is down.

mod common;

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::fixture::{Fixture, tail};
use common::operator::Operator;
use craftplane::api::server::ServerPhase;
use kube::api::ListParams;
use serde_json::json;

/// Stops the control plane's kube-apiserver and starts it again with the
/// same command line (etcd keeps the state). Returns how long it was down.
fn restart_apiserver() -> Duration {
    let dir = common::kubeconfig_path().parent().unwrap().to_path_buf();
    let pid_file = dir.join("run/kube-apiserver.pid");
    let pid: u32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let mut parts: Vec<String> =
        cmdline.split(|b| *b == 0).filter(|p| !p.is_empty()).map(|p| String::from_utf8_lossy(p).into_owned()).collect();
    let bin = PathBuf::from(parts.remove(0));
    let t0 = Instant::now();
    // SIGTERM, and SIGKILL if its graceful shutdown (open watches) takes
    // more than 5 s: either way every connection drops.
    Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    // Gone, or a zombie (its parent, `cargo xtask test`, reaps it later).
    let running = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit(')').next().and_then(|r| r.split_whitespace().next()).map(|st| st != "Z"))
            .unwrap_or(false)
    };
    while running(pid) {
        if t0.elapsed() > Duration::from_secs(5) {
            Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap();
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "kube-apiserver did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(2));
    let log = std::fs::OpenOptions::new().append(true).open(dir.join("logs/kube-apiserver.log")).unwrap();
    let child = Command::new(bin)
        .args(&parts)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .process_group(0)
        .spawn()
        .unwrap();
    // `cargo xtask cluster down` stops it through the pid file.
    std::fs::write(&pid_file, child.id().to_string()).unwrap();
    std::mem::forget(child);
    let kubectl = common::kubectl();
    while !Command::new(&kubectl)
        .args(["--kubeconfig", common::kubeconfig_path().to_str().unwrap(), "get", "--raw", "/readyz"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
    {
        assert!(t0.elapsed() < Duration::from_secs(60), "kube-apiserver did not come back");
        std::thread::sleep(Duration::from_millis(100));
    }
    t0.elapsed()
}

// Found the bug it guards: a watcher error handed to a controller's trigger
// queue (kube-runtime's applier) could stall that controller for good; the
// operator now filters watcher errors out of every trigger stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_rides_out_an_api_server_restart() {
    let f = Fixture::new("apirestart").await;
    let mut op = Operator::start(&f.shard, &[]).await;
    for i in 0..20usize {
        f.create_server(&format!("a{i:02}"), json!({})).await;
    }
    // Mid-reconcile: some servers are still being set up.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let down = tokio::task::spawn_blocking(restart_apiserver).await.unwrap();
    println!("kube-apiserver was down for {:.1}s", down.as_secs_f64());
    // The same process carries on: new work after the restart is picked up too.
    let client = common::client().await;
    let f = Fixture { client, ..f };
    for i in 0..10 {
        f.create_server(&format!("b{i:02}"), json!({})).await;
    }
    f.patch_spec("a00", json!({"state": "Stopped"})).await;
    let t0 = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        assert!(op.try_exit().is_none(), "the operator exited\n{}", tail(&op.log_text(), 40));
        let list = f.servers().list(&ListParams::default()).await.unwrap().items;
        let want = |name: &str| if name == "a00" { ServerPhase::Stopped } else { ServerPhase::Running };
        let done = list
            .iter()
            .filter(|s| s.status.as_ref().and_then(|st| st.phase) == Some(want(&s.metadata.name.clone().unwrap())))
            .count();
        if list.len() == 30 && done == 30 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{done}/30 converged after the restart\n{}",
            tail(&op.log_text(), 40)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "30 servers converged {:.1}s after the API server was back, without an operator restart",
        t0.elapsed().as_secs_f64()
    );
    op.stop();
    f.cleanup().await;
}
