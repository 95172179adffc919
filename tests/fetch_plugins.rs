//! `craftplane fetch-plugins` as a process, against a local HTTP server:
//! files land verified, failures leave the previous plugin set intact.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::files::{FileServer, Reply};
use serde_json::json;
use sha2::{Digest, Sha256, Sha512};

struct Dirs {
    root: PathBuf,
}

impl Dirs {
    fn new(name: &str) -> Dirs {
        let root = std::env::temp_dir().join(format!("craftplane-fetch-{name}-{}", common::unique_suffix()));
        std::fs::create_dir_all(root.join("data")).unwrap();
        std::fs::create_dir_all(root.join("config")).unwrap();
        Dirs { root }
    }
    fn data(&self) -> PathBuf {
        self.root.join("data")
    }
    fn plugins(&self) -> PathBuf {
        self.root.join("data/plugins")
    }
    fn termination_log(&self) -> PathBuf {
        self.root.join("termination-log")
    }
    /// Plugin folder listing, hidden files included.
    fn listing(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.plugins())
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }
    fn run(&self, manifest: serde_json::Value) -> Output {
        let path = self.root.join("plugins.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_craftplane"))
            .args(["fetch-plugins", "--attempts", "2", "--timeout-seconds", "20"])
            .arg("--manifest")
            .arg(&path)
            .arg("--data-dir")
            .arg(self.data())
            .arg("--config-root")
            .arg(self.root.join("config"))
            .arg("--termination-log")
            .arg(self.termination_log())
            .output()
            .unwrap()
    }
}

impl Drop for Dirs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn sha256(b: &[u8]) -> String {
    Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}
