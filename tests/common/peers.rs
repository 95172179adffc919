//! Real, independent protocol peers the tests run as child processes.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// `node_modules` with the npm test peers (`cargo xtask test` installs them).
pub fn node_modules() -> PathBuf {
    match std::env::var_os("CRAFTPLANE_NODE_MODULES") {
        Some(p) => PathBuf::from(p),
        None => panic!(
            "CRAFTPLANE_NODE_MODULES is not set: protocol tests need the npm test peers. \
             Run them with `cargo xtask test` (it installs them into ~/.cache/craftplane/npm)."
        ),
    }
}

/// A running minecraft-protocol server (npm), killed on drop.
pub struct SlpPeer {
    child: Child,
    pub port: u16,
}

impl SlpPeer {
    /// Starts the peer reporting `online`/`max` players and `version`.
    pub fn start(online: i32, max: i32, version: &str) -> SlpPeer {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/slp-server.js");
        let mut child = Command::new("node")
            .arg(script)
            .arg(online.to_string())
            .arg(max.to_string())
            .arg(version)
            .env("NODE_PATH", node_modules())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start node (is Node.js installed?)");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read peer output");
        let port = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("peer did not start: {line:?}"));
        SlpPeer { child, port }
    }
}

impl Drop for SlpPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running npm `rcon-server` that records the commands it receives.
pub struct RconPeer {
    child: Child,
    pub port: u16,
    pub password: String,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl RconPeer {
    pub fn start(password: &str) -> RconPeer {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/rcon-server.js");
        let mut child = Command::new("node")
            .arg(script)
            .arg(port.to_string())
            .arg(password)
            .env("NODE_PATH", node_modules())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start node (is Node.js installed?)");
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).expect("read peer output");
        assert!(line.starts_with("listening"), "RCON peer did not start: {line:?}");
        let lines: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in reader.lines().map_while(Result::ok) {
                l.lock().unwrap().push(line);
            }
        });
        RconPeer { child, port, password: password.into(), lines }
    }

    /// Commands received so far, in order.
    pub fn commands(&self) -> Vec<String> {
        self.lines.lock().unwrap().iter().filter_map(|l| l.strip_prefix("command ").map(str::to_string)).collect()
    }
}

impl Drop for RconPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
