//! Builds the control-plane components once from the Go module proxy and
//! caches them under `~/.cache/craftplane/bin`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

use crate::versions;

/// Root of everything craftplane caches (`$CRAFTPLANE_CACHE`, default
/// `~/.cache/craftplane`).
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CRAFTPLANE_CACHE") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| "/tmp".into());
    home.join(".cache").join("craftplane")
}

/// Paths of the built components.
#[derive(Clone, Debug)]
pub struct Tools {
    pub etcd: PathBuf,
    pub kube_apiserver: PathBuf,
    pub kube_controller_manager: PathBuf,
    pub kube_scheduler: PathBuf,
    pub kubectl: PathBuf,
    pub kwok: PathBuf,
    pub kwok_stages: PathBuf,
    pub helm: PathBuf,
    /// The real node's kubelet and kube-proxy (same Kubernetes release).
    pub kubelet: PathBuf,
    pub kube_proxy: PathBuf,
    /// Cluster DNS for the real node's pods.
    pub coredns: PathBuf,
    /// The real node's NetworkPolicy engine (kube-router's policy controller).
    pub kube_router: PathBuf,
}

impl Tools {
    pub fn locate() -> Tools {
        let b = cache_dir().join("bin");
        let k = versions::KUBERNETES;
        Tools {
            etcd: b.join(format!("etcd-{}", versions::ETCD)),
            kube_apiserver: b.join(format!("kube-apiserver-{k}")),
            kube_controller_manager: b.join(format!("kube-controller-manager-{k}")),
            kube_scheduler: b.join(format!("kube-scheduler-{k}")),
            kubectl: b.join(format!("kubectl-{k}")),
            kwok: b.join(format!("kwok-{}", versions::KWOK)),
            kwok_stages: b.join(format!("kwok-stages-{}-r2.yaml", versions::KWOK)),
            helm: b.join(format!("helm-{}", versions::HELM)),
            kubelet: b.join(format!("kubelet-{k}")),
            kube_proxy: b.join(format!("kube-proxy-{k}")),
            coredns: b.join(format!("coredns-{}", versions::COREDNS)),
            kube_router: b.join(format!("kube-router-{}", versions::KUBE_ROUTER)),
        }
    }

    fn all(&self) -> [&Path; 12] {
        [
            &self.kubelet,
            &self.kube_proxy,
            &self.coredns,
            &self.helm,
            &self.etcd,
            &self.kube_apiserver,
            &self.kube_controller_manager,
            &self.kube_scheduler,
            &self.kubectl,
            &self.kwok,
            &self.kwok_stages,
            &self.kube_router,
        ]
    }

    pub fn missing(&self) -> Vec<&Path> {
        self.all().into_iter().filter(|p| !p.exists()).collect()
    }
}

