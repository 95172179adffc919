//! `cargo xtask e2e`: the Helm chart installed with `helm install` on a
//! fresh local control plane, with the operator image built by
//! `cargo xtask images` loaded into the real node: the operator runs as two
//! real pods (in-cluster config, the chart's ServiceAccount and RBAC, leader
//! election, probes), examples/ are applied and checked, metrics are
//! scraped from the leader pod through the API server, the leader's
//! container is killed and the other replica takes over. A MinecraftServer
//! on the stand-in server image (tests/images/test-server) runs on the real
//! node through plugins, backup, restore, stop and deletion
//! (xtask/src/e2e_real.rs).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

use crate::cluster::Cluster;
use crate::tools::{self, Tools};

pub(crate) const NS: &str = "craftplane-system";

/// Which scenarios `cargo xtask e2e` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Only {
    /// The chart install and the NetworkPolicy matrix (xtask/src/e2e_netpol.rs).
    Netpol,
    /// The chart install and the player gateway (xtask/src/e2e_gateway.rs).
    Gateway,
}

/// The operator's pods (the chart's gateway pods share the name label).
pub const OPERATOR_PODS: &str = "app.kubernetes.io/name=craftplane,app.kubernetes.io/component=controller";

pub fn run(sh: &Shell, only: Option<Only>) -> Result<()> {
    let t0 = Instant::now();
    let tools = tools::ensure(sh)?;
    // The images first: a build error shows before a cluster starts.
    let image = crate::images::build_operator(sh, crate::images::Profile::E2e)?;
    let test_server = crate::images::build_test_server(sh)?;
    let cluster = Cluster::ephemeral(&format!("e2e-{}", std::process::id()));
    cluster.up(sh)?;
    let result = cluster.import_images(&[&image, &test_server]).and_then(|()| steps(sh, &tools, &cluster, only));
    if result.is_err() {
        dump_operator_pods(sh, &tools, &cluster);
    }
    let stopped = cluster.down();
    result?;
    stopped?;
    println!("e2e: passed in {:.0?}", t0.elapsed());
    Ok(())
}

/// On failure: what the operator pods said and how they are.
fn dump_operator_pods(sh: &Shell, tools: &Tools, cluster: &Cluster) {
    let kubectl = &tools.kubectl;
    let kc = cluster.kubeconfig();
    let _ = cmd!(sh, "{kubectl} --kubeconfig {kc} get pods -A -o wide").run();
    let _ = cmd!(sh, "{kubectl} --kubeconfig {kc} describe pods -n {NS}").run();
    let _ = cmd!(sh, "{kubectl} --kubeconfig {kc} logs -n {NS} -l {OPERATOR_PODS} --tail=40 --prefix").run();
}

/// A child process killed when dropped (servers the suite starts).
pub struct Stopper(pub Child);

impl Drop for Stopper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn steps(sh: &Shell, tools: &Tools, cluster: &Cluster, only: Option<Only>) -> Result<()> {
    let kubectl = &tools.kubectl;
    let helm = &tools.helm;
    let kc = cluster.kubeconfig();
    let k = Kube { kubectl: kubectl.clone(), kubeconfig: kc.clone() };
    // Servers on this machine that pods reach: they listen on the host end
    // of the real node's veth.
    let host = cluster.host_ip();
    if cluster.node().is_none() {
        bail!("the e2e suite needs the real node");
    }

