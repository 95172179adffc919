//! `craftplane fetch-plugins`: the server pod's init-container.
//!
//! Installs exactly what the manifest lists into `/data/plugins` (or
//! `/data/mods`), all or nothing:
//! 1. every missing or changed file is downloaded to a hidden temporary
//!    file next to its target and verified against its checksum;
//! 2. only when all are verified are they renamed into place, files this
//!    tool installed earlier and no longer listed are removed, and the
//!    record of installed files is rewritten;
//! 3. configuration files are copied into each plugin's data folder.
//!
//! Any failure removes the temporary files, leaves the previous plugin set
//! as it was, writes the reason to the termination log and exits non-zero,
//! so the server does not start with a wrong plugin set.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};
use tokio::io::AsyncWriteExt;

use super::{Manifest, ManifestEntry, valid_file_name};

/// Record of the files fetch-plugins installed, relative to the data dir.
const STATE_FILE: &str = ".craftplane/installed-plugins.json";
/// Prefix of temporary download files (never loaded: hidden, `.part`).
const PART_PREFIX: &str = ".craftplane-";
const PART_SUFFIX: &str = ".part";

/// Flags of `craftplane fetch-plugins`.
#[derive(Clone, Debug, clap::Args)]
pub struct FetchArgs {
    /// The manifest written by the operator.
    #[arg(long, default_value = "/etc/craftplane/manifest/plugins.json")]
    pub manifest: PathBuf,
    /// The server's data directory (the world volume).
    #[arg(long, default_value = "/data")]
    pub data_dir: PathBuf,
    /// Where each plugin's configFiles ConfigMap is mounted, one folder per plugin.
    #[arg(long, default_value = super::CONFIG_ROOT)]
    pub config_root: PathBuf,
    /// Attempts per download (network errors and 5xx are retried).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub attempts: u32,
    /// Seconds one download may take.
    #[arg(long, default_value_t = 300)]
    pub timeout_seconds: u64,
    /// Largest file accepted, in MiB.
    #[arg(long, default_value_t = 1024)]
    pub max_mib: u64,
    /// File the failure reason is written to (Kubernetes shows it in the pod status).
    #[arg(long, default_value = "/dev/termination-log")]
    pub termination_log: PathBuf,
}

/// Why fetch-plugins failed; `reason` is a condition reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchError {
    pub reason: &'static str,
    /// The manifest entry (PluginInstallation name), when one is to blame.
    pub plugin: Option<String>,
    pub message: String,
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.plugin {
            Some(p) => write!(f, "{}: plugin {p}: {}", self.reason, self.message),
            None => write!(f, "{}: {}", self.reason, self.message),
        }
    }
}

impl FetchError {
    fn new(reason: &'static str, plugin: Option<&str>, message: impl Into<String>) -> FetchError {
        FetchError { reason, plugin: plugin.map(str::to_string), message: message.into() }
    }

    /// Parses the first line of a termination message written by [`run`]
    /// ("Reason: plugin name: message").
    pub fn parse(message: &str) -> Option<FetchError> {
        let line = message.lines().next()?;
        let (reason, rest) = line.split_once(": ")?;
        let reason = match reason {
            "ChecksumMismatch" => "ChecksumMismatch",
            "SourceUnreachable" => "SourceUnreachable",
            "InvalidManifest" => "InvalidManifest",
            "WriteFailed" => "WriteFailed",
            _ => return None,
        };
        let (plugin, message) = match rest.strip_prefix("plugin ").and_then(|r| r.split_once(": ")) {
            Some((p, m)) => (Some(p.to_string()), m.to_string()),
            None => (None, rest.to_string()),
        };
        Some(FetchError { reason, plugin, message })
    }
}

/// What a successful run did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub installed: Vec<String>,
    pub unchanged: Vec<String>,
    pub removed: Vec<String>,
    pub config_files: usize,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    files: BTreeMap<String, String>,
}