/// Returns the tools, building whatever is missing (needs Go).
pub fn ensure(sh: &Shell) -> Result<Tools> {
    let tools = Tools::locate();
    if tools.missing().is_empty() {
        return Ok(tools);
    }
    check_go(sh)?;
    let bin = cache_dir().join("bin");
    sh.create_dir(&bin)?;
    let k8s_cmds = [
        ("kube-apiserver", &tools.kube_apiserver),
        ("kube-controller-manager", &tools.kube_controller_manager),
        ("kube-scheduler", &tools.kube_scheduler),
        ("kubectl", &tools.kubectl),
        ("kubelet", &tools.kubelet),
        ("kube-proxy", &tools.kube_proxy),
    ];
    if k8s_cmds.iter().any(|(_, p)| !p.exists()) {
        let dir = prepare_kubernetes_module(sh)?;
        // Without the version stamp the kubelet reports v0.0.0-master.
        let stamp = format!("-X k8s.io/component-base/version.gitVersion={}", versions::KUBERNETES);
        // One `go build` for all missing commands: their packages compile
        // once and the links run side by side instead of one after another.
        let missing: Vec<(String, &PathBuf)> = k8s_cmds
            .iter()
            .filter(|(_, out)| !out.exists())
            .map(|(name, out)| (format!("k8s.io/kubernetes/cmd/{name}"), *out))
            .collect();
        go_build_many(sh, &dir, &missing, &stamp)?;
    }
    if !tools.etcd.exists() {
        let dir = prepare_simple_module(
            sh,
            "etcd",
            "go.etcd.io/etcd/server/v3",
            versions::ETCD,
            "go.etcd.io/etcd/server/v3",
        )?;
        go_build(sh, &dir, "go.etcd.io/etcd/server/v3", &tools.etcd, "")?;
    }
    if !tools.kwok.exists() || !tools.kwok_stages.exists() {
        let dir = prepare_simple_module(sh, "kwok", "sigs.k8s.io/kwok", versions::KWOK, "sigs.k8s.io/kwok/cmd/kwok")?;
        if !tools.kwok.exists() {
            go_build(sh, &dir, "sigs.k8s.io/kwok/cmd/kwok", &tools.kwok, "")?;
        }
        write_kwok_stages(sh, &dir, &tools.kwok_stages)?;
    }
    if !tools.helm.exists() {
        let dir = prepare_simple_module(sh, "helm", "helm.sh/helm/v3", versions::HELM, "helm.sh/helm/v3/cmd/helm")?;
        go_build(sh, &dir, "helm.sh/helm/v3/cmd/helm", &tools.helm, "")?;
    }
    if !tools.coredns.exists() {
        let dir = prepare_simple_module(
            sh,
            "coredns",
            "github.com/coredns/coredns",
            versions::COREDNS,
            "github.com/coredns/coredns",
        )?;
        go_build(sh, &dir, "github.com/coredns/coredns", &tools.coredns, "")?;
    }
    // Last: only real-node clusters run it. Its own module (it pins
    // client-go v0.29), built static as upstream's Makefile does.
    if !tools.kube_router.exists() {
        let module = "github.com/cloudnativelabs/kube-router/v2";
        let pkg = format!("{module}/cmd/kube-router");
        let dir = prepare_simple_module(sh, "kube-router", module, versions::KUBE_ROUTER, &pkg)?;
        let _cgo = sh.push_env("CGO_ENABLED", "0");
        let stamp = format!("-X {module}/pkg/version.Version={}", versions::KUBE_ROUTER);
        go_build(sh, &dir, &pkg, &tools.kube_router, &stamp)?;
    }
    let missing = tools.missing();
    if !missing.is_empty() {
        bail!("build finished but these are still missing: {missing:?}");
    }
    Ok(tools)
}

fn check_go(sh: &Shell) -> Result<()> {
    let out = cmd!(sh, "go version").quiet().ignore_stderr().read().map_err(|_| {
        anyhow::anyhow!(
            "the local control plane is built from source and needs Go >= {}.{} on PATH, but `go` was not found.\n\
             Install Go (https://go.dev/dl/ or your package manager) and run the command again.",
            versions::GO_MIN.0,
            versions::GO_MIN.1
        )
    })?;
    // "go version go1.26.8 linux/amd64"
    let ver = out.split_whitespace().nth(2).unwrap_or("").trim_start_matches("go");
    let mut it = ver.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (maj, min) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    if (maj, min) < versions::GO_MIN {
        bail!(
            "Go {}.{} or newer is needed to build Kubernetes {}, found `{out}`",
            versions::GO_MIN.0,
            versions::GO_MIN.1,
            versions::KUBERNETES
        );
    }
    Ok(())
}

fn go_build(sh: &Shell, dir: &Path, pkg: &str, out: &Path, extra_ldflags: &str) -> Result<()> {
    eprintln!("xtask: building {pkg} (cached afterwards in {})", out.display());
    let _d = sh.push_dir(dir);
    let tmp = out.with_extension("partial");
    let ldflags = format!("-ldflags=-s -w {extra_ldflags}");
    cmd!(sh, "go build -trimpath {ldflags} -o {tmp} {pkg}").run().with_context(|| format!("go build {pkg}"))?;
    std::fs::rename(&tmp, out)?;
    Ok(())
}

