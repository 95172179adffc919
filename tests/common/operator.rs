//! Runs the real `craftplane controller` binary against the test control
//! plane, as its own user (`craftplane-operator`), limited to one shard
//! label so tests running side by side do not touch each other's objects.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

/// Label that assigns objects to a test's operator.
pub const SHARD_LABEL: &str = "craftplane.io/test-shard";

pub fn operator_kubeconfig() -> PathBuf {
    match std::env::var_os("CRAFTPLANE_TEST_OPERATOR_KUBECONFIG") {
        Some(p) => PathBuf::from(p),
        None => panic!("CRAFTPLANE_TEST_OPERATOR_KUBECONFIG is not set: run the tests with `cargo xtask test`"),
    }
}

pub fn audit_log() -> PathBuf {
    match std::env::var_os("CRAFTPLANE_TEST_AUDIT_LOG") {
        Some(p) => PathBuf::from(p),
        None => panic!("CRAFTPLANE_TEST_AUDIT_LOG is not set: run the tests with `cargo xtask test`"),
    }
}

/// A running operator process; killed on drop.
pub struct Operator {
    child: Option<Child>,
    pub port: u16,
    pub log: PathBuf,
}

impl Operator {
    /// Starts an operator for `shard` with extra flags and waits until ready.
    pub async fn start(shard: &str, extra: &[&str]) -> Operator {
        Self::start_as(shard, extra, operator_kubeconfig()).await
    }

    /// Like [`Operator::start`], with another kubeconfig (another identity).
    pub async fn start_as(shard: &str, extra: &[&str], kubeconfig: PathBuf) -> Operator {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("operator-logs");
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join(format!("{shard}-{}.log", super::unique_suffix()));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_craftplane"))
            .arg("controller")
            .arg("--http-addr")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--watch-label-selector")
            .arg(format!("{SHARD_LABEL}={shard}"))
            .args(if extra.iter().any(|a| a.starts_with("--slp")) { vec![] } else { vec!["--slp-interval", "0"] })
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env(
                "RUST_LOG",
                std::env::var("CRAFTPLANE_TEST_RUST_LOG").unwrap_or_else(|_| "info,craftplane=debug".into()),
            )
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start craftplane controller");
        let op = Operator { child: Some(child), port, log };
        op.wait_ready().await;
        op
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.get("/readyz").is_some_and(|(code, _)| code == 200) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("operator not ready after 30s; log:\n{}", self.log_text());
    }

    /// GET on the operator's HTTP port: (status, full response).
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).ok()?;
        Some((buf.split_whitespace().nth(1)?.parse().ok()?, buf))
    }

    /// SIGKILL: the process dies without releasing anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The process's exit status, once it has exited on its own.
    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    /// Value of a metric line `name{...}` or `name` (first match).
    pub fn metric(&self, name: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics")?;
        body.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    /// Reconciles of `kind` finished (any result) and running now, from
    /// one scrape of the metrics.
    pub fn reconciles(&self, kind: &str) -> Option<(f64, f64)> {
        let (_, body) = self.get("/metrics")?;
        let label = format!("kind=\"{kind}\"");
        let sum = |name: &str| -> f64 {
            body.lines()
                .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{') && l.contains(&label))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        Some((sum("craftplane_reconciles_total"), sum("craftplane_reconciles_in_flight")))
    }

    /// Evidence, for a "did not happen" check, that the operator has looked
    /// at the state as it is now: waits until no reconcile of `kind` runs,
    /// then `poke`s (a change that triggers a reconcile of the objects in
    /// question, see [`super::poke`]), then waits until at least `n`
    /// reconciles of `kind` that started after the quiet moment have
    /// finished and none runs. Panics after 60 s.
    pub async fn reconciled_after<F, Fut>(&self, kind: &str, n: usize, poke: F)
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let deadline = Instant::now() + Duration::from_secs(60);
        let before = loop {
            match self.reconciles(kind) {
                Some((done, 0.0)) => break done,
                other => assert!(
                    Instant::now() < deadline,
                    "{kind} reconciles never quiet ({other:?}); log:\n{}",
                    super::fixture::tail(&self.log_text(), 30)
                ),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        poke().await;
        loop {
            let now = self.reconciles(kind);
            if let Some((done, running)) = now
                && running == 0.0
                && done >= before + n as f64
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no {n} {kind} reconcile(s) after the poke ({before} before, now {now:?}); log:\n{}",
                super::fixture::tail(&self.log_text(), 30)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let t0 = Instant::now();
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    assert!(status.success(), "operator exited with {status}; log:\n{}", self.log_text());
                    return;
                }
                if t0.elapsed() > Duration::from_secs(20) {
                    let _ = child.kill();
                    panic!("operator did not stop within 20s");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Write requests (create/update/patch/delete) the operator's user made
/// after `since`, that `filter` accepts, from the API server's audit log.
pub fn operator_writes(since: Timestamp, filter: impl Fn(&Value) -> bool) -> Vec<Value> {
    writes_by("craftplane-operator", since, filter)
}

/// Write requests of `user` after `since` that `filter` accepts (audit log).
pub fn writes_by(user: &str, since: Timestamp, filter: impl Fn(&Value) -> bool) -> Vec<Value> {
    writes(since, |e| e["user"]["username"] == user && filter(e))
}

/// Write requests of anyone (the controllers of the API server too) after
/// `since` that `filter` accepts (audit log).
pub fn writes(since: Timestamp, filter: impl Fn(&Value) -> bool) -> Vec<Value> {
    let text = std::fs::read_to_string(audit_log()).expect("read audit log");
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| matches!(e["verb"].as_str(), Some("create" | "update" | "patch" | "delete" | "deletecollection")))
        .filter(|e| {
            e["requestReceivedTimestamp"].as_str().and_then(|t| t.parse::<Timestamp>().ok()).is_some_and(|t| t >= since)
        })
        .filter(|e| filter(e))
        .collect()
}

/// Kubeconfig of the second operator identity (`craftplane-operator-2`).
pub fn operator2_kubeconfig() -> PathBuf {
    match std::env::var_os("CRAFTPLANE_TEST_OPERATOR2_KUBECONFIG") {
        Some(p) => PathBuf::from(p),
        None => panic!("CRAFTPLANE_TEST_OPERATOR2_KUBECONFIG is not set: run the tests with `cargo xtask test`"),
    }
}
