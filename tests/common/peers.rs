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
        Self::start_on(&std::env::var("SLP_HOST").unwrap_or_else(|_| "127.0.0.1".into()), online, max, version)
    }

    /// Like [`SlpPeer::start`], listening on `host`.
    pub fn start_on(host: &str, online: i32, max: i32, version: &str) -> SlpPeer {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/slp-server.js");
        let mut child = Command::new("node")
            .arg(script)
            .arg(online.to_string())
            .arg(max.to_string())
            .arg(version)
            .env("NODE_PATH", node_modules())
            .env("SLP_HOST", host)
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
        RconPeer::start_on(port, password)
    }

    /// Listens on `port` of 127.0.0.1 (once started).
    pub fn start_on(port: u16, password: &str) -> RconPeer {
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

    /// The commands received, once `last` is among them (or after 5 s):
    /// the peer prints a command as it answers it, so a client that got
    /// its answer and exited can be ahead of the printed line.
    pub fn commands_through(&self, last: &str) -> Vec<String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let seen = self.commands();
            if seen.iter().any(|c| c == last) || std::time::Instant::now() > deadline {
                return seen;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for RconPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How a [`fake_rcon`] endpoint answers commands after the login.
#[derive(Clone, Copy, Debug)]
pub enum RconMode {
    /// Each command with `\x1b[32mran <command>\x1b[0m\x07` (escapes a
    /// careless client would copy into a status).
    Answer,
    /// Packets with another request id, forever (a hostile server).
    WrongIds,
}

/// A fake RCON endpoint of the test on `ip`:25575 (see
/// `Fixture::set_pod_ip`): takes any password, then answers as `mode`
/// says. Returns the commands it received.
pub async fn fake_rcon(ip: &str, mode: RconMode) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    async fn read(s: &mut tokio::net::TcpStream) -> Option<(i32, String)> {
        let len = s.read_i32_le().await.ok()?;
        let mut buf = vec![0u8; usize::try_from(len).ok()?.clamp(10, 4106)];
        s.read_exact(&mut buf).await.ok()?;
        let id = i32::from_le_bytes(buf[0..4].try_into().ok()?);
        Some((id, String::from_utf8_lossy(&buf[8..buf.len() - 2]).into_owned()))
    }
    fn packet(id: i32, kind: i32, body: &str) -> Vec<u8> {
        let mut p = (10 + body.len() as i32).to_le_bytes().to_vec();
        p.extend_from_slice(&id.to_le_bytes());
        p.extend_from_slice(&kind.to_le_bytes());
        p.extend_from_slice(body.as_bytes());
        p.extend_from_slice(&[0, 0]);
        p
    }
    let listener = tokio::net::TcpListener::bind((ip, craftplane::resources::RCON_PORT as u16))
        .await
        .unwrap_or_else(|e| panic!("bind {ip}: {e}"));
    let seen: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let s2 = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let seen = s2.clone();
            tokio::spawn(async move {
                let Some((id, _)) = read(&mut sock).await else { return };
                let _ = sock.write_all(&packet(id, 2, "")).await;
                while let Some((id, cmd)) = read(&mut sock).await {
                    seen.lock().unwrap().push(cmd.clone());
                    match mode {
                        RconMode::Answer => {
                            let _ = sock.write_all(&packet(id, 0, &format!("\x1b[32mran {cmd}\x1b[0m\x07"))).await;
                        }
                        RconMode::WrongIds => loop {
                            if sock.write_all(&packet(id + 7, 0, "not yours")).await.is_err() {
                                return;
                            }
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        },
                    }
                }
            });
        }
    });
    seen
}

/// A fake Server List Ping endpoint on 127.0.0.1 answering every ping with
/// `status` (the JSON as is, however big or strange). Returns its port.
pub async fn fake_slp(status: String) -> u16 {
    use craftplane::minecraft::slp::write_varint;
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut body = vec![0x00];
    write_varint(&mut body, status.len() as i32);
    body.extend_from_slice(status.as_bytes());
    let mut answer = Vec::new();
    write_varint(&mut answer, body.len() as i32);
    answer.extend_from_slice(&body);
    let answer = std::sync::Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let answer = answer.clone();
            // The client's handshake and request wait in the socket buffer.
            tokio::spawn(async move {
                let _ = sock.write_all(&answer).await;
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            });
        }
    });
    port
}