/// Builds several main packages of one module in a single `go build` (shared
/// compile work, concurrent links), then moves each binary to its cache path.
fn go_build_many(sh: &Shell, dir: &Path, targets: &[(String, &PathBuf)], extra_ldflags: &str) -> Result<()> {
    let Some((_, first)) = targets.first() else { return Ok(()) };
    let pkgs: Vec<&str> = targets.iter().map(|(p, _)| p.as_str()).collect();
    eprintln!(
        "xtask: building {} (cached afterwards in {})",
        pkgs.join(" "),
        first.parent().unwrap_or(first).display()
    );
    let _d = sh.push_dir(dir);
    let tmp = first.with_extension("partial.d");
    let _ = std::fs::remove_dir_all(&tmp);
    sh.create_dir(&tmp)?;
    let ldflags = format!("-ldflags=-s -w {extra_ldflags}");
    let out_dir = format!("{}/", tmp.display());
    let args = pkgs.clone();
    cmd!(sh, "go build -trimpath {ldflags} -o {out_dir} {args...}")
        .run()
        .with_context(|| format!("go build {pkgs:?}"))?;
    for (pkg, out) in targets {
        let name = pkg.rsplit('/').next().unwrap_or(pkg);
        std::fs::rename(tmp.join(name), out).with_context(|| format!("{name} not built by go build"))?;
    }
    std::fs::remove_dir_all(&tmp)?;
    Ok(())
}

/// The k8s.io/kubernetes module's source in the Go module cache (for files
/// that are not Go packages, such as `build/pause/linux/pause.c`).
pub fn kubernetes_module_source(sh: &Shell) -> Result<PathBuf> {
    let dir = prepare_kubernetes_module(sh)?;
    let _d = sh.push_dir(&dir);
    let format = "{{.Dir}}";
    let src = cmd!(sh, "go list -m -f {format} k8s.io/kubernetes").quiet().read()?;
    Ok(PathBuf::from(src.trim()))
}

/// Commands built from the k8s.io/kubernetes module.
const KUBERNETES_COMMANDS: [&str; 6] =
    ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kubelet", "kube-proxy"];

/// A wrapper module that requires k8s.io/kubernetes and pins each staging
/// module it requires (`v0.0.0` + `replace => ./staging/...` upstream) to the
/// published `v0.x` release.
fn prepare_kubernetes_module(sh: &Shell) -> Result<PathBuf> {
    let k8s = versions::KUBERNETES;
    let dir = cache_dir().join("go").join(format!("kubernetes-{k8s}"));
    let imports: String = KUBERNETES_COMMANDS.iter().map(|c| format!("\t_ \"k8s.io/kubernetes/cmd/{c}\"\n")).collect();
    let tools_go = format!("//go:build tools\n\npackage tools\n\nimport (\n{imports})\n");
    if dir.join("go.sum").exists() && std::fs::read_to_string(dir.join("tools.go")).ok().as_deref() == Some(&tools_go) {
        return Ok(dir);
    }
    sh.create_dir(&dir)?;
    let _d = sh.push_dir(&dir);
    let json = cmd!(sh, "go mod download -json k8s.io/kubernetes@{k8s}").read()?;
    let v: serde_json::Value = serde_json::from_str(&json)?;
    let gomod = v["GoMod"].as_str().context("no GoMod in go mod download output")?;
    let upstream = std::fs::read_to_string(gomod)?;
    let mut replaces = String::new();
    for line in upstream.lines() {
        let line = line.trim();
        if let Some((module, target)) = line.split_once(" => ")
            && target.starts_with("./staging/")
            && upstream.contains(&format!("\t{module} v0.0.0"))
        {
            replaces.push_str(&format!("\t{module} => {module} {}\n", versions::KUBERNETES_STAGING));
        }
    }
    sh.write_file(
        "go.mod",
        format!("module craftplane.local/kubernetes\n\ngo 1.26.0\n\nrequire k8s.io/kubernetes {k8s}\n\nreplace (\n{replaces})\n"),
    )?;
    sh.write_file("tools.go", tools_go)?;
    cmd!(sh, "go mod tidy").run()?;
    Ok(dir)
}

