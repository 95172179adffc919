//! The `craftplane` binary as a process: flags, bad input, and the
//! controller's health endpoints and shutdown against the real API server.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_craftplane");

fn stderr_lines(out: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr).lines().filter(|l| !l.trim().is_empty()).map(str::to_owned).collect()
}

#[test]
fn version_and_help_work() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("craftplane {}", env!("CARGO_PKG_VERSION")));
    let out = Command::new(BIN).args(["controller", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--http-addr"), "{help}");
}

#[test]
fn unknown_flag_is_a_one_line_error() {
    let out = Command::new(BIN).args(["controller", "--frobnicate"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("--frobnicate"), "{lines:?}");
    let out = Command::new(BIN).arg("launch-rockets").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stderr_lines(&out).len(), 1);
    let out = Command::new(BIN).args(["controller", "--http-addr", "not-an-address"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("not-an-address"));
}

/// Issue 32: the base domain of the default hostnames and the gateway port
/// are checked at start: a bad one is a one-line error naming it.
#[test]
fn base_domain_and_gateway_port_of_default_hostnames_are_checked() {
    let long = format!("{}.{}.example.com", "a".repeat(63), "b".repeat(63));
    for (flag, bad, says) in [
        ("--base-domain", "bad_domain.example", "not a DNS name"),
        ("--base-domain", "a..example", "not a DNS name"),
        ("--base-domain", "-a.example", "not a DNS name"),
        ("--base-domain", long.as_str(), "too long"),
        ("--gateway-port", "0", "0"),
        ("--gateway-port", "65536", "65536"),
    ] {
        let out = Command::new(BIN).args(["controller", &format!("{flag}={bad}")]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{flag} {bad}");
        let lines = stderr_lines(&out);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains(flag) && lines[0].contains(says), "{lines:?}");
    }
}

#[test]
fn crds_subcommand_prints_the_generated_crds() {
    let out = Command::new(BIN).arg("crds").output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), craftplane::api::crds_yaml());
}

fn write_kubeconfig(server: &str) -> tempfile_path::TempPath {
    let path = std::env::temp_dir().join(format!("craftplane-kc-{}", common::unique_suffix()));
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    token: x\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\n"
        ),
    )
    .unwrap();
    tempfile_path::TempPath(path)
}

mod tempfile_path {
    /// Deletes the file on drop.
    pub struct TempPath(pub std::path::PathBuf);
    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

#[test]
fn unreachable_api_server_is_a_one_line_error() {
    // Nothing listens on port 1 of loopback.
    let kc = write_kubeconfig("https://127.0.0.1:1");
    let t0 = Instant::now();
    let out = Command::new(BIN)
        .args(["controller", "--http-addr", "127.0.0.1:0", "--connect-timeout", "5"])
        .env("KUBECONFIG", &kc.0)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("craftplane: error: cannot reach the Kubernetes API server at https://127.0.0.1:1"),
        "{lines:?}"
    );
    assert!(!lines[0].contains("panicked"));
    assert!(t0.elapsed() < Duration::from_secs(15));
}

#[test]
fn malformed_kubeconfig_is_a_one_line_error() {
    let path = std::env::temp_dir().join(format!("craftplane-bad-kc-{}", common::unique_suffix()));
    std::fs::write(&path, "this: [is not: a kubeconfig").unwrap();
    let kc = tempfile_path::TempPath(path);
    let out = Command::new(BIN)
        .args(["controller", "--http-addr", "127.0.0.1:0"])
        .env("KUBECONFIG", &kc.0)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].starts_with("craftplane: error:"), "{lines:?}");
}

/// A minimal HTTP/1.0 GET; returns (status, headers+body).
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, buf))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn controller_serves_health_and_metrics_and_stops_on_sigterm() {
    let client = common::client().await;
    common::ensure_crds(&client).await;
    let port = free_port();
    // Its log goes to a file, not a pipe nobody reads while it runs: this
    // controller watches the whole test cluster, and a full pipe would
    // block its writes (and its exit).
    let log_path = std::env::temp_dir().join(format!("craftplane-cli-controller-{}.log", std::process::id()));
    let log = std::fs::File::create(&log_path).unwrap();
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let mut child = Command::new(BIN)
        .args(["controller", "--http-addr", &format!("127.0.0.1:{port}")])
        .env("KUBECONFIG", common::kubeconfig_path())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut ready = None;
    while Instant::now() < deadline {
        if let Some((200, _)) = http_get(port, "/readyz") {
            ready = Some(Instant::now());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if ready.is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("controller never became ready: {}", read_log());
    }
    let (code, _) = http_get(port, "/healthz").unwrap();
    assert_eq!(code, 200);
    let (code, body) = http_get(port, "/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(body.to_lowercase().contains("content-type: application/openmetrics-text"), "{body}");
    assert!(body.contains("craftplane_build_info{version=\""), "{body}");
    assert!(body.trim_end().ends_with("# EOF"), "{body}");
    let (code, _) = http_get(port, "/nope").unwrap();
    assert_eq!(code, 404);

    // SIGTERM: clean exit, quickly.
    let t0 = Instant::now();
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            panic!("controller did not exit after SIGTERM; its log:\n{}", read_log());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let err = read_log();
    let _ = std::fs::remove_file(&log_path);
    assert!(status.success(), "exit status {status:?}; stderr:\n{err}");
    println!("controller stopped {:?} after SIGTERM", t0.elapsed());
    // Logs are JSON lines.
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v.get("level").is_some() && v.get("timestamp").is_some(), "{l}");
    }
    assert!(err.contains("shutdown signal received"));
}