fn sha512(b: &[u8]) -> String {
    Sha512::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

/// A fake jar of `n` bytes, distinct per seed.
fn jar(seed: u8, n: usize) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn entry(name: &str, server: &FileServer, file: &str, sha: (&str, String)) -> serde_json::Value {
    let mut e = json!({"name": name, "fileName": file, "url": server.url(&format!("/{file}"))});
    e[sha.0] = json!(sha.1);
    e
}

fn manifest(plugins: Vec<serde_json::Value>) -> serde_json::Value {
    json!({"version": 1, "directory": "plugins", "plugins": plugins})
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_files_land_and_config_files_are_copied() {
    let server = FileServer::start().await;
    let d = Dirs::new("good");
    let (a, b) = (jar(1, 300_000), jar(2, 70_000));
    server.set("/Alpha-1.0.jar", Reply::Body(a.clone()));
    server.set("/Beta-2.0.jar", Reply::Body(b.clone()));
    std::fs::create_dir_all(d.root.join("config/alpha")).unwrap();
    std::fs::write(d.root.join("config/alpha/config.yml"), "greeting: hello\n").unwrap();
    // Kubernetes' ConfigMap volume bookkeeping must not be copied.
    std::fs::create_dir_all(d.root.join("config/alpha/..2026_11_25")).unwrap();
    let mut alpha = entry("alpha", &server, "Alpha-1.0.jar", ("sha256", sha256(&a)));
    alpha["config"] = json!({"configMap": "alpha-config", "target": "plugins/Alpha"});
    let m = manifest(vec![alpha, entry("beta", &server, "Beta-2.0.jar", ("sha512", sha512(&b)))]);

    let out = d.run(m.clone());
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(read(&d.plugins().join("Alpha-1.0.jar")), a);
    assert_eq!(read(&d.plugins().join("Beta-2.0.jar")), b);
    assert_eq!(std::fs::read_to_string(d.plugins().join("Alpha/config.yml")).unwrap(), "greeting: hello\n");
    assert!(!d.plugins().join("Alpha/..2026_11_25").exists());
    assert_eq!(d.listing(), vec!["Alpha", "Alpha-1.0.jar", "Beta-2.0.jar"]);
    assert!(text(&out).contains("2 installed, 0 unchanged, 0 removed, 1 config files"), "{}", text(&out));

    // A second start with the same manifest downloads nothing.
    let out = d.run(m);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("0 installed, 2 unchanged"), "{}", text(&out));
    assert_eq!(server.hits("/Alpha-1.0.jar"), 1);
    assert_eq!(server.hits("/Beta-2.0.jar"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_checksum_fails_and_keeps_the_previous_plugin_set() {
    let server = FileServer::start().await;
    let d = Dirs::new("mismatch");
    let (a1, a2, b) = (jar(1, 50_000), jar(9, 60_000), jar(2, 40_000));
    server.set("/Alpha-1.0.jar", Reply::Body(a1.clone()));
    let out = d.run(manifest(vec![entry("alpha", &server, "Alpha-1.0.jar", ("sha256", sha256(&a1)))]));
    assert!(out.status.success(), "{}", text(&out));

    // Alpha is upgraded (the new file downloads and verifies), but Beta's
    // pinned checksum is wrong: nothing of the new set may be applied.
    server.set("/Alpha-2.0.jar", Reply::Body(a2.clone()));
    server.set("/Beta-2.0.jar", Reply::Body(b.clone()));
    let wrong = sha256(b"something else");
    let out = d.run(manifest(vec![
        entry("alpha", &server, "Alpha-2.0.jar", ("sha256", sha256(&a2))),
        entry("beta", &server, "Beta-2.0.jar", ("sha256", wrong.clone())),
    ]));
    assert!(!out.status.success(), "a checksum mismatch must fail the init-container");
    let msg = text(&out);
    assert!(msg.contains("ChecksumMismatch: plugin beta: Beta-2.0.jar has sha256"), "{msg}");
    assert!(msg.contains(&format!("expected {wrong}")), "{msg}");
    assert!(msg.contains(&sha256(&b)), "the actual checksum is reported: {msg}");
    let log = std::fs::read_to_string(d.termination_log()).unwrap();
    assert!(log.starts_with("ChecksumMismatch: plugin beta:"), "{log}");
    assert_eq!(d.listing(), vec!["Alpha-1.0.jar"], "previous set intact, no temporary files");
    assert_eq!(read(&d.plugins().join("Alpha-1.0.jar")), a1);
    // A mismatch is not retried: the file is what the server serves.
    assert_eq!(server.hits("/Beta-2.0.jar"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_download_leaves_no_partial_file() {
    let server = FileServer::start().await;
    let d = Dirs::new("interrupted");
    let big = jar(3, 2_000_000);
    server.set("/Big-1.0.jar", Reply::Truncated { body: big.clone(), sent: 500_000 });
    let out = d.run(manifest(vec![entry("big", &server, "Big-1.0.jar", ("sha256", sha256(&big)))]));
    assert!(!out.status.success());
    let msg = text(&out);
    assert!(msg.contains("SourceUnreachable: plugin big: cannot download"), "{msg}");
    assert!(msg.contains("after 2 attempts"), "{msg}");
    assert_eq!(server.hits("/Big-1.0.jar"), 2, "network failures are retried up to --attempts");
    assert!(d.listing().is_empty(), "no partial file: {:?}", d.listing());

    // A temporary file left by a killed run is cleaned up by the next one.
    std::fs::write(d.plugins().join(".craftplane-Big-1.0.jar.part"), &big[..1000]).unwrap();
    server.set("/Big-1.0.jar", Reply::Body(big.clone()));
    let out = d.run(manifest(vec![entry("big", &server, "Big-1.0.jar", ("sha256", sha256(&big)))]));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(d.listing(), vec!["Big-1.0.jar"]);
    assert_eq!(read(&d.plugins().join("Big-1.0.jar")), big);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_plugins_go_but_files_it_did_not_install_stay() {
    let server = FileServer::start().await;
    let d = Dirs::new("removal");
    let (a, b, c) = (jar(1, 10_000), jar(2, 10_000), jar(3, 10_000));
    for (f, body) in [("/A.jar", &a), ("/B.jar", &b), ("/C.jar", &c)] {
        server.set(f, Reply::Body(body.clone()));
    }
    let out = d.run(manifest(vec![
        entry("a", &server, "A.jar", ("sha256", sha256(&a))),
        entry("b", &server, "B.jar", ("sha256", sha256(&b))),
        entry("c", &server, "C.jar", ("sha256", sha256(&c))),
    ]));
    assert!(out.status.success(), "{}", text(&out));
    // Someone uploads their own jar, and edits C.jar in place.
    std::fs::write(d.plugins().join("Manual.jar"), b"uploaded by hand").unwrap();
    std::fs::write(d.plugins().join("C.jar"), b"patched by hand").unwrap();

    let out = d.run(manifest(vec![entry("a", &server, "A.jar", ("sha256", sha256(&a)))]));
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("removed plugins/B.jar"), "{}", text(&out));
    assert!(text(&out).contains("keeping plugins/C.jar"), "{}", text(&out));
    assert_eq!(d.listing(), vec!["A.jar", "C.jar", "Manual.jar"]);

    // An empty manifest (every PluginInstallation deleted) removes the rest.
    let out = d.run(manifest(vec![]));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(d.listing(), vec!["C.jar", "Manual.jar"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_fail_fast_and_bad_manifests_are_named() {
    let server = FileServer::start().await;
    let d = Dirs::new("errors");
    server.set("/Gone.jar", Reply::Status(404));
    let out = d.run(manifest(vec![entry("gone", &server, "Gone.jar", ("sha256", sha256(b"x")))]));
    assert!(!out.status.success());
    assert!(text(&out).contains("SourceUnreachable: plugin gone:"), "{}", text(&out));
    assert!(text(&out).contains("404"), "{}", text(&out));
    assert_eq!(server.hits("/Gone.jar"), 1, "a 404 is not retried");

    let out = d.run(manifest(vec![entry("evil", &server, "../../escape.jar", ("sha256", sha256(b"x")))]));
    assert!(!out.status.success());
    assert!(text(&out).contains("InvalidManifest: plugin evil: file name"), "{}", text(&out));
    assert!(!d.root.join("escape.jar").exists());
}
