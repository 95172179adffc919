//! A real S3-compatible server (crates.io `s3s-fs`, built by `cargo xtask
//! tools`) on loopback, one per test.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "craftplane-test";
pub const SECRET_KEY: &str = "craftplane-test-secret";

pub struct S3Server {
    child: Option<Child>,
    pub port: u16,
    /// Directory holding the buckets (one folder each, objects as files).
    pub root: PathBuf,
}

fn binary() -> PathBuf {
    match std::env::var_os("CRAFTPLANE_S3S_FS") {
        Some(p) => PathBuf::from(p),
        None => panic!(
            "CRAFTPLANE_S3S_FS is not set: backup tests need the S3 test server. \
             Run them with `cargo xtask test` (it builds s3s-fs into ~/.cache/craftplane)."
        ),
    }
}

impl S3Server {
    /// Starts a server with one bucket, `bucket`.
    pub fn start(root: PathBuf, bucket: &str) -> S3Server {
        std::fs::create_dir_all(root.join(bucket)).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut s = S3Server { child: None, port, root };
        s.restart();
        s
    }

    /// (Re)starts the process on the same port and directory.
    pub fn restart(&mut self) {
        let child = Command::new(binary())
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(&self.root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start s3s-fs");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "s3s-fs did not listen on {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the process (SIGKILL), like a crashed store.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Environment for `craftplane backup`/`restore` to reach it.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), SECRET_KEY.into()),
            ("AWS_REGION".into(), "us-east-1".into()),
            ("AWS_ENDPOINT".into(), format!("http://127.0.0.1:{}", self.port)),
            ("AWS_ALLOW_HTTP".into(), "true".into()),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}