fn prepare_simple_module(sh: &Shell, name: &str, module: &str, version: &str, pkg: &str) -> Result<PathBuf> {
    let dir = cache_dir().join("go").join(format!("{name}-{version}"));
    if dir.join("go.sum").exists() {
        return Ok(dir);
    }
    sh.create_dir(&dir)?;
    let _d = sh.push_dir(&dir);
    sh.write_file("go.mod", format!("module craftplane.local/{name}\n\ngo 1.26.0\n\nrequire {module} {version}\n"))?;
    sh.write_file("tools.go", format!("//go:build tools\n\npackage tools\n\nimport _ \"{pkg}\"\n"))?;
    cmd!(sh, "go mod tidy").run()?;
    Ok(dir)
}

/// kwok only acts through Stage objects. Use kwok's own "fast" stages for
/// nodes (with lease heartbeats) and pods (Ready; Job pods Succeeded; deletes).
fn write_kwok_stages(sh: &Shell, module_dir: &Path, out: &Path) -> Result<()> {
    let _d = sh.push_dir(module_dir);
    let format = "{{.Dir}}";
    let src = cmd!(sh, "go list -m -f {format} sigs.k8s.io/kwok").read()?;
    let root = PathBuf::from(src.trim()).join("kustomize").join("stage");
    let mut all = String::new();
    for sub in ["node/fast", "node/heartbeat-with-lease", "pod/fast"] {
        let mut files: Vec<_> = std::fs::read_dir(root.join(sub))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml") && !p.ends_with("kustomization.yaml"))
            .collect();
        files.sort();
        for f in files {
            all.push_str("---\n");
            all.push_str(&std::fs::read_to_string(&f)?);
            all.push('\n');
        }
    }
    if !all.contains("kind: Stage") {
        bail!("no kwok stages found under {}", root.display());
    }
    // Job pods finish after 5 s instead of at once, like a short real Job:
    // tests can act while a backup Job runs.
    let marker = "  name: pod-complete\n";
    let at = all.find(marker).context("kwok has no pod-complete stage")?;
    let next = at + all[at..].find("\n  next:\n").context("pod-complete stage has no next")?;
    all.insert_str(next + 1, "  delay:\n    durationMilliseconds: 5000\n");
    std::fs::write(out, all)?;
    Ok(())
}

/// Installs the npm test peers into `~/.cache/craftplane/npm` (once) and
/// returns the `node_modules` directory.
pub fn ensure_npm_peers(sh: &Shell) -> Result<PathBuf> {
    let dir = cache_dir().join("npm");
    let modules = dir.join("node_modules");
    let peers = [("minecraft-protocol", versions::NPM_MINECRAFT_PROTOCOL), ("rcon-server", versions::NPM_RCON_SERVER)];
    let installed = |pkg: &str| {
        std::fs::read_to_string(modules.join(pkg).join("package.json"))
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .and_then(|v| v["version"].as_str().map(str::to_owned))
    };
    if peers.iter().all(|(pkg, want)| installed(pkg).as_deref() == Some(*want)) {
        return Ok(modules);
    }
    for tool in ["node", "npm"] {
        if cmd!(sh, "{tool} --version").quiet().ignore_stdout().ignore_stderr().run().is_err() {
            bail!(
                "the protocol tests need `{tool}` (Node.js with npm) on PATH to run their test peers; install Node.js"
            );
        }
    }
    sh.create_dir(&dir)?;
    let _d = sh.push_dir(&dir);
    if !dir.join("package.json").exists() {
        sh.write_file("package.json", "{\"name\": \"craftplane-test-peers\", \"private\": true}\n")?;
    }
    let specs: Vec<String> = peers.iter().map(|(pkg, want)| format!("{pkg}@{want}")).collect();
    eprintln!("xtask: installing npm {} (test peers) into {}", specs.join(" "), dir.display());
    cmd!(sh, "npm install --no-audit --no-fund --save-exact {specs...}").run()?;
    Ok(modules)
}

