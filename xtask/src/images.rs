//! `cargo xtask images`: craftplane's OCI images, built without Docker or a
//! registry, and loaded into a real node's containerd.
//!
//! An image here is an OCI image layout packed in one tar archive (what
//! `skopeo copy oci-archive:…` and `ctr images import` read): one gzip layer
//! written from a list of files, an image config and a manifest. Layers are
//! reproducible: entries sorted, owner root, mtime 0.
//!
//! - The operator image (`localhost/craftplane:<version>`): the release
//!   binary, the glibc it links against, Debian's CA bundle, an
//!   nsswitch.conf and a `nonroot` user (65532) — the layout of a distroless
//!   "cc" image. It is the image the Helm chart runs and that every server
//!   pod's `fetch-plugins` init-container and every backup Job use.
//! - The pause image the real node's containerd starts each pod sandbox
//!   with, compiled from Kubernetes' own `build/pause/linux/pause.c`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use xshell::{Shell, cmd};

use crate::tools::{self, cache_dir};
use crate::versions;

/// The operator image's name: what the chart's default values, the
/// operator's `--helper-image` default and `cargo xtask images` use.
pub fn operator_image() -> String {
    format!("localhost/craftplane:{}", operator_version())
}

/// The sandbox image the real node's containerd is configured with.
pub fn pause_image() -> String {
    format!("localhost/kubernetes/pause:{}", versions::KUBERNETES)
}

fn operator_version() -> &'static str {
    // The workspace's package version (xtask shares it).
    env!("CARGO_PKG_VERSION")
}

/// Where built archives are kept.
pub fn images_dir() -> PathBuf {
    cache_dir().join("images")
}

/// One file of a layer.
enum Entry {
    Dir { mode: u32 },
    File { mode: u32, data: Vec<u8> },
}

/// The files of one layer, by path inside the image (no leading `/`).
#[derive(Default)]
struct Layer(BTreeMap<String, Entry>);

impl Layer {
    fn dir(&mut self, path: &str, mode: u32) {
        let path = path.trim_matches('/');
        // Every parent first, so the tar creates them with a known mode.
        let mut acc = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(part);
            self.0.entry(acc.clone()).or_insert(Entry::Dir { mode: 0o755 });
        }
        self.0.insert(path.to_string(), Entry::Dir { mode });
    }

    fn file(&mut self, path: &str, mode: u32, data: Vec<u8>) {
        let path = path.trim_start_matches('/');
        if let Some((parent, _)) = path.rsplit_once('/')
            && !self.0.contains_key(parent)
        {
            self.dir(parent, 0o755);
        }
        self.0.insert(path.to_string(), Entry::File { mode, data });
    }

    /// A host file copied in (symlinks followed: the image gets the content).
    fn copy(&mut self, host: &Path, path: &str, mode: u32) -> Result<()> {
        let data = std::fs::read(host).with_context(|| format!("reading {}", host.display()))?;
        self.file(path, mode, data);
        Ok(())
    }

    /// A dynamically linked host binary at `path`, with the shared
    /// libraries it loads at the paths the loader finds them.
    fn executable(&mut self, sh: &Shell, host: &Path, path: &str) -> Result<()> {
        self.copy(host, path, 0o755)?;
        for lib in shared_libraries(sh, host)? {
            let p = lib.display().to_string();
            self.copy(&lib, &p, 0o755)?;
        }
        Ok(())
    }

    /// `/etc/passwd` and `/etc/group` with root and the user the image runs as.
    fn users(&mut self, user: &str, id: u32, home: &str) {
        let passwd = format!("root:x:0:0:root:/root:/sbin/nologin\n{user}:x:{id}:{id}:{user}:{home}:/sbin/nologin\n");
        self.file("etc/passwd", 0o644, passwd.into_bytes());
        self.file("etc/group", 0o644, format!("root:x:0:\n{user}:x:{id}:\n").into_bytes());
    }

    /// The layer as an uncompressed tar.
    fn tar(&self) -> Result<Vec<u8>> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, entry) in &self.0 {
            let mut h = tar::Header::new_ustar();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            match entry {
                Entry::Dir { mode } => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(*mode);
                    h.set_size(0);
                    b.append_data(&mut h, format!("{path}/"), std::io::empty())?;
                }
                Entry::File { mode, data } => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(*mode);
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, path, data.as_slice())?;
                }
            }
        }
        Ok(b.into_inner()?)
    }
}

