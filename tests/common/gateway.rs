//! The gateway (`craftplane gateway`) as a host process, and this host's
//! address that EndpointSlices may name.

use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::peers::node_modules;

/// A running gateway process; killed on drop.
pub struct Gateway {
    pub child: Option<Child>,
    pub port: u16,
    pub http: u16,
    log: PathBuf,
}

impl Gateway {
    pub fn start(kubeconfig: PathBuf, extra: &[&str]) -> Gateway {
        let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let (port, http) = (free(), free());
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("gateway-logs");
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join(format!("gateway-{}.log", super::unique_suffix()));
        let child = Command::new(env!("CARGO_BIN_EXE_craftplane"))
            .arg("gateway")
            .arg(format!("--listen=127.0.0.1:{port}"))
            .arg(format!("--http-addr=127.0.0.1:{http}"))
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,craftplane=debug")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start craftplane gateway");
        let g = Gateway { child: Some(child), port, http, log };
        // Up when its HTTP port answers (ready or not).
        let deadline = Instant::now() + Duration::from_secs(20);
        while g.get("/healthz").is_none() {
            assert!(Instant::now() < deadline, "gateway did not start; log:\n{}", g.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
        g
    }

    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.http)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).ok()?;
        Some((buf.split_whitespace().nth(1)?.parse().ok()?, buf))
    }

    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.get("/readyz").map(|r| r.0) != Some(200) {
            assert!(Instant::now() < deadline, "gateway not ready after 30s; log:\n{}", self.log_text());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The value of a metric line starting with `prefix` (labels included).
    pub fn metric(&self, prefix: &str) -> f64 {
        let (_, body) = self.get("/metrics").expect("metrics");
        body.lines().filter(|l| l.starts_with(prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The npm client against the gateway, its handshake naming `host`.
    pub async fn client(&self, mode: &str, host: &str) -> Value {
        self.client_as(mode, host, "Steve", Duration::from_secs(10)).await
    }

    /// Like [`Gateway::client`], as player `username`, giving up after `timeout`.
    pub async fn client_as(&self, mode: &str, host: &str, username: &str, timeout: Duration) -> Value {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/gateway-client.js");
        let out = tokio::process::Command::new("node")
            .arg(script)
            .arg(mode)
            .arg(self.port.to_string())
            .arg(host)
            .arg("1.20.4")
            .arg(username)
            .env("NODE_PATH", node_modules())
            .env("CLIENT_TIMEOUT_MS", timeout.as_millis().to_string())
            .output()
            .await
            .expect("run node");
        let line = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(line.trim())
            .unwrap_or_else(|e| panic!("client output {line:?} ({e}); stderr {}", String::from_utf8_lossy(&out.stderr)))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// This host's address that pods (and EndpointSlices) may name: the source
/// address of the default route (no packet is sent).
pub fn host_address() -> IpAddr {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").expect("udp socket");
    s.connect("192.0.2.123:9").or_else(|_| s.connect("8.8.8.8:53")).expect("a route off this host");
    let ip = s.local_addr().unwrap().ip();
    assert!(!ip.is_loopback(), "no non-loopback address on this host ({ip})");
    ip
}