    let node_modules = tools::ensure_npm_peers(sh)?;
    // Modrinth: recorded API responses (tests/data/modrinth) served as
    // plain files by Python's http.server in place of api.modrinth.com.
    let mr_root = cluster.dir.join("modrinth");
    for (project, file) in [("luckperms", "versions-luckperms.json"), ("chunky", "versions-chunky.json")] {
        let dir = mr_root.join("v2/project").join(project);
        std::fs::create_dir_all(&dir)?;
        std::fs::copy(crate::project_root().join("tests/data/modrinth").join(file), dir.join("version"))?;
    }
    let mr_port = free_port(&host)?;
    let mr = Command::new("python3")
        .args(["-m", "http.server", "--bind", &host, &mr_port.to_string(), "--directory"])
        .arg(&mr_root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start python3 -m http.server (the recorded Modrinth API)")?;
    let _mr = Stopper(mr);
    // Backups go to a real S3 server (s3s-fs) with credentials in a Secret
    // of the operator's namespace, as a cluster admin would configure them.
    let s3s = tools::ensure_s3s_fs(sh)?;
    let s3_root = cluster.dir.join("s3");
    std::fs::create_dir_all(s3_root.join("backups"))?;
    let s3_port = free_port(&host)?;
    let s3 = Command::new(&s3s)
        .args(["--host", &host, "--port", &s3_port.to_string(), "--access-key", "e2e", "--secret-key", "e2e-secret"])
        .arg(&s3_root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start s3s-fs")?;
    let _s3 = Stopper(s3);

    println!("e2e: helm lint");
    cmd!(sh, "{helm} lint charts/craftplane --strict").quiet().run()?;
    // What a cluster admin writes: the image they pushed (here: loaded into
    // the node), the node pool, the object store, the Modrinth mirror.
    let image = crate::images::operator_image();
    let (repo, tag) = image.rsplit_once(':').context("image tag")?;
    let values = cluster.dir.join("values-e2e.yaml");
    std::fs::write(
        &values,
        format!(
            "image: {{repository: {repo}, tag: \"{tag}\", pullPolicy: Never}}
replicaCount: 2
leaderElection: {{enabled: true, leaseDurationSeconds: 15}}
serverListPingInterval: 2
metrics: {{prometheusRule: {{enabled: false}}}}
modrinth: {{url: \"http://{host}:{mr_port}/v2\"}}
nodeSelector: {{{label}: {value}}}
tolerations: [{{key: {taint}, operator: Exists, effect: NoSchedule}}]
gateway:
  baseDomain: {base}
  service: {{externalTrafficPolicy: Local}}
  rateLimit: {{burst: {burst}, intervalMs: {interval}}}
  # A woken server's start here (pod, 10 s startup probe, 100m of CPU)
  # can pass the default 25 s hold; the npm client waits (a Java client
  # would give up at 30 s and be asked to join again).
  wakeHoldSeconds: 45
  resources: {{requests: {{cpu: 50m, memory: 32Mi}}, limits: {{memory: 256Mi}}}}
backup:
  defaultStore: main
  stores:
  - name: main
    url: s3://backups/e2e
    config: {{AWS_ENDPOINT: \"http://{host}:{s3_port}\", AWS_ALLOW_HTTP: \"true\", AWS_REGION: us-east-1}}
    credentialsSecret: backup-s3
",
            label = crate::node::LABEL.0,
            value = crate::node::LABEL.1,
            taint = crate::node::TAINT_KEY,
            base = crate::e2e_gateway::BASE_DOMAIN,
            burst = crate::e2e_gateway::RATE_BURST,
            interval = crate::e2e_gateway::RATE_INTERVAL_MS,
        ),
    )?;
    k.run(&["create", "namespace", NS])?;
    // The chart's pods must pass Pod Security "restricted".
    k.run(&["label", "namespace", NS, "pod-security.kubernetes.io/enforce=restricted"])?;
    k.run(&[
        "create",
        "secret",
        "generic",
        "backup-s3",
        "-n",
        NS,
        "--from-literal=AWS_ACCESS_KEY_ID=e2e",
        "--from-literal=AWS_SECRET_ACCESS_KEY=e2e-secret",
    ])?;
    println!("e2e: helm install (image {image}, 2 replicas on the real node)");
    let t_install = Instant::now();
    cmd!(sh, "{helm} install craftplane charts/craftplane --kubeconfig {kc} --namespace {NS} -f {values} --wait --timeout 180s")
        .quiet()
        .run()
        .context("helm install did not become ready")?;
    println!("e2e: ok   chart installed, Deployment Available in {:.0?}", t_install.elapsed());
    let pods_json = k.run(&["get", "pods", "-n", NS, "-l", OPERATOR_PODS, "-o", "json"])?;
    let pods: serde_json::Value = serde_json::from_str(&pods_json)?;
    let pods = pods["items"].as_array().context("pods")?.clone();
    if pods.len() != 2 {
        bail!("expected 2 operator pods, found {}", pods.len());
    }
    for p in &pods {
        let name = p["metadata"]["name"].as_str().unwrap_or("");
        let node = p["spec"]["nodeName"].as_str().unwrap_or("");
        let ready = p["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        if node != crate::node::NODE_NAME || !ready {
            bail!("operator pod {name} on {node:?}, ready {ready}: expected Ready on {}", crate::node::NODE_NAME);
        }
    }
    println!("e2e: ok   both operator pods Ready (readiness /readyz, liveness /healthz) on {}", crate::node::NODE_NAME);
    // The NetworkPolicy matrix: its own tenants, servers and probe pods.
    let netpol = || crate::e2e_netpol::run(&crate::e2e_netpol::Setup { kube: &k, cluster, s3_port });
    if only == Some(Only::Netpol) {
        return netpol();
    }
    // The sleep scenario kills the operator's leader; the leader's metrics
    // (counters of its process) are checked before that.
    let metrics_checked = Gate::default();
    let gateway = || {
        crate::e2e_gateway::run(&crate::e2e_gateway::Setup {
            kube: &k,
            cluster,
            node_modules: &node_modules,
            before_leader_kill: &|| metrics_checked.wait(),
        })
    };
    if only == Some(Only::Gateway) {
        metrics_checked.open();
        return gateway();
    }
    let leader = retry(Duration::from_secs(60), || leader_pod(&k))?;
    println!("e2e: ok   leader Lease held by pod {leader}");
    // The real node has 2 CPUs to request: operator 2×100m, gateway 2×50m,
    // servers: real 500m, the matrix's 2×150m, the gateway scenario's
    // 2×100m, probes ~70m, and two backup Jobs of 250m at once: 1,870m.
    // A scenario that asks for more starves the others' pods (Pending).
    // Independent scenarios run side by side (they mostly wait on probes,
    // Jobs and the cron minute, not on the CPU): the examples on kwok nodes
    // and a tenant's release; the real server on the real node
    // (xtask/src/e2e_real.rs: plugins, backup, restore, live operations,
    // stop, deletion); the NetworkPolicy matrix (xtask/src/e2e_netpol.rs);
    // players through the gateway (xtask/src/e2e_gateway.rs).
    // Each uses its own objects; all run to the end, and every failure is
    // reported.
    let real_done = std::sync::atomic::AtomicBool::new(false);
    let results = std::thread::scope(|scope| {
        let real = scope.spawn(|| {
            let r = crate::e2e_real::run(&crate::e2e_real::Setup {
                kube: &k,
                cluster,
                node_modules: &node_modules,
                s3_root: &s3_root,
            });
            real_done.store(true, std::sync::atomic::Ordering::SeqCst);
            r
        });
        let metrics = scope.spawn(|| {
            // Opens the gate however the check ends.
            let _open = OpenOnDrop(&metrics_checked);
            check_metrics(&k, &leader, &real_done)
        });
        let matrix = scope.spawn(netpol);
        let players = scope.spawn(gateway);
        let examples = examples(sh, &k, cluster, &host, s3_port);
        let joined = |h: std::thread::ScopedJoinHandle<'_, Result<()>>, what: &str| {
            h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("the {what} scenario panicked")))
        };
        [
            ("examples", examples),
            ("real-server", joined(real, "real-server")),
            ("operator metrics", joined(metrics, "operator metrics")),
            ("NetworkPolicy matrix", joined(matrix, "NetworkPolicy matrix")),
            ("gateway", joined(players, "gateway")),
        ]
    });
    let failed: Vec<String> = results
        .iter()
        .filter_map(|(what, r)| r.as_ref().err().map(|e| format!("the {what} scenario: {e:#}")))
        .collect();
    if !failed.is_empty() {
        bail!("{}", failed.join("\n"));
    }

    // The sleep scenario killed the leader of then: ask again.
    let leader = retry(Duration::from_secs(60), || leader_pod(&k))?;
    let value = metric_sum;
    let scrape = |pod: &str| scrape_operator(&k, pod);
    // The pod holding the Lease says so in its craftplane_leader gauge.
    let reports_leader = |pod: &str| {
        retry(Duration::from_secs(30), || {
            let m = scrape(pod)?;
            if value(&m, "craftplane_leader") != 1.0 {
                bail!("craftplane_leader is not 1 on {pod}");
            }
            Ok(())
        })
    };
    // Failover 1: the leader hangs (its container frozen: no renewals, no
    // exit). The standby pod takes the Lease once it expires.
    let pod_field = |pod: &str, path: &str| k.run(&["get", "pod", pod, "-n", NS, "-o", &format!("jsonpath={path}")]);
    let container_of = |pod: &str| -> Result<String> {
        let id = pod_field(pod, "{.status.containerStatuses[0].containerID}")?;
        Ok(id.strip_prefix("containerd://").context("containerd container id")?.to_string())
    };
    let node = cluster.node().context("real node")?;
    let ctr = |args: &[&str]| -> Result<()> {
        let out = node.ctr().args(args).output()?;
        if !out.status.success() {
            bail!("ctr {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    };
    let frozen = container_of(&leader)?;
    let t_freeze = Instant::now();
    ctr(&["tasks", "pause", &frozen])?;
    let standby = retry(Duration::from_secs(60), || {
        let l = leader_pod(&k)?;
        if l == leader {
            bail!("still held by {leader}");
        }
        Ok(l)
    });
    ctr(&["tasks", "resume", &frozen])?;
    let standby = standby?;
    println!("e2e: ok   leader {leader} frozen; standby {standby} took the Lease after {:.0?}", t_freeze.elapsed());
    reports_leader(&standby)?;
    // Failover 2: the (new) leader's container is killed (SIGKILL, no
    // Lease release). A new leader process — the standby, or the killed
    // pod's restarted container, whichever sees the Lease expire first —
    // holds it and goes on reconciling.
    let holder_before =
        k.run(&["get", "lease", "craftplane-leader", "-n", NS, "-o", "jsonpath={.spec.holderIdentity}"])?;
    let killed = standby.clone();
    let t_kill = Instant::now();
    ctr(&["tasks", "kill", "--signal", "SIGKILL", &container_of(&killed)?])?;
    let new_leader = retry(Duration::from_secs(60), || {
        let holder =
            k.run(&["get", "lease", "craftplane-leader", "-n", NS, "-o", "jsonpath={.spec.holderIdentity}"])?;
        if holder == holder_before || holder.is_empty() {
            bail!("still held by {holder_before}");
        }
        leader_pod(&k)
    })?;
    println!("e2e: ok   leader {killed} killed; {new_leader} holds the Lease after {:.0?}", t_kill.elapsed());
    reports_leader(&new_leader)?;
    // The new leader reconciles: a new SKU gets its status.
    let sku = cluster.dir.join("sku-after-failover.yaml");
    std::fs::write(
        &sku,
        "apiVersion: craftplane.io/v1alpha1\nkind: Sku\nmetadata: {name: after-failover}\nspec:\n  resources: {cpu: 500m, memory: 1Gi, storage: 1Gi}\n  maxPlayers: 5\n",
    )?;
    k.run(&["apply", "-f", &sku.display().to_string()])?;
    k.expect(
        "Sku after-failover Ready (reconciled by the new leader)",
        &["get", "sku", "after-failover", "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"],
        "True",
    )?;
    // The killed container is restarted by the kubelet (liveness of the
    // process) and becomes Ready again as the standby.
    retry(Duration::from_secs(60), || {
        let restarts = pod_field(&killed, "{.status.containerStatuses[0].restartCount}")?;
        let ready = pod_field(&killed, "{.status.containerStatuses[0].ready}")?;
        if restarts.trim() == "0" || ready.trim() != "true" {
            bail!("{killed}: restarts {restarts}, ready {ready}");
        }
        Ok(())
    })?;
    println!("e2e: ok   {killed} restarted by the kubelet and Ready again");

    let log = k.operator_log();
    if log.contains("forbidden") || log.contains("Forbidden") {
        bail!("the operator hit RBAC denials with the chart's ServiceAccount:\n{}", tail(&log, 40));
    }
    if !log.contains("became the leader") {
        bail!("no operator log line says it became the leader:\n{}", tail(&log, 40));
    }
    // Clean shutdown on SIGTERM (as on a rollout): the container exits 0.
    let before = pod_field(&new_leader, "{.status.containerStatuses[0].restartCount}")?;
    ctr(&["tasks", "kill", "--signal", "SIGTERM", &container_of(&new_leader)?])?;
    retry(Duration::from_secs(60), || {
        let code = pod_field(&new_leader, "{.status.containerStatuses[0].lastState.terminated.exitCode}")?;
        let restarts = pod_field(&new_leader, "{.status.containerStatuses[0].restartCount}")?;
        if restarts == before || code.trim().is_empty() {
            bail!("{new_leader} has not restarted yet");
        }
        if code.trim() != "0" {
            return Ok(Err(anyhow::anyhow!("{new_leader} exited with {code} on SIGTERM")));
        }
        Ok(Ok(()))
    })??;
    println!("e2e: ok   {new_leader} exited 0 on SIGTERM");
    crate::e2e_rbac::check(
        &k,
        &cluster.audit_log(),
        &[crate::e2e_rbac::USER],
        "craftplane-operator",
        crate::e2e_rbac::E2E_ELSEWHERE,
    )
}

/// The sum of the metric lines starting with `prefix` in a /metrics text.
pub(crate) fn metric_sum(metrics: &str, prefix: &str) -> f64 {
    metrics.lines().filter(|l| l.starts_with(prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

/// An operator pod's /metrics, through the API server's pod proxy.
pub fn scrape_operator(k: &Kube, pod: &str) -> Result<String> {
    k.run(&["get", "--raw", &format!("/api/v1/namespaces/{NS}/pods/{pod}:8080/proxy/metrics")])
}

/// Once opened, stays open; `wait` returns when it is.
#[derive(Default)]
struct Gate {
    open: std::sync::Mutex<bool>,
    changed: std::sync::Condvar,
}

impl Gate {
    fn open(&self) {
        *self.open.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.changed.notify_all();
    }

    fn wait(&self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        while !*open {
            open = self.changed.wait(open).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Opens its gate when dropped (also on an error or a panic).
struct OpenOnDrop<'a>(&'a Gate);

impl Drop for OpenOnDrop<'_> {
    fn drop(&mut self) {
        self.0.open();
    }
}

/// The operator's metrics, scraped from the leader pod through the API
/// server's pod proxy while the scenarios run: every family counted
/// positive (backups of the real server and the examples, reconciles of
/// every kind) and the real server's players gauge present. Polls until
/// then, giving up 20 s after the real-server scenario ended (gauges
/// refresh every 5 s).
fn check_metrics(k: &Kube, leader: &str, real_done: &std::sync::atomic::AtomicBool) -> Result<()> {
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
        "craftplane_reconciles_total{kind=\"BackupSnapshot\",result=\"ok\"}",
        "craftplane_backup_bytes_total",
        "craftplane_backup_duration_seconds_count",
        "craftplane_backup_failures_total",
    ];
    let value = metric_sum;
    let scrape = |pod: &str| scrape_operator(k, pod);
    let mut deadline = Instant::now() + Duration::from_secs(1800);
    let mut real_ended = false;
    let metrics = loop {
        if !real_ended && real_done.load(std::sync::atomic::Ordering::SeqCst) {
            real_ended = true;
            deadline = deadline.min(Instant::now() + Duration::from_secs(20));
        }
        let m = match scrape(leader) {
            Ok(m) => m,
            Err(e) if Instant::now() > deadline => return Err(e.context("scrape the leader pod's /metrics")),
            Err(_) => {
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        // The real server's players gauge exists (its value is 0).
        let players = m.contains("craftplane_players_online{namespace=\"default\",server=\"real\"}");
        if players && families.iter().all(|f| value(&m, f) > 0.0) {
            break m;
        }
        if Instant::now() > deadline {
            let missing: Vec<_> = families.iter().filter(|f| value(&m, f) <= 0.0).collect();
            bail!("metrics not positive: {missing:?}, real server's players gauge present: {players}\n{m}");
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    for f in families {
        println!("e2e: metric {f} = {}", value(&metrics, f));
    }
    for family in ["craftplane_backup_bytes", "craftplane_backup_failures"] {
        if !metrics.contains(&format!("# TYPE {family}")) {
            bail!("metric family {family} is not exposed");
        }
    }

    Ok(())
}

/// The examples/ manifests as a user applies them (kwok nodes): SKUs, a
/// Tenant, a server with Modrinth plugins and a snapshot whose Job's command
/// runs on this machine; a snapshot naming no store; then the Tenant
/// released: its objects leave the namespace, which stays.
fn examples(sh: &Shell, k: &Kube, cluster: &Cluster, host: &str, s3_port: u16) -> Result<()> {
    let kubectl = &k.kubectl;
    let kc = &k.kubeconfig;

    println!("e2e: applying examples/");
    k.run(&["apply", "-R", "-f", "examples/"])?;

    k.expect("Sku small servers", &["get", "sku", "small", "-o", "jsonpath={.status.servers}"], "1")?;
    k.expect(
        "Sku medium Ready",
        &["get", "sku", "medium", "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"],
        "True",
    )?;
    k.expect(
        "MinecraftServer survival phase",
        &["get", "mcs", "survival", "-n", "default", "-o", "jsonpath={.status.phase}"],
        "Running",
    )?;
    // The example snapshot: its Job is created; pods do not run here, so the
    // Job's own command line runs on this machine against the same store
    // (the kubelet's part) before kwok completes the pod, 5 s after it
    // starts: watched for from the moment the server runs, before anything
    // else is checked.
    let world = cluster.dir.join("world");
    std::fs::create_dir_all(world.join("world/region"))?;
    for i in 0..50u32 {
        std::fs::write(world.join(format!("world/region/r.{i}.0.mca")), vec![(i % 200) as u8; 8192 + i as usize])?;
    }
    let job_name = "survival-before-1-21-5-backup";
    let deadline = Instant::now() + Duration::from_secs(60);
    let args_json = loop {
        let jsonpath = "jsonpath={.spec.template.spec.containers[0].args}";
        if let Ok(a) = cmd!(sh, "{kubectl} --kubeconfig {kc} get job {job_name} -n default -o {jsonpath}")
            .quiet()
            .ignore_stderr()
            .read()
            && !a.is_empty()
        {
            break a;
        }
        if Instant::now() > deadline {
            bail!("no backup Job {job_name}; operator log:\n{}", tail(&k.operator_log(), 40));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut args: Vec<String> = serde_json::from_str(&args_json)?;
    let i = args.iter().position(|a| a == "--data-dir").context("--data-dir")?;
    args[i + 1] = world.display().to_string();
    if let Some(i) = args.iter().position(|a| a == "--rcon-address") {
        args.drain(i..i + 4);
    }
    let out = Command::new(crate::images::release_binary(crate::images::Profile::E2e))
        .args(&args)
        .args(["--termination-log", "/nonexistent/x"])
        .envs([
            ("AWS_ACCESS_KEY_ID", "e2e".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "e2e-secret".into()),
            ("AWS_ENDPOINT", format!("http://{host}:{s3_port}")),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_REGION", "us-east-1".into()),
        ])
        .output()?;
    if !out.status.success() {
        bail!("the backup Job's command failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    k.expect(
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
    k.expect(
        "StatefulSet survival ready replicas",
        &["get", "statefulset", "survival", "-n", "default", "-o", "jsonpath={.status.readyReplicas}"],
        "1",
    )?;
    k.expect(
        "Tenant acme Ready",
        &["get", "tenant", "acme", "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"],
        "True",
    )?;
    k.expect(
        "Tenant acme namespaces",
        &["get", "tenant", "acme", "-o", "jsonpath={.status.namespaces}"],
        "[\"tenant-acme\"]",
    )?;
    k.expect(
        "Namespace tenant-acme",
        &["get", "namespace", "tenant-acme", "-o", "jsonpath={.metadata.labels.craftplane\\.io/tenant}"],
        "acme",
    )?;
    k.expect(
        "leader Lease held",
        &["get", "lease", "craftplane-leader", "-n", NS, "-o", "jsonpath={.spec.leaseDurationSeconds}"],
        "15",
    )?;
    for plugin in ["luckperms", "chunky"] {
        k.expect(
            &format!("PluginInstallation {plugin} Installed (recorded Modrinth API)"),
            &["get", "plugin", plugin, "-n", "default", "-o", "jsonpath={.status.phase}"],
            "Installed",
        )?;
    }
    let manifest =
        k.run(&["get", "configmap", "survival-config", "-n", "default", "-o", "jsonpath={.data.plugins\\.json}"])?;
    for file in ["LuckPerms-Bukkit-5.5.71.jar", "Chunky-Bukkit-1.4.40.jar"] {
        if !manifest.contains(file) {
            anyhow::bail!("survival's plugin manifest lacks {file}:\n{manifest}\noperator log:\n{}", k.operator_log());
        }
    }
    println!("e2e: ok   survival manifest lists LuckPerms and Chunky");
    // A snapshot naming a store nobody configured fails with the reason.
    let bad = cluster.dir.join("bad-snapshot.yaml");
    std::fs::write(
        &bad,
        "apiVersion: craftplane.io/v1alpha1\nkind: BackupSnapshot\nmetadata: {name: nowhere, namespace: default}\nspec: {server: survival, store: {name: nowhere}}\n",
    )?;
    k.run(&["apply", "-f", &bad.display().to_string()])?;
    k.expect(
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
    k.expect(
        "BackupSnapshot survival-before-1-21-5 Completed",
        &["get", "backup", "survival-before-1-21-5", "-n", "default", "-o", "jsonpath={.status.phase}/{.status.files}"],
        "Completed/50",
    )?;

    // A tenant removed: its objects leave the namespace (garbage
    // collection, after the Tenant is gone), which stays.
    k.run(&["delete", "tenant", "acme", "--wait", "--timeout=90s"])?;
    retry(Duration::from_secs(60), || {
        let left = k.run(&[
            "get",
            "rolebindings,networkpolicies,resourcequotas,limitranges,configmaps",
            "-n",
            "tenant-acme",
            "-l",
            "app.kubernetes.io/managed-by=craftplane",
            "-o",
            "name",
        ])?;
        if !left.is_empty() {
            bail!("Tenant acme deleted, but its objects stay in tenant-acme:\n{left}");
        }
        Ok(())
    })?;
    k.run(&["get", "namespace", "tenant-acme", "-o", "name"]).context("a released tenant namespace is kept")?;
    println!(
        "e2e: ok   Tenant acme deleted: its RBAC, policies, quota and ConfigMap left tenant-acme; the namespace stays"
    );
    Ok(())
}

/// Seconds since the epoch of an RFC 3339 UTC timestamp (`2026-12-01T10:00:00Z`).
pub fn parse_rfc3339(t: &str) -> Option<i64> {
    let t = t.trim();
    let (date, time) = t.strip_suffix('Z')?.split_once('T')?;
    let d: Vec<i64> = date.split('-').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    let h: Vec<i64> = time.split(':').map(|p| p.split('.').next()?.parse().ok()).collect::<Option<_>>()?;
    let (y, m, day) = (d[0], d[1], d[2]);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some(days * 86400 + h[0] * 3600 + h[1] * 60 + h[2])
}

/// A free TCP port on `host`.
pub fn free_port(host: &str) -> Result<u16> {
    Ok(std::net::TcpListener::bind((host, 0))?.local_addr()?.port())
}

/// Calls `f` until it succeeds or `timeout` passes (then its last error).
pub fn retry<T>(timeout: Duration, mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// kubectl against the suite's control plane.
pub struct Kube {
    pub kubectl: PathBuf,
    pub kubeconfig: PathBuf,
}

impl Kube {
    /// A kubectl command with the kubeconfig set.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.kubectl);
        c.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        c
    }

    /// Runs kubectl; its stdout (trailing newline trimmed), or an error with its stderr.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        let out = self.command(args).stdin(Stdio::null()).output().context("run kubectl")?;
        if !out.status.success() {
            bail!("kubectl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
    }

    /// One field (a jsonpath) of an object in namespace `default`.
    pub fn get(&self, kind: &str, name: &str, jsonpath: &str) -> Result<String> {
        self.run(&["get", kind, name, "-n", "default", "-o", &format!("jsonpath={jsonpath}")])
    }

    /// Polls `args` until their output is `want`, up to `timeout`.
    pub fn wait_for(&self, args: &[&str], want: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = self.run(args).unwrap_or_else(|e| format!("<{e}>"));
            if last.trim() == want {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("expected {want:?}, got {last:?} after {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// [`Kube::wait_for`] with 90 s, printing an ok line or failing with the operator's log.
    pub fn expect(&self, what: &str, args: &[&str], want: &str) -> Result<()> {
        self.expect_within(what, args, want, Duration::from_secs(90))
    }

    pub fn expect_within(&self, what: &str, args: &[&str], want: &str, timeout: Duration) -> Result<()> {
        match self.wait_for(args, want, timeout) {
            Ok(()) => {
                println!("e2e: ok   {what}: {want}");
                Ok(())
            }
            Err(e) => bail!("{what}: {e:#}\noperator log:\n{}", tail(&self.operator_log(), 30)),
        }
    }

    /// The operator pods' logs (current and previous containers).
    pub fn operator_log(&self) -> String {
        let mut out = String::new();
        for p in self.run(&["get", "pods", "-n", NS, "-l", OPERATOR_PODS, "-o", "name"]).unwrap_or_default().lines() {
            out.push_str(&self.run(&["logs", "-n", NS, p, "--tail=200"]).unwrap_or_default());
            out.push_str(&self.run(&["logs", "-n", NS, p, "--previous", "--tail=200"]).unwrap_or_default());
        }
        out
    }
}

/// The operator pod that holds the leader Lease (its holder identity is
/// `<pod>-<random suffix>`).
pub(crate) fn leader_pod(k: &Kube) -> Result<String> {
    let holder = k.run(&["get", "lease", "craftplane-leader", "-n", NS, "-o", "jsonpath={.spec.holderIdentity}"])?;
    let pods = k.run(&["get", "pods", "-n", NS, "-l", OPERATOR_PODS, "-o", "name"])?;
    pods.lines()
        .map(|p| p.trim_start_matches("pod/").to_string())
        .find(|p| !holder.is_empty() && holder.starts_with(&format!("{p}-")))
        .with_context(|| format!("no operator pod holds the Lease (holder {holder:?})"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_timestamps_parse() {
        assert_eq!(super::parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(super::parse_rfc3339("2026-12-01T11:34:20Z"), Some(1_796_124_860));
        assert_eq!(super::parse_rfc3339("2024-02-29T00:00:01Z"), Some(1_709_164_801));
        assert_eq!(super::parse_rfc3339(""), None);
    }
}