/// What the image runs.
struct Config {
    user: &'static str,
    entrypoint: Vec<&'static str>,
    cmd: Vec<&'static str>,
    env: Vec<&'static str>,
    labels: BTreeMap<&'static str, String>,
}

fn sha256_hex(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

/// Writes `layer` + `config` as an OCI archive at `out`, named `name`.
fn write_oci_archive(out: &Path, name: &str, layer: &Layer, config: &Config) -> Result<()> {
    let tar = layer.tar()?;
    let diff_id = sha256_hex(&tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    gz.write_all(&tar)?;
    let gz = gz.finish()?;
    let layer_digest = sha256_hex(&gz);

    let config_json = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "User": config.user,
            "Entrypoint": config.entrypoint,
            "Cmd": config.cmd,
            "Env": config.env,
            "WorkingDir": "/",
            "Labels": config.labels,
        },
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "cargo xtask images"}],
    }))?;
    let config_digest = sha256_hex(&config_json);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": format!("sha256:{config_digest}"),
            "size": config_json.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": format!("sha256:{layer_digest}"),
            "size": gz.len(),
        }],
    }))?;
    let manifest_digest = sha256_hex(&manifest);
    let tag = name.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{manifest_digest}"),
            "size": manifest.len(),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {
                // containerd names the imported image after this one …
                "io.containerd.image.name": name,
                // … skopeo after this one (`oci-archive:FILE:TAG`).
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    }))?;

    let tmp = out.with_extension("partial");
    let file = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut b = tar::Builder::new(std::io::BufWriter::new(file));
    let mut add = |path: &str, data: &[u8]| -> Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, path, data)?;
        Ok(())
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    add("index.json", &index)?;
    add(&format!("blobs/sha256/{manifest_digest}"), &manifest)?;
    add(&format!("blobs/sha256/{config_digest}"), &config_json)?;
    add(&format!("blobs/sha256/{layer_digest}"), &gz)?;
    b.into_inner()?.flush()?;
    std::fs::rename(&tmp, out)?;
    Ok(())
}

/// Writes the image `name` into its archive under [`images_dir`].
fn pack(name: &str, layer: &Layer, config: &Config) -> Result<PathBuf> {
    let out = archive_path(name);
    std::fs::create_dir_all(images_dir())?;
    write_oci_archive(&out, name, layer, config)?;
    eprintln!("xtask: image {name} → {}", out.display());
    Ok(out)
}

/// Archive path of an image name (`localhost/craftplane:0.1.0` →
/// `…/images/localhost_craftplane_0.1.0.oci.tar`).
pub fn archive_path(name: &str) -> PathBuf {
    images_dir().join(format!("{}.oci.tar", name.replace(['/', ':'], "_")))
}

/// The release build's target directory: cached beside the other
/// components, so CI's clean clones rebuild only what changed;
/// `CRAFTPLANE_RELEASE_TARGET_DIR` puts it elsewhere (several checkouts
/// building at once on one machine).
fn release_target() -> PathBuf {
    match std::env::var_os("CRAFTPLANE_RELEASE_TARGET_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => cache_dir().join("target"),
    }
}

/// The cargo profile an operator binary is built with (see Cargo.toml).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Profile {
    /// What ships: `cargo xtask images`, `dev` and the benchmarks (release
    /// with thin LTO).
    Image,
    /// What the e2e runs: the same optimisation without LTO, incremental,
    /// so a CI run after a source change rebuilds it in a fraction.
    E2e,
}

impl Profile {
    fn name(self) -> &'static str {
        match self {
            Profile::Image => "image",
            Profile::E2e => "e2e",
        }
    }
}

/// The release binary an operator image is packed from.
pub fn release_binary(profile: Profile) -> PathBuf {
    release_target().join(profile.name()).join("craftplane")
}