/// Builds the S3-compatible test server (crates.io `s3s-fs`) into
/// `~/.cache/craftplane/s3s-fs-<version>` (once) and returns its binary.
pub fn ensure_s3s_fs(sh: &Shell) -> Result<PathBuf> {
    let want = versions::S3S_FS;
    let root = cache_dir().join(format!("s3s-fs-{want}"));
    let bin = root.join("bin").join("s3s-fs");
    if bin.exists() {
        return Ok(bin);
    }
    eprintln!("xtask: building s3s-fs {want} (S3 test server) into {}", root.display());
    let spec = format!("s3s-fs@{want}");
    cmd!(sh, "cargo install --locked --features binary --root {root} {spec}")
        .run()
        .map_err(|e| anyhow::anyhow!("cannot build s3s-fs {want} from crates.io: {e}"))?;
    Ok(bin)
}

/// kstatus-check (tests/tools/kstatus-check): the status
/// sigs.k8s.io/cli-utils' kstatus computes for objects — what Flux's health
/// checks use.
pub fn ensure_kstatus_check(sh: &Shell) -> Result<PathBuf> {
    ensure_test_tool(sh, "kstatus-check", ".", None)
}

/// argocd-health (tests/tools/argocd-health): Argo CD's settings manager,
/// Lua VM and health code on objects. Argo CD v3.6 needs Go 1.27: the go
/// command fetches that toolchain from the module proxy for this build only.
pub fn ensure_argocd_health(sh: &Shell) -> Result<PathBuf> {
    ensure_test_tool(sh, "argocd-health", ".", Some(versions::ARGOCD_GO_TOOLCHAIN))
}

/// promtool, built from the github.com/prometheus/prometheus module that
/// tests/tools/promtool pins.
pub fn ensure_promtool(sh: &Shell) -> Result<PathBuf> {
    ensure_test_tool(sh, "promtool", "github.com/prometheus/prometheus/cmd/promtool", None)
}

/// promql-names (tests/tools/promtool/promql-names): the metric names a
/// PromQL expression selects, read by Prometheus' own parser.
pub fn ensure_promql_names(sh: &Shell) -> Result<PathBuf> {
    ensure_test_tool(sh, "promtool", "./promql-names", None)
}

/// Builds `pkg` of the Go module in tests/tools/MODULE once per content of
/// its go.mod, go.sum and Go files (the package's own too); cached in
/// ~/.cache/craftplane/bin, named after the package.
fn ensure_test_tool(sh: &Shell, module: &str, pkg: &str, toolchain: Option<&str>) -> Result<PathBuf> {
    use sha2::{Digest, Sha256};
    let dir = crate::project_root().join("tests/tools").join(module);
    let name = if pkg == "." { module } else { pkg.rsplit('/').next().unwrap_or(module) };
    let mut files: Vec<PathBuf> = Vec::new();
    let mut dirs = vec![dir.clone()];
    if let Some(sub) = pkg.strip_prefix("./") {
        dirs.push(dir.join(sub));
    }
    for d in &dirs {
        for e in std::fs::read_dir(d).with_context(|| format!("read {}", d.display()))? {
            let p = e?.path();
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if n == "go.mod" || n == "go.sum" || n.ends_with(".go") {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut h = Sha256::new();
    for f in &files {
        h.update(std::fs::read(f).with_context(|| format!("read {}", f.display()))?);
    }
    let hash: String = h.finalize().iter().take(6).map(|b| format!("{b:02x}")).collect();
    let bin = cache_dir().join("bin").join(format!("{name}-{hash}"));
    if bin.exists() {
        return Ok(bin);
    }
    check_go(sh)?;
    sh.create_dir(cache_dir().join("bin"))?;
    let _toolchain = toolchain.map(|t| sh.push_env("GOTOOLCHAIN", t));
    go_build(sh, &dir, pkg, &bin, "")?;
    Ok(bin)
}