/// Runs fetch-plugins; on failure also writes the termination log.
pub async fn run(args: &FetchArgs) -> Result<Summary, FetchError> {
    let result = install(args).await;
    if let Err(e) = &result
        && args.termination_log.parent().is_some_and(Path::exists)
    {
        let _ = std::fs::write(&args.termination_log, format!("{e}\n"));
    }
    result
}

async fn install(args: &FetchArgs) -> Result<Summary, FetchError> {
    let text = std::fs::read_to_string(&args.manifest).map_err(|e| {
        FetchError::new("InvalidManifest", None, format!("cannot read {}: {e}", args.manifest.display()))
    })?;
    let manifest: Manifest = serde_json::from_str(&text).map_err(|e| {
        FetchError::new("InvalidManifest", None, format!("{} is not a plugin manifest: {e}", args.manifest.display()))
    })?;
    check(&manifest)?;
    let dir = args.data_dir.join(&manifest.directory);
    let write_err =
        |what: String| move |e: std::io::Error| FetchError::new("WriteFailed", None, format!("{what}: {e}"));
    std::fs::create_dir_all(&dir).map_err(write_err(format!("cannot create {}", dir.display())))?;
    remove_stale_parts(&dir);
    let state_path = args.data_dir.join(STATE_FILE);
    let state: State =
        std::fs::read(&state_path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();

    let http = reqwest::Client::builder()
        .user_agent(concat!("craftplane-fetch-plugins/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(30))
        .timeout(Duration::from_secs(args.timeout_seconds))
        .build()
        .map_err(|e| FetchError::new("SourceUnreachable", None, format!("cannot build an HTTP client: {e}")))?;

    // 1. Download and verify everything that is missing or changed.
    let mut summary = Summary::default();
    let mut staged: Vec<(PathBuf, PathBuf)> = Vec::new();
    for entry in &manifest.plugins {
        let target = dir.join(&entry.file_name);
        if target.is_file() && verify_file(&target, entry).is_ok() {
            summary.unchanged.push(entry.file_name.clone());
            continue;
        }
        let part = dir.join(format!("{PART_PREFIX}{}{PART_SUFFIX}", entry.file_name));
        if let Err(e) = download(&http, entry, &part, args).await {
            let _ = std::fs::remove_file(&part);
            for (p, _) in &staged {
                let _ = std::fs::remove_file(p);
            }
            return Err(e);
        }
        staged.push((part, target));
        summary.installed.push(entry.file_name.clone());
    }

    // 2. Commit: rename into place, remove what is no longer listed.
    for (part, target) in &staged {
        std::fs::rename(part, target).map_err(write_err(format!("cannot move {} into place", target.display())))?;
    }
    let mut files = BTreeMap::new();
    for entry in &manifest.plugins {
        let rel = format!("{}/{}", manifest.directory, entry.file_name);
        let sum = sha256_file(&dir.join(&entry.file_name)).map_err(write_err(format!("cannot read {rel}")))?;
        files.insert(rel, sum);
    }
    for (rel, sum) in &state.files {
        if files.contains_key(rel) {
            continue;
        }
        let path = args.data_dir.join(rel);
        // Only a file this tool installed, unchanged since, is removed.
        match sha256_file(&path) {
            Ok(actual) if &actual == sum => {
                std::fs::remove_file(&path).map_err(write_err(format!("cannot remove {rel}")))?;
                summary.removed.push(rel.clone());
            }
            Ok(_) => eprintln!("fetch-plugins: keeping {rel}: changed since it was installed"),
            Err(_) => {}
        }
    }
    write_atomic(&state_path, &serde_json::to_vec_pretty(&State { files }).unwrap_or_default())
        .map_err(write_err(format!("cannot write {}", state_path.display())))?;

    // 3. Configuration files.
    for entry in &manifest.plugins {
        let Some(cfg) = &entry.config else { continue };
        let src = args.config_root.join(&entry.name);
        let dst = args.data_dir.join(&cfg.target);
        summary.config_files += copy_config(&src, &dst).map_err(|e| {
            FetchError::new("WriteFailed", Some(&entry.name), format!("cannot copy configFiles to {}: {e}", cfg.target))
        })?;
    }
    Ok(summary)
}

fn check(m: &Manifest) -> Result<(), FetchError> {
    if m.version != 1 {
        return Err(FetchError::new("InvalidManifest", None, format!("unsupported manifest version {}", m.version)));
    }
    if !matches!(m.directory.as_str(), "plugins" | "mods") {
        return Err(FetchError::new(
            "InvalidManifest",
            None,
            format!("directory {:?} is not plugins or mods", m.directory),
        ));
    }
    let mut names = BTreeSet::new();
    for e in &m.plugins {
        let bad = |msg: String| Err(FetchError::new("InvalidManifest", Some(&e.name), msg));
        if !valid_file_name(&e.file_name) {
            return bad(format!("file name {:?} is not a plain .jar name", e.file_name));
        }
        if !names.insert(e.file_name.as_str()) {
            return bad(format!("file name {:?} is listed twice", e.file_name));
        }
        if e.sha256.is_none() && e.sha512.is_none() {
            return bad("no checksum".into());
        }
        if let Some(cfg) = &e.config
            && (cfg.target.split('/').any(|p| p.is_empty() || p == "." || p == "..") || cfg.target.starts_with('/'))
        {
            return bad(format!("config target {:?} leaves the data directory", cfg.target));
        }
    }
    Ok(())
}

fn remove_stale_parts(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(PART_PREFIX) && name.ends_with(PART_SUFFIX) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

async fn download(http: &reqwest::Client, e: &ManifestEntry, part: &Path, args: &FetchArgs) -> Result<(), FetchError> {
    let mut last = String::new();
    for attempt in 1..=args.attempts {
        if attempt > 1 {
            tokio::time::sleep(Duration::from_secs(u64::from(attempt - 1).min(5))).await;
        }
        match download_once(http, e, part, args.max_mib * 1024 * 1024).await {
            Ok(()) => return Ok(()),
            Err(Attempt::Fatal(err)) => return Err(err),
            Err(Attempt::Retry(msg)) => {
                eprintln!("fetch-plugins: {}: attempt {attempt}/{} failed: {msg}", e.name, args.attempts);
                last = msg;
            }
        }
    }
    Err(FetchError::new(
        "SourceUnreachable",
        Some(&e.name),
        format!("cannot download {} after {} attempts: {last}", e.url, args.attempts),
    ))
}

enum Attempt {
    Retry(String),
    Fatal(FetchError),
}

async fn download_once(http: &reqwest::Client, e: &ManifestEntry, part: &Path, max: u64) -> Result<(), Attempt> {
    let resp = http.get(&e.url).send().await.map_err(|err| Attempt::Retry(super::error_chain(&err)))?;
    let status = resp.status();
    if status.is_client_error() {
        return Err(Attempt::Fatal(FetchError::new(
            "SourceUnreachable",
            Some(&e.name),
            format!("{} answered {status}", e.url),
        )));
    }
    if !status.is_success() {
        return Err(Attempt::Retry(format!("{} answered {status}", e.url)));
    }
    let fatal_io = |err: std::io::Error| {
        Attempt::Fatal(FetchError::new("WriteFailed", Some(&e.name), format!("cannot write {}: {err}", part.display())))
    };
    let mut file = tokio::fs::File::create(part).await.map_err(fatal_io)?;
    let (mut s256, mut s512, mut size) = (Sha256::new(), Sha512::new(), 0u64);
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk =
            chunk.map_err(|err| Attempt::Retry(format!("download interrupted: {}", super::error_chain(&err))))?;
        size += chunk.len() as u64;
        if size > max {
            return Err(Attempt::Fatal(FetchError::new(
                "SourceUnreachable",
                Some(&e.name),
                format!("{} is larger than {} MiB", e.url, max / 1024 / 1024),
            )));
        }
        s256.update(&chunk);
        s512.update(&chunk);
        file.write_all(&chunk).await.map_err(fatal_io)?;
    }
    file.sync_all().await.map_err(fatal_io)?;
    drop(file);
    let got256 = hex(&s256.finalize());
    let got512 = hex(&s512.finalize());
    compare(e, &got256, &got512).map_err(Attempt::Fatal)
}

fn compare(e: &ManifestEntry, got256: &str, got512: &str) -> Result<(), FetchError> {
    if let Some(want) = &e.sha256
        && !want.eq_ignore_ascii_case(got256)
    {
        return Err(FetchError::new(
            "ChecksumMismatch",
            Some(&e.name),
            format!("{} has sha256 {got256}, expected {want}", e.file_name),
        ));
    }
    if let Some(want) = &e.sha512
        && !want.eq_ignore_ascii_case(got512)
    {
        return Err(FetchError::new(
            "ChecksumMismatch",
            Some(&e.name),
            format!("{} has sha512 {got512}, expected {want}", e.file_name),
        ));
    }
    Ok(())
}

fn verify_file(path: &Path, e: &ManifestEntry) -> Result<(), FetchError> {
    let (mut s256, mut s512) = (Sha256::new(), Sha512::new());
    let mut f =
        std::fs::File::open(path).map_err(|err| FetchError::new("WriteFailed", Some(&e.name), err.to_string()))?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = std::io::Read::read(&mut f, &mut buf)
            .map_err(|err| FetchError::new("WriteFailed", Some(&e.name), err.to_string()))?;
        if n == 0 {
            break;
        }
        s256.update(&buf[..n]);
        s512.update(&buf[..n]);
    }
    compare(e, &hex(&s256.finalize()), &hex(&s512.finalize()))
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut h = Sha256::new();
    let mut f = std::fs::File::open(path)?;
    std::io::copy(&mut f, &mut h)?;
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}

/// Copies the files of a mounted ConfigMap (skipping Kubernetes' `..data`
/// bookkeeping entries) into `dst`, each atomically. Returns how many.
fn copy_config(src: &Path, dst: &Path) -> std::io::Result<usize> {
    let mut n = 0;
    std::fs::create_dir_all(dst)?;
    let mut entries: Vec<_> = std::fs::read_dir(src)?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("..") || !e.path().is_file() {
            continue;
        }
        write_atomic(&dst.join(&name), &std::fs::read(e.path())?)?;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn termination_messages_round_trip() {
        let e = FetchError::new("ChecksumMismatch", Some("luckperms"), "x.jar has sha256 aa, expected bb");
        assert_eq!(FetchError::parse(&format!("{e}\n")), Some(e));
        let e = FetchError::new("InvalidManifest", None, "bad");
        assert_eq!(FetchError::parse(&e.to_string()), Some(e));
        assert_eq!(FetchError::parse("panic: something else"), None);
    }

    #[test]
    fn manifests_that_escape_are_refused() {
        let entry = |file: &str| ManifestEntry {
            name: "p".into(),
            file_name: file.into(),
            url: "http://x/a.jar".into(),
            sha256: Some("0".repeat(64)),
            sha512: None,
            config: None,
        };
        let m = |plugins| Manifest { version: 1, directory: "plugins".into(), plugins };
        assert!(check(&m(vec![entry("a.jar")])).is_ok());
        assert!(check(&m(vec![entry("../a.jar")])).is_err());
        assert!(check(&m(vec![entry("a.jar"), entry("a.jar")])).is_err());
        let mut e = entry("a.jar");
        e.config =
            Some(super::super::ConfigFiles { config_map: "c".into(), target: "plugins/../../etc".into(), hash: None });
        assert!(check(&m(vec![e])).is_err());
        let mut bad_dir = m(vec![]);
        bad_dir.directory = "/etc".into();
        assert!(check(&bad_dir).is_err());
    }
}