/// Builds the release binary of `profile` and returns it.
pub fn build_release_binary(sh: &Shell, profile: Profile) -> Result<PathBuf> {
    let target = release_target();
    let name = profile.name();
    eprintln!("xtask: building the release binary, profile {name} (target dir {})", target.display());
    cmd!(sh, "cargo build --profile {name} --locked --bin craftplane --target-dir {target}").run()?;
    Ok(release_binary(profile))
}

/// Starts building the release binary of `profile` in the background at
/// the lowest CPU priority (`nice -n 19`), its output in the cache's
/// `prebuild.log`; the thread ends with the build. A later
/// [`build_release_binary`] finds it done (or waits on cargo's lock) and
/// reports any error itself.
pub fn prebuild_release_binary(profile: Profile) -> std::thread::JoinHandle<()> {
    let target = release_target();
    let log = cache_dir().join("prebuild.log");
    std::thread::spawn(move || {
        let Ok(out) = std::fs::File::create(&log) else { return };
        let Ok(err) = out.try_clone() else { return };
        eprintln!(
            "xtask: building the image's release binary (profile {}) in the background (log {})",
            profile.name(),
            log.display()
        );
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let _ = std::process::Command::new("nice")
            .args([
                "-n",
                "19",
                &cargo,
                "build",
                "--profile",
                profile.name(),
                "--locked",
                "--bin",
                "craftplane",
                "--target-dir",
            ])
            .arg(&target)
            .current_dir(crate::project_root())
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .status();
    })
}

/// Builds the operator image from the release binary of `profile` and
/// returns its archive.
pub fn build_operator(sh: &Shell, profile: Profile) -> Result<PathBuf> {
    let bin = build_release_binary(sh, profile)?;
    let mut layer = Layer::default();
    layer.executable(sh, &bin, "craftplane")?;
    // glibc's name service: hosts from /etc/hosts (the kubelet writes it)
    // and DNS (the pod's resolv.conf).
    for lib in ["libnss_files.so.2", "libnss_dns.so.2", "libresolv.so.2"] {
        let host = Path::new("/lib/x86_64-linux-gnu").join(lib);
        if host.exists() {
            layer.copy(&host, &format!("lib/x86_64-linux-gnu/{lib}"), 0o755)?;
        }
    }
    layer.file("etc/nsswitch.conf", 0o644, b"hosts: files dns\nnetworks: files\n".to_vec());
    layer.users("nonroot", 65532, "/home/nonroot");
    let ca = Path::new("/etc/ssl/certs/ca-certificates.crt");
    if !ca.exists() {
        bail!("{} is missing: install Debian's ca-certificates (apt-get install ca-certificates)", ca.display());
    }
    layer.copy(ca, "etc/ssl/certs/ca-certificates.crt", 0o644)?;
    layer.dir("tmp", 0o1777);
    layer.dir("home/nonroot", 0o700);
    let name = operator_image();
    let mut labels = BTreeMap::new();
    labels.insert("org.opencontainers.image.title", "craftplane".to_string());
    labels.insert("org.opencontainers.image.version", operator_version().to_string());
    pack(
        &name,
        &layer,
        &Config {
            user: "65532:65532",
            entrypoint: vec!["/craftplane"],
            cmd: vec!["controller"],
            env: vec![
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
            ],
            labels,
        },
    )
}

/// The shared libraries `bin` loads, as the dynamic loader resolves them.
fn shared_libraries(sh: &Shell, bin: &Path) -> Result<Vec<PathBuf>> {
    let out = cmd!(sh, "ldd {bin}").quiet().read().context("ldd (Debian libc-bin) is needed to pack the image")?;
    let mut libs = Vec::new();
    for line in out.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x…)"; the vDSO has no path.
        let path = match line.split_once("=>") {
            Some((_, rhs)) => rhs.split_whitespace().next(),
            None => line.split_whitespace().next().filter(|p| p.starts_with('/')),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    if !libs.iter().any(|l| l.to_string_lossy().contains("ld-linux")) {
        bail!("ldd found no dynamic loader for {}:\n{out}", bin.display());
    }
    Ok(libs)
}

