//! `cargo xtask e2e`: the chart rendered by helm installed on a fresh local
//! control plane, the operator running as the chart's ServiceAccount (so
//! its least-privilege RBAC is what is tested), examples/ applied, every
//! object checked, metrics scraped.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

use crate::cluster::Cluster;
use crate::tools::{self, Tools};

const NS: &str = "craftplane-system";

pub fn run(sh: &Shell) -> Result<()> {
    let t0 = Instant::now();
    let tools = tools::ensure(sh)?;
    cmd!(sh, "cargo build --quiet --bin craftplane").run()?;
    let cluster = Cluster::ephemeral(&format!("e2e-{}", std::process::id()));
    cluster.up(sh)?;
    let result = steps(sh, &tools, &cluster);
    let stopped = cluster.down();
    result?;
    stopped?;
    println!("e2e: passed in {:.0?}", t0.elapsed());
    Ok(())
}

struct Operator(Child);

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn steps(sh: &Shell, tools: &Tools, cluster: &Cluster) -> Result<()> {
    let kubectl = &tools.kubectl;
    let helm = &tools.helm;
    let kc = cluster.kubeconfig();
    let k = |args: &[&str]| -> Result<String> {
        let out = cmd!(sh, "{kubectl} --kubeconfig {kc} {args...}").quiet().read()?;
        Ok(out)
    };

    println!("e2e: helm lint + template");
    let kube_version = crate::versions::KUBERNETES;
    cmd!(sh, "{helm} lint charts/craftplane --strict").quiet().run()?;
    let rendered = cmd!(
        sh,
        "{helm} template craftplane charts/craftplane --namespace {NS} --kube-version {kube_version} --include-crds --set replicaCount=1 --set metrics.prometheusRule.enabled=false --set backup.defaultStore=main --set backup.stores[0].name=main --set backup.stores[0].url=s3://backups/e2e --set backup.stores[0].credentialsSecret=backup-s3"
    )
    .quiet()
    .read()?;
    let file = cluster.dir.join("chart.yaml");
    std::fs::write(&file, &rendered)?;
    k(&["create", "namespace", NS])?;
    // The chart's pods must pass Pod Security "restricted" (kwok then marks
    // the pod Running; no container runs here, so it never takes the Lease).
    k(&["label", "namespace", NS, "pod-security.kubernetes.io/enforce=restricted"])?;
    println!("e2e: installing the rendered chart");
    let f = file.display().to_string();
    k(&["apply", "--server-side", "--force-conflicts", "-f", &f])?;

    // The operator runs outside the cluster (no image can be built here) as
    // the chart's ServiceAccount.
    let token = k(&["create", "token", "craftplane", "-n", NS, "--duration=2h"])?;
    let server = k(&["config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}"])?;
    let ca = cluster.dir.join("pki").join("ca.crt");
    let sa_kc = cluster.dir.join("sa.kubeconfig");
    std::fs::write(
        &sa_kc,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    certificate-authority: {}\nusers:\n- name: craftplane\n  user:\n    token: {}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: craftplane\ncurrent-context: c\n",
            ca.display(),
            token.trim()
        ),
    )?;
    // Server List Ping goes to an independent peer (npm minecraft-protocol)
    // reporting 3 of 20 players: pods here run no containers.
    let node_modules = tools::ensure_npm_peers(sh)?;
    let mut peer = Command::new("node")
        .arg(crate::project_root().join("tests/peers/slp-server.js"))
        .args(["3", "20", "1.21.4"])
        .env("NODE_PATH", &node_modules)
        .stdout(Stdio::piped())
        .spawn()
        .context("start the Server List Ping peer (node)")?;
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(peer.stdout.take().context("peer stdout")?), &mut line)?;
    let peer_port: u16 =
        line.trim().strip_prefix("listening ").and_then(|p| p.parse().ok()).context("peer did not start")?;
    let _peer = Operator(peer);
    // Modrinth: recorded API responses (tests/data/modrinth) served as
    // plain files by Python's http.server in place of api.modrinth.com.
    let mr_root = cluster.dir.join("modrinth");
    for (project, file) in [("luckperms", "versions-luckperms.json"), ("chunky", "versions-chunky.json")] {
        let dir = mr_root.join("v2/project").join(project);
        std::fs::create_dir_all(&dir)?;
        std::fs::copy(crate::project_root().join("tests/data/modrinth").join(file), dir.join("version"))?;
    }
    let mr_port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mr = Command::new("python3")
        .args(["-m", "http.server", "--bind", "127.0.0.1", &mr_port.to_string(), "--directory"])
        .arg(&mr_root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start python3 -m http.server (the recorded Modrinth API)")?;
    let _mr = Operator(mr);
    // Backups go to a real S3 server (s3s-fs) with credentials in a Secret
    // of the operator's namespace, as a cluster admin would configure them.
    let s3s = tools::ensure_s3s_fs(sh)?;
    let s3_root = cluster.dir.join("s3");
    std::fs::create_dir_all(s3_root.join("backups"))?;
    let s3_port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let s3 = Command::new(&s3s)
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &s3_port.to_string(),
            "--access-key",
            "e2e",
            "--secret-key",
            "e2e-secret",
        ])
        .arg(&s3_root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start s3s-fs")?;
    let _s3 = Operator(s3);
    k(&[
        "create",
        "secret",
        "generic",
        "backup-s3",
        "-n",
        NS,
        "--from-literal=AWS_ACCESS_KEY_ID=e2e",
        "--from-literal=AWS_SECRET_ACCESS_KEY=e2e-secret",
    ])?;
    let stores_file = cluster.dir.join("backup-stores.yaml");
    std::fs::write(
        &stores_file,
        format!(
            "defaultStore: main\nstores:\n- name: main\n  url: s3://backups/e2e\n  config:\n    AWS_ENDPOINT: http://127.0.0.1:{s3_port}\n    AWS_ALLOW_HTTP: \"true\"\n    AWS_REGION: us-east-1\n  credentialsSecret: backup-s3\n"
        ),
    )?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let log_path = cluster.dir.join("logs").join("operator.log");
    let log = std::fs::File::create(&log_path)?;
    let child = Command::new(crate::project_root().join("target/debug/craftplane"))
        .args(["controller", "--leader-elect", "--operator-namespace", NS, "--slp-interval", "2"])
        .arg("--slp-address")
        .arg(format!("127.0.0.1:{peer_port}"))
        .arg("--http-addr")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--modrinth-url")
        .arg(format!("http://127.0.0.1:{mr_port}/v2"))
        .arg("--backup-stores")
        .arg(&stores_file)
        .env("KUBECONFIG", &sa_kc)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("start the operator")?;
    let mut operator = Operator(child);
    let operator_log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    k(&["wait", "--for=condition=Available", "deployment/craftplane", "-n", NS, "--timeout=60s"])
        .context("the chart's Deployment never became Available (Pod Security?)")?;
    println!("e2e: ok   chart Deployment Available under Pod Security restricted");
    println!("e2e: applying examples/");
    k(&["apply", "-R", "-f", "examples/"])?;

    let expect = |what: &str, args: &[&str], want: &str| -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut last = String::new();
        while Instant::now() < deadline {
            last = k(args).unwrap_or_else(|e| format!("<{e}>"));
            if last.trim() == want {
                println!("e2e: ok   {what}: {want}");
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        bail!("{what}: expected {want:?}, got {last:?}\noperator log:\n{}", tail(&operator_log(), 30))
    };
    expect("Sku small servers", &["get", "sku", "small", "-o", "jsonpath={.status.servers}"], "1")?;
    expect(
        "Sku medium Ready",
        &["get", "sku", "medium", "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"],
        "True",
    )?;
    expect(
        "MinecraftServer survival phase",
        &["get", "mcs", "survival", "-n", "default", "-o", "jsonpath={.status.phase}"],
        "Running",
    )?;
    expect(
        "MinecraftServer survival Ready",
        &[
            "get",
            "mcs",
            "survival",
            "-n",
            "default",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ],
        "True",
    )?;
    expect(
        "StatefulSet survival ready replicas",
        &["get", "statefulset", "survival", "-n", "default", "-o", "jsonpath={.status.readyReplicas}"],
        "1",
    )?;
    expect(
        "Tenant acme Ready",
        &["get", "tenant", "acme", "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"],
        "True",
    )?;
    expect(
        "Tenant acme namespaces",
        &["get", "tenant", "acme", "-o", "jsonpath={.status.namespaces}"],
        "[\"tenant-acme\"]",
    )?;
    expect(
        "Namespace tenant-acme",
        &["get", "namespace", "tenant-acme", "-o", "jsonpath={.metadata.labels.craftplane\\.io/tenant}"],
        "acme",
    )?;
    expect(
        "leader Lease held",
        &["get", "lease", "craftplane-leader", "-n", NS, "-o", "jsonpath={.spec.leaseDurationSeconds}"],
        "15",
    )?;
    expect(
        "survival players (Server List Ping)",
        &["get", "mcs", "survival", "-n", "default", "-o", "jsonpath={.status.players.online}/{.status.players.max}"],
        "3/20",
    )?;
    expect(
        "survival version (Server List Ping)",
        &["get", "mcs", "survival", "-n", "default", "-o", "jsonpath={.status.version}"],
        "1.21.4",
    )?;
    for plugin in ["luckperms", "chunky"] {
        expect(
            &format!("PluginInstallation {plugin} Installed (recorded Modrinth API)"),
            &["get", "plugin", plugin, "-n", "default", "-o", "jsonpath={.status.phase}"],
            "Installed",
        )?;
    }
    let manifest =
        k(&["get", "configmap", "survival-config", "-n", "default", "-o", "jsonpath={.data.plugins\\.json}"])?;
    for file in ["LuckPerms-Bukkit-5.5.71.jar", "Chunky-Bukkit-1.4.40.jar"] {
        if !manifest.contains(file) {
            anyhow::bail!("survival's plugin manifest lacks {file}:\n{manifest}\noperator log:\n{}", operator_log());
        }
    }
    println!("e2e: ok   survival manifest lists LuckPerms and Chunky");
    // The example snapshot: its Job is created; pods do not run here, so the
    // Job's own command line runs on this machine against the same store
    // (the kubelet's part) before kwok completes the pod.
    let job_name = "survival-before-1-21-5-backup";
    let deadline = Instant::now() + Duration::from_secs(60);
    let args_json = loop {
        if let Ok(a) =
            k(&["get", "job", job_name, "-n", "default", "-o", "jsonpath={.spec.template.spec.containers[0].args}"])
            && !a.is_empty()
        {
            break a;
        }
        if Instant::now() > deadline {
            bail!("no backup Job {job_name}; operator log:\n{}", tail(&operator_log(), 40));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut args: Vec<String> = serde_json::from_str(&args_json)?;
    let world = cluster.dir.join("world");
    std::fs::create_dir_all(world.join("world/region"))?;
    for i in 0..50u32 {
        std::fs::write(world.join(format!("world/region/r.{i}.0.mca")), vec![(i % 200) as u8; 8192 + i as usize])?;
    }
    let i = args.iter().position(|a| a == "--data-dir").context("--data-dir")?;
    args[i + 1] = world.display().to_string();
    if let Some(i) = args.iter().position(|a| a == "--rcon-address") {
        args.drain(i..i + 4);
    }
    let out = Command::new(crate::project_root().join("target/debug/craftplane"))
        .args(&args)
        .args(["--termination-log", "/nonexistent/x"])
        .envs([
            ("AWS_ACCESS_KEY_ID", "e2e".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "e2e-secret".into()),
            ("AWS_ENDPOINT", format!("http://127.0.0.1:{s3_port}")),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_REGION", "us-east-1".into()),
        ])
        .output()?;
    if !out.status.success() {
        bail!("the backup Job's command failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    // A snapshot naming a store nobody configured fails with the reason.
    let bad = cluster.dir.join("bad-snapshot.yaml");
    std::fs::write(
        &bad,
        "apiVersion: craftplane.io/v1alpha1\nkind: BackupSnapshot\nmetadata: {name: nowhere, namespace: default}\nspec: {server: survival, store: {name: nowhere}}\n",
    )?;
    k(&["apply", "-f", &bad.display().to_string()])?;
    expect(
        "BackupSnapshot nowhere Failed",
        &[
            "get",
            "backup",
            "nowhere",
            "-n",
            "default",
            "-o",
            "jsonpath={.status.phase}/{.status.conditions[?(@.type==\"Ready\")].reason}",
        ],
        "Failed/StoreNotConfigured",
    )?;
    expect(
        "BackupSnapshot survival-before-1-21-5 Completed",
        &["get", "backup", "survival-before-1-21-5", "-n", "default", "-o", "jsonpath={.status.phase}/{.status.files}"],
        "Completed/50",
    )?;

    // Metrics after the run (gauges refresh every 5 s: poll briefly).
    let families = [
        "craftplane_reconciles_total{kind=\"MinecraftServer\",result=\"ok\"}",
        "craftplane_reconciles_total{kind=\"Sku\",result=\"ok\"}",
        "craftplane_reconciles_total{kind=\"Tenant\",result=\"ok\"}",
        "craftplane_reconciles_total{kind=\"PluginInstallation\",result=\"ok\"}",
        "craftplane_reconcile_duration_seconds_count{kind=\"MinecraftServer\"}",
        "craftplane_managed_objects{kind=\"Sku\"}",
        "craftplane_managed_objects{kind=\"MinecraftServer\"}",
        "craftplane_servers{phase=\"Running\"}",
        "craftplane_leader",
        "craftplane_players_online{namespace=\"default\",server=\"survival\"}",
        "craftplane_reconciles_total{kind=\"BackupSnapshot\",result=\"ok\"}",
        "craftplane_backup_bytes_total",
        "craftplane_backup_duration_seconds_count",
        "craftplane_backup_failures_total",
    ];
    let value = |metrics: &str, prefix: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let metrics = loop {
        let m = http_get(port, "/metrics").context("scrape /metrics")?;
        if families.iter().all(|f| value(&m, f) > 0.0) {
            break m;
        }
        if Instant::now() > deadline {
            let missing: Vec<_> = families.iter().filter(|f| value(&m, f) <= 0.0).collect();
            bail!("metrics not positive: {missing:?}\n{m}");
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    for f in families {
        println!("e2e: metric {f} = {}", value(&metrics, f));
    }
    for family in ["craftplane_backup_bytes", "craftplane_backup_failures"] {
        if !metrics.contains(&format!("# TYPE {family}")) {
            bail!("metric family {family} is not exposed");
        }
    }
    let log = operator_log();
    if log.contains("forbidden") || log.contains("Forbidden") {
        bail!("the operator hit RBAC denials with the chart's ServiceAccount:\n{}", tail(&log, 40));
    }
    // Clean shutdown.
    let _ = Command::new("kill").args(["-TERM", &operator.0.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = operator.0.try_wait()? {
            if !status.success() {
                bail!("operator exited with {status}");
            }
            break;
        }
        if Instant::now() > deadline {
            bail!("operator did not stop after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn http_get(port: u16, path: &str) -> Result<String> {
    let buf = crate::http::get(port, path)?;
    if !buf.starts_with("HTTP/1.0 200") && !buf.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {}", buf.lines().next().unwrap_or(""));
    }
    Ok(buf)
}