/// The stand-in for itzg/minecraft-server (tests/images/test-server): a
/// TEST image, never a user default.
pub fn test_server_image() -> String {
    format!("localhost/craftplane-test-server:{}", operator_version())
}

/// The stand-in's npm dependencies (`npm ci` from its lock file), cached
/// under the images directory by the lock file's hash; the folder holding
/// `node_modules`.
fn test_server_npm(sh: &Shell) -> Result<PathBuf> {
    let src = crate::project_root().join("tests/images/test-server");
    let lock = std::fs::read(src.join("package-lock.json")).context("tests/images/test-server/package-lock.json")?;
    let npm = images_dir().join(format!("test-server-npm-{}", &sha256_hex(&lock)[..16]));
    if !npm.join("node_modules").exists() {
        // Installed beside it and renamed into place when complete: an
        // interrupted or concurrent install never leaves a partial tree
        // that later runs would take as installed.
        let partial = npm.with_extension(format!("partial-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&partial);
        std::fs::create_dir_all(&partial)?;
        std::fs::copy(src.join("package.json"), partial.join("package.json"))?;
        std::fs::write(partial.join("package-lock.json"), &lock)?;
        {
            let _d = sh.push_dir(&partial);
            cmd!(sh, "npm ci --omit=dev --no-audit --no-fund").run().context("npm ci for the test server image")?;
        }
        if std::fs::rename(&partial, &npm).is_err() {
            // Another run finished first (or an old, incomplete one is in
            // the way: replace it).
            if npm.join("node_modules/flying-squid/package.json").exists() && npm.join("package-lock.json").exists() {
                let _ = std::fs::remove_dir_all(&partial);
            } else {
                let _ = std::fs::remove_dir_all(&npm);
                std::fs::rename(&partial, &npm).context("move the test server's npm tree into place")?;
            }
        }
    }
    Ok(npm)
}

/// Runs the stand-in's self-test (tests/images/test-server/selftest.js: the
/// contract checked on a host process, loopback only); its (passed, failed).
pub fn test_server_selftest(sh: &Shell) -> Result<(u64, u64)> {
    let npm = test_server_npm(sh)?;
    let script = crate::project_root().join("tests/images/test-server/selftest.js");
    let out = std::process::Command::new("node")
        .arg(&script)
        .env("NODE_PATH", npm.join("node_modules"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("run node tests/images/test-server/selftest.js")?;
    let text = String::from_utf8_lossy(&out.stdout);
    for line in text.lines() {
        println!("test-server selftest: {line}");
    }
    let summary = text.lines().rev().find_map(|l| {
        let (p, f) = l.split_once(" passed, ")?;
        Some((p.trim().parse::<u64>().ok()?, f.strip_suffix(" failed")?.trim().parse::<u64>().ok()?))
    });
    match summary {
        Some((passed, failed)) if out.status.success() == (failed == 0) => Ok((passed, failed)),
        _ => bail!("the test server self-test ended with {} and no summary line", out.status),
    }
}

/// Minecraft versions the test image carries protocol data for.
const TEST_SERVER_VERSIONS: [&str; 1] = ["1.21.4"];

/// Builds the test server image: Node.js (the host's, with the libraries it
/// links), the stand-in's scripts and its npm dependencies (flying-squid, a
/// Java Edition server), minecraft-data pruned to the versions above.
pub fn build_test_server(sh: &Shell) -> Result<PathBuf> {
    let src = crate::project_root().join("tests/images/test-server");
    let npm = test_server_npm(sh)?;
    let node = Path::new("/usr/bin/node");
    if !node.exists() {
        bail!("the test server image packs the host's Node.js: /usr/bin/node is missing");
    }
    let mut layer = Layer::default();
    layer.executable(sh, node, "usr/bin/node")?;
    let keep = minecraft_data_keep(&npm.join("node_modules/minecraft-data/minecraft-data/data/dataPaths.json"))?;
    let root = "opt/craftplane-test-server";
    add_tree(&mut layer, &npm.join("node_modules"), &format!("{root}/node_modules"), &|rel: &str| {
        // minecraft-data ships every version (~500 MB): keep what the
        // carried versions read, and the common tables.
        match rel.strip_prefix("minecraft-data/minecraft-data/data/") {
            Some(d) => {
                let mut parts = d.splitn(3, '/');
                match (parts.next(), parts.next()) {
                    (Some(edition @ ("pc" | "bedrock")), Some(ver)) => {
                        ver == "common" || keep.contains(&format!("{edition}/{ver}"))
                    }
                    _ => true,
                }
            }
            None => !rel.starts_with(".bin"),
        }
    })?;
    for f in ["server.js", "package.json"] {
        let mode = if f.ends_with(".js") { 0o755 } else { 0o644 };
        layer.copy(&src.join(f), &format!("{root}/{f}"), mode)?;
    }
    for e in std::fs::read_dir(src.join("bin"))? {
        let e = e?;
        let name = e.file_name().to_string_lossy().to_string();
        layer.copy(&e.path(), &format!("{root}/bin/{name}"), 0o755)?;
    }
    for e in std::fs::read_dir(&src)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().to_string();
        if name.ends_with(".js") && name != "server.js" && name != "selftest.js" {
            layer.copy(&e.path(), &format!("{root}/{name}"), 0o644)?;
        }
    }
    layer.users("minecraft", 1000, "/data");
    layer.file("etc/nsswitch.conf", 0o644, b"hosts: files dns\n".to_vec());
    layer.dir("tmp", 0o1777);
    layer.dir("data", 0o777);
    let name = test_server_image();
    let mut labels = BTreeMap::new();
    labels.insert("org.opencontainers.image.title", "craftplane-test-server".to_string());
    labels.insert(
        "org.opencontainers.image.description",
        "TEST stand-in for itzg/minecraft-server (flying-squid); never a user default".to_string(),
    );
    pack(
        &name,
        &layer,
        &Config {
            user: "1000:1000",
            entrypoint: vec!["/opt/craftplane-test-server/server.js"],
            cmd: vec![],
            env: vec!["PATH=/opt/craftplane-test-server/bin:/usr/local/bin:/usr/bin:/bin", "NODE_ENV=production"],
            labels,
        },
    )
}

/// `edition/version` directories minecraft-data reads for the carried versions.
fn minecraft_data_keep(data_paths: &Path) -> Result<std::collections::BTreeSet<String>> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(data_paths)?)?;
    let mut keep = std::collections::BTreeSet::new();
    for ver in TEST_SERVER_VERSIONS {
        let paths = v["pc"][ver].as_object().with_context(|| format!("minecraft-data has no pc {ver}"))?;
        for p in paths.values().filter_map(|p| p.as_str()) {
            keep.insert(p.to_string());
        }
    }
    Ok(keep)
}

/// Adds the regular files under `host` (symlinks skipped) at `at`, those
/// whose path relative to `host` passes `keep` (a directory that fails it
/// is skipped whole).
fn add_tree(layer: &mut Layer, host: &Path, at: &str, keep: &dyn Fn(&str) -> bool) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut stack = vec![(host.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().to_string();
            let r = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
            if !keep(&r) {
                continue;
            }
            let t = e.file_type()?;
            if t.is_dir() {
                layer.dir(&format!("{at}/{r}"), 0o755);
                stack.push((e.path(), r));
            } else if t.is_file() {
                let mode = e.metadata()?.permissions().mode() & 0o755;
                layer.copy(&e.path(), &format!("{at}/{r}"), mode | 0o444)?;
            }
        }
    }
    Ok(())
}

/// Builds the pause image (Kubernetes' pause.c, static) when missing.
pub fn ensure_pause(sh: &Shell) -> Result<PathBuf> {
    let name = pause_image();
    let out = archive_path(&name);
    if out.exists() {
        return Ok(out);
    }
    let module = tools::kubernetes_module_source(sh)?;
    let src = module.join("build/pause/linux/pause.c");
    let work = images_dir().join("pause-build");
    std::fs::create_dir_all(&work)?;
    let bin = work.join("pause");
    let version = format!("-DVERSION={}", versions::KUBERNETES);
    cmd!(sh, "gcc -Os -Wall -Werror -static {version} -o {bin} {src}")
        .run()
        .context("compiling pause.c needs gcc and the static glibc (Debian gcc, libc6-dev)")?;
    let mut layer = Layer::default();
    layer.copy(&bin, "pause", 0o755)?;
    pack(
        &name,
        &layer,
        &Config { user: "65535:65535", entrypoint: vec!["/pause"], cmd: vec![], env: vec![], labels: BTreeMap::new() },
    )
}

/// `cargo xtask images`: build every image; load them into the dev
/// cluster's real node when it runs.
pub fn run(sh: &Shell) -> Result<()> {
    let pause = ensure_pause(sh)?;
    let operator = build_operator(sh, Profile::Image)?;
    let test_server = build_test_server(sh)?;
    let dev = crate::cluster::Cluster::dev();
    if dev.node_running() {
        dev.import_images(&[&pause, &operator, &test_server])?;
        eprintln!("xtask: loaded into the dev cluster's node ({})", dev.containerd_socket().display());
    }
    println!("{}\n{}\n{}", operator.display(), test_server.display(), pause.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_archive(path: &Path) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        let mut a = tar::Archive::new(std::fs::File::open(path).unwrap());
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let p = e.path().unwrap().display().to_string();
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut buf).unwrap();
            out.insert(p, buf);
        }
        out
    }

    #[test]
    fn archive_is_a_valid_oci_layout_with_matching_digests() {
        let dir = std::env::temp_dir().join(format!("xtask-oci-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("t.oci.tar");
        let mut layer = Layer::default();
        layer.file("usr/bin/hello", 0o755, b"#!hello".to_vec());
        layer.dir("tmp", 0o1777);
        let config = Config {
            user: "1:1",
            entrypoint: vec!["/usr/bin/hello"],
            cmd: vec!["x"],
            env: vec![],
            labels: BTreeMap::new(),
        };
        write_oci_archive(&out, "localhost/t:1", &layer, &config).unwrap();
        let files = read_archive(&out);
        // Every blob is stored under its own digest.
        for (path, data) in &files {
            if let Some(d) = path.strip_prefix("blobs/sha256/") {
                assert_eq!(sha256_hex(data), d, "{path}");
            }
        }
        let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
        let m = &index["manifests"][0];
        assert_eq!(m["annotations"]["io.containerd.image.name"], "localhost/t:1");
        assert_eq!(m["annotations"]["org.opencontainers.image.ref.name"], "1");
        let md = m["digest"].as_str().unwrap().strip_prefix("sha256:").unwrap();
        let manifest: serde_json::Value = serde_json::from_slice(&files[&format!("blobs/sha256/{md}")]).unwrap();
        let cd = manifest["config"]["digest"].as_str().unwrap().strip_prefix("sha256:").unwrap();
        let cfg: serde_json::Value = serde_json::from_slice(&files[&format!("blobs/sha256/{cd}")]).unwrap();
        assert_eq!(cfg["config"]["Entrypoint"][0], "/usr/bin/hello");
        // The layer's diff_id is the digest of the uncompressed tar, and it
        // holds the file with its mode and the parent directories.
        let ld = manifest["layers"][0]["digest"].as_str().unwrap().strip_prefix("sha256:").unwrap();
        let mut tar = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(files[&format!("blobs/sha256/{ld}")].as_slice()),
            &mut tar,
        )
        .unwrap();
        assert_eq!(cfg["rootfs"]["diff_ids"][0], format!("sha256:{}", sha256_hex(&tar)));
        let mut names = Vec::new();
        for e in tar::Archive::new(tar.as_slice()).entries().unwrap() {
            let e = e.unwrap();
            names.push((e.path().unwrap().display().to_string(), e.header().mode().unwrap()));
        }
        assert_eq!(
            names,
            vec![
                ("tmp/".to_string(), 0o1777),
                ("usr/".to_string(), 0o755),
                ("usr/bin/".to_string(), 0o755),
                ("usr/bin/hello".to_string(), 0o755)
            ]
        );
        // Reproducible: the same input gives the same archive.
        let again = dir.join("u.oci.tar");
        write_oci_archive(&again, "localhost/t:1", &layer, &config).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&again).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
