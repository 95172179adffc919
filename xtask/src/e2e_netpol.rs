//! The NetworkPolicy matrix on the real node, where kube-router's policy
//! controller enforces the policies the operator writes for each tenant
//! namespace. Self-contained (its own Sku, two Tenants, their servers, probe
//! pods, a plugin CDN; all removed at the end), so it can run beside the
//! other scenarios.
//!
//! Every arrow is a real TCP connect and is asserted both ways: an allowed
//! arrow must connect (retried up to a deadline: rules settle), a denied one
//! must fail within a short timeout. A denied arrow counts only when its
//! source connected somewhere else in the same run (the probe works) and its
//! destination accepted a connection from another source (something
//! listens): a broken probe or a stopped server is never read as a denial.
//!
//! Sources: a plain pod of tenant A, a pod of tenant A with the backup Jobs'
//! label, tenant A's and tenant B's server pods (their init-container
//! `fetch-plugins` shares the pod's network and policies), a pod in the
//! operator's namespace, a pod in kube-system (no egress policy: only the
//! servers' ingress rules can refuse it), and this machine (the host end of the node's veth,
//! the source address a player's connection has here: no NAT on the way).
//! Destinations: both servers' game and RCON ports, a stand-in cluster DNS
//! pod (kube-system, `k8s-app: kube-dns`), the Kubernetes API (Service and
//! endpoint), the kubelet, the plugin CDN and the S3 store on this machine
//! (private addresses: reachable only through tenant A's `allowedEgress`),
//! and a "public" address (TEST-NET-3, on the node's loopback) on 80, 443
//! and 8443. On top, tenant A's server starts only once its real
//! init-container fetched a plugin from the CDN, and a real backup Job of
//! tenant A talks to its server's RCON (save-off, save-all, save-on) and
//! uploads to the store.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use crate::cluster::Cluster;
use crate::e2e::{Kube, Stopper, free_port, retry, tail};

/// What the matrix needs from the suite.
pub struct Setup<'a> {
    pub kube: &'a Kube,
    pub cluster: &'a Cluster,
    /// Port of the chart's S3 store (s3s-fs) on the host address.
    pub s3_port: u16,
}

const TENANT_A: &str = "np-alpha";
const NS_A: &str = "tenant-np-alpha";
const TENANT_B: &str = "np-beta";
const NS_B: &str = "tenant-np-beta";
const SKU: &str = "netpol-node";
const SERVER_A: &str = "alpha";
const SERVER_B: &str = "beta";
/// Pods of this scenario outside the tenant namespaces.
const OPERATOR_PROBE: &str = "netpol-probe";
/// Probes in the operator's namespace labelled as the gateway's pods, and
/// with no craftplane labels at all.
const GATEWAY_PROBE: &str = "netpol-gateway";
const PLAIN_PROBE: &str = "netpol-plain";
const DNS_POD: &str = "netpol-dns";
/// A public (non-private) address: TEST-NET-3, put on the node's loopback
/// so that nothing leaves the machine.
const PUBLIC_IP: &str = "203.0.113.80";
const GAME: u16 = 25565;
const RCON: u16 = 25575;
/// How long a denied connect may take before it counts as refused.
const DENIED_TIMEOUT_MS: u64 = 2500;
/// How long an allowed connect is retried.
const ALLOWED_DEADLINE: Duration = Duration::from_secs(60);

pub fn run(s: &Setup) -> Result<()> {
    let t0 = Instant::now();
    let k = s.kube;
    let node = s.cluster.node().context("the matrix needs the real node")?;
    let host = s.cluster.host_ip();

    // The plugin CDN on this machine (a private address).
    let cdn = s.cluster.dir.join("netpol-cdn");
    std::fs::create_dir_all(&cdn)?;
    let jar = b"PK\x03\x04 craftplane netpol plugin (not a real jar)\n".repeat(16);
    std::fs::write(cdn.join("np-1.0.0.jar"), &jar)?;
    let sha: String = Sha256::digest(&jar).iter().map(|b| format!("{b:02x}")).collect();
    let cdn_port = free_port(&host)?;
    let _cdn = crate::e2e_real::serve(&host, cdn_port, &cdn)?;

    // The "public" address: on the node's loopback, listeners on 80, 443
    // and 8443 inside the node's network namespace.
    let netns = node.netns();
    let ip_netns = |args: &[&str]| -> Result<()> {
        let out = Command::new("ip").args(["-n", &netns]).args(args).output()?;
        if !out.status.success() {
            bail!("ip -n {netns} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    };
    let public_cidr = format!("{PUBLIC_IP}/32");
    ip_netns(&["addr", "replace", &public_cidr, "dev", "lo"])?;
    struct Unassign<'a>(&'a dyn Fn(&[&str]) -> Result<()>, &'a str);
    impl Drop for Unassign<'_> {
        fn drop(&mut self) {
            let _ = (self.0)(&["addr", "del", self.1, "dev", "lo"]);
        }
    }
    let _unassign = Unassign(&ip_netns, &public_cidr);
    let _public = Stopper(
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{netns}"))
            .args(["python3", "-c", PUBLIC_LISTENER, PUBLIC_IP])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start the public-address listeners")?,
    );

    println!("e2e: netpol: tenants {TENANT_A} and {TENANT_B}, their servers and probe pods on the real node");
    let result = matrix(s, &host, cdn_port, &sha);
    if result.is_err() {
        let _ = k.command(&["get", "pods,networkpolicies", "-n", NS_A, "-o", "wide"]).status();
        let _ = k.command(&["get", "pods,networkpolicies", "-n", NS_B, "-o", "wide"]).status();
    }
    let cleaned = cleanup(k);
    result?;
    cleaned?;
    println!("e2e: ok   netpol: matrix passed and cleaned up in {:.0?}", t0.elapsed());
    Ok(())
}

fn matrix(s: &Setup, host: &str, cdn_port: u16, sha: &str) -> Result<()> {
    let k = s.kube;
    let dir = &s.cluster.dir;
    let image = crate::images::test_server_image();
    let image_repo = image.rsplit_once(':').map(|(r, _)| r.to_string()).unwrap_or_default();
    let placement = format!(
        "nodeSelector: {{{l}: {v}}}\n  tolerations: [{{key: {t}, operator: Exists, effect: NoSchedule}}]",
        l = crate::node::LABEL.0,
        v = crate::node::LABEL.1,
        t = crate::node::TAINT_KEY,
    );
    // Tenant A: players from this machine; the CDN and the S3 store on
    // this machine as the admin's egress exceptions. Tenant B: players from
    // elsewhere only, no exceptions.
    let tenants = dir.join("netpol-tenants.yaml");
    std::fs::write(
        &tenants,
        format!(
            "apiVersion: craftplane.io/v1alpha1
kind: Sku
metadata: {{name: {SKU}}}
spec:
  resources: {{cpu: 150m, memory: 512Mi, storage: 1Gi}}
  maxPlayers: 4
  storageClassName: {sc}
  allowedImages: [{image_repo}]
  placement:
    {placement_sku}
---
apiVersion: craftplane.io/v1alpha1
kind: Tenant
metadata: {{name: {TENANT_A}}}
spec:
  owners: [{{kind: User, name: np-alpha-owner}}]
  allowedSkus: [{SKU}]
  network:
    allowedIngressCidrs: [\"{host}/32\"]
    allowedEgress: [{{cidr: \"{host}/32\", ports: [{cdn_port}, {s3_port}]}}]
---
apiVersion: craftplane.io/v1alpha1
kind: Tenant
metadata: {{name: {TENANT_B}}}
spec:
  owners: [{{kind: User, name: np-beta-owner}}]
  allowedSkus: [{SKU}]
  network:
    allowedIngressCidrs: [\"192.0.2.0/24\"]
",
            sc = crate::node::STORAGE_CLASS,
            placement_sku = placement.replace("\n  ", "\n    "),
            s3_port = s.s3_port,
        ),
    )?;
    k.run(&["apply", "-f", &tenants.display().to_string()])?;
    // The namespaces and their policies first (objects in them next).
    for ns in [NS_A, NS_B] {
        retry(Duration::from_secs(60), || {
            k.run(&["get", "networkpolicy", "craftplane-egress", "-n", ns, "-o", "name"])
        })
        .with_context(|| format!("the Tenant's NetworkPolicies in {ns}"))?;
    }

    let probe_pod = |name: &str, ns: &str, labels: &str, script: &str, root: bool| {
        let (user, non_root) = if root { (0, false) } else { (1000, true) };
        format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}, labels: {{{labels}}}}}
spec:
  {placement}
  terminationGracePeriodSeconds: 1
  securityContext: {{runAsNonRoot: {non_root}, runAsUser: {user}, seccompProfile: {{type: RuntimeDefault}}}}
  containers:
  - name: probe
    image: {image}
    imagePullPolicy: Never
    command: [node, -e, {script:?}]
    securityContext: {{allowPrivilegeEscalation: false, capabilities: {{drop: [ALL], add: [{caps}]}}}}
    resources: {{requests: {{cpu: 10m, memory: 48Mi}}, limits: {{cpu: 200m, memory: 128Mi}}}}
---
",
            caps = if root { "NET_BIND_SERVICE" } else { "" },
        )
    };
    let idle = "process.on('SIGTERM', () => process.exit(0)); setInterval(() => {}, 1 << 30)";
    let dns = "process.on('SIGTERM', () => process.exit(0)); const net = require('net'); for (const p of [53, 8053]) net.createServer((c) => c.end()).listen(p)";
    let mut objects = String::new();
    for (name, ns, plugin) in [(SERVER_A, NS_A, true), (SERVER_B, NS_B, false)] {
        objects.push_str(&format!(
            "apiVersion: craftplane.io/v1alpha1
kind: MinecraftServer
metadata: {{name: {name}, namespace: {ns}}}
spec:
  sku: {SKU}
  eula: true
  type: PAPER
  version: \"1.21.4\"
  image: {image}
  deletionPolicy: Delete
---
"
        ));
        if plugin {
            objects.push_str(&format!(
                "apiVersion: craftplane.io/v1alpha1
kind: PluginInstallation
metadata: {{name: np, namespace: {ns}}}
spec:
  server: {name}
  source: {{url: {{url: \"http://{host}:{cdn_port}/np-1.0.0.jar\", sha256: \"{sha}\"}}}}
---
"
            ));
        }
    }
    objects.push_str(&probe_pod("probe", NS_A, "app: netpol-probe", idle, false));
    objects.push_str(&probe_pod(
        "probe-backup",
        NS_A,
        // The label the operator gives backup Job pods
        // (src/resources/tenant.rs BACKUP_POD_NAME).
        "app.kubernetes.io/name: craftplane-backup",
        idle,
        false,
    ));
    // The tenant policies admit the operator's own pods (and the gateway's
    // to the game port), by their labels: probes carry them (no
    // `app.kubernetes.io/instance`, so the chart's ReplicaSet and Services
    // never select them).
    objects.push_str(&probe_pod(
        OPERATOR_PROBE,
        crate::e2e::NS,
        "app: netpol-probe, app.kubernetes.io/name: craftplane, app.kubernetes.io/component: controller",
        idle,
        false,
    ));
    objects.push_str(&probe_pod(
        GATEWAY_PROBE,
        crate::e2e::NS,
        "app: netpol-probe, app.kubernetes.io/name: craftplane, app.kubernetes.io/component: gateway",
        idle,
        false,
    ));
    objects.push_str(&probe_pod(PLAIN_PROBE, crate::e2e::NS, "app: netpol-probe", idle, false));
    objects.push_str(&probe_pod(DNS_POD, "kube-system", "k8s-app: kube-dns, app: netpol-probe", dns, true));
    let objects_file = dir.join("netpol-objects.yaml");
    std::fs::write(&objects_file, &objects)?;
    k.run(&["apply", "-f", &objects_file.display().to_string()])?;

    // Everything up: servers Running/Ready (A's only after its
    // init-container fetched the plugin through A's egress exception).
    let t_up = Instant::now();
    for (name, ns) in [(SERVER_A, NS_A), (SERVER_B, NS_B)] {
        let got = k.wait_for(
            &[
                "get",
                "mcs",
                name,
                "-n",
                ns,
                "-o",
                "jsonpath={.status.phase}/{.status.conditions[?(@.type==\"Ready\")].status}",
            ],
            "Running/True",
            Duration::from_secs(240),
        );
        if let Err(e) = got {
            let _ = k.command(&["describe", "pod", &format!("{name}-0"), "-n", ns]).status();
            let _ = k.command(&["logs", &format!("{name}-0"), "-n", ns, "--all-containers", "--tail=30"]).status();
            bail!(
                "MinecraftServer {ns}/{name} not Running/Ready: {e:#}\noperator log:\n{}",
                tail(&k.operator_log(), 30)
            );
        }
    }
    let pods = [
        (NS_A, "probe"),
        (NS_A, "probe-backup"),
        (crate::e2e::NS, OPERATOR_PROBE),
        (crate::e2e::NS, GATEWAY_PROBE),
        (crate::e2e::NS, PLAIN_PROBE),
        ("kube-system", DNS_POD),
        (NS_A, "alpha-0"),
        (NS_B, "beta-0"),
    ];
    for (ns, pod) in pods {
        k.run(&["wait", "--for=condition=Ready", &format!("pod/{pod}"), "-n", ns, "--timeout=120s"])?;
        let on = k.run(&["get", "pod", pod, "-n", ns, "-o", "jsonpath={.spec.nodeName}"])?;
        if on != crate::node::NODE_NAME {
            bail!("{ns}/{pod} runs on {on}, not the real node");
        }
    }
    k.expect(
        "netpol: PluginInstallation np (fetched by alpha's init-container from the CDN, a private address in A's allowedEgress)",
        &["get", "plugin", "np", "-n", NS_A, "-o", "jsonpath={.status.phase}"],
        "Installed",
    )?;
    println!("e2e: ok   netpol: 2 servers and 4 probe pods Ready on the real node in {:.0?}", t_up.elapsed());

    // kube-router has every policy-selected pod in its rules.
    let node = s.cluster.node().context("real node")?;
    let selected = [(NS_A, "probe"), (NS_A, "probe-backup"), (NS_A, "alpha-0"), (NS_B, "beta-0")];
    retry(Duration::from_secs(60), || {
        let out =
            Command::new("ip").args(["netns", "exec", &node.netns(), "iptables-save", "-t", "filter"]).output()?;
        let rules = String::from_utf8_lossy(&out.stdout);
        let missing: Vec<_> =
            selected.iter().filter(|(ns, pod)| !rules.contains(&format!("name:{pod} namespace: {ns} "))).collect();
        if !missing.is_empty() {
            bail!("kube-router has no firewall chain yet for {missing:?}");
        }
        Ok(())
    })?;

    // A real backup Job of tenant A: RCON to its server, upload to the
    // store through A's egress exception. Runs beside the probes.
    let snap = dir.join("netpol-backup.yaml");
    std::fs::write(
        &snap,
        format!(
            "apiVersion: craftplane.io/v1alpha1\nkind: BackupSnapshot\nmetadata: {{name: np-snap, namespace: {NS_A}}}\nspec: {{server: {SERVER_A}}}\n"
        ),
    )?;
    k.run(&["apply", "-f", &snap.display().to_string()])?;

    let ip = |ns: &str, pod: &str| k.run(&["get", "pod", pod, "-n", ns, "-o", "jsonpath={.status.podIP}"]);
    let (alpha, beta, dns_ip) = (ip(NS_A, "alpha-0")?, ip(NS_B, "beta-0")?, ip("kube-system", DNS_POD)?);
    let api = k.run(&[
        "get",
        "endpoints",
        "kubernetes",
        "-n",
        "default",
        "-o",
        "jsonpath={.subsets[0].addresses[0].ip} {.subsets[0].ports[0].port}",
    ])?;
    let (api_ip, api_port) = api.split_once(' ').context("the kubernetes endpoint")?;
    let api_port: u16 = api_port.parse()?;
    let node_ip = node.node_ip();
    let t = |name: &str, ip: &str, port: u16| Target { name: name.to_string(), ip: ip.to_string(), port };
    let a_game = t("A's server game port", &alpha, GAME);
    let a_rcon = t("A's server RCON", &alpha, RCON);
    let b_game = t("B's server game port", &beta, GAME);
    let b_rcon = t("B's server RCON", &beta, RCON);
    let dns53 = t("cluster DNS (kube-system k8s-app=kube-dns) :53", &dns_ip, 53);
    let dns_other = t("the DNS pod on another port (8053)", &dns_ip, 8053);
    let pub443 = t("a public address :443", PUBLIC_IP, 443);
    let pub80 = t("a public address :80", PUBLIC_IP, 80);
    let pub8443 = t("a public address :8443", PUBLIC_IP, 8443);
    let api_svc = t("the Kubernetes API (Service 10.96.0.1:443)", "10.96.0.1", 443);
    let api_ep = t("the Kubernetes API (its endpoint)", api_ip, api_port);
    let kubelet = t("the kubelet (node:10250)", &node_ip, 10250);
    let cdn = t("the plugin CDN on a private address", host, cdn_port);
    let s3 = t("the S3 store on a private address", host, s.s3_port);
    let allow = |x: &Target| (x.clone(), true);
    let deny = |x: &Target| (x.clone(), false);

    let sources: Vec<(Source, Vec<(Target, bool)>)> = vec![
        (
            Source::Pod(NS_A, "probe", "probe", "tenant A pod"),
            vec![
                allow(&dns53),
                allow(&pub443),
                allow(&pub80),
                allow(&cdn),
                deny(&b_game),
                deny(&b_rcon),
                deny(&a_rcon),
                deny(&a_game),
                deny(&dns_other),
                deny(&pub8443),
                deny(&api_svc),
                deny(&api_ep),
                deny(&kubelet),
            ],
        ),
        (
            Source::Pod(NS_A, "probe-backup", "probe", "tenant A pod labelled as a backup Job"),
            vec![allow(&a_rcon), deny(&a_game), deny(&b_rcon)],
        ),
        (
            Source::Pod(NS_A, "alpha-0", "minecraft", "tenant A server pod (init-container fetch-plugins)"),
            vec![
                allow(&cdn),
                allow(&s3),
                allow(&pub443),
                allow(&dns53),
                deny(&b_game),
                deny(&b_rcon),
                deny(&api_svc),
                deny(&api_ep),
                deny(&kubelet),
                deny(&pub8443),
            ],
        ),
        (
            Source::Pod(NS_B, "beta-0", "minecraft", "tenant B server pod (init-container fetch-plugins)"),
            vec![
                allow(&pub443),
                allow(&dns53),
                deny(&cdn),
                deny(&s3),
                deny(&a_game),
                deny(&a_rcon),
                deny(&api_svc),
                deny(&kubelet),
            ],
        ),
        (
            Source::Pod(
                crate::e2e::NS,
                OPERATOR_PROBE,
                "probe",
                "operator pod (operator namespace, component controller)",
            ),
            vec![
                allow(&a_game),
                allow(&a_rcon),
                allow(&b_game),
                allow(&b_rcon),
                // Controls: each denied destination listens.
                allow(&dns_other),
                allow(&pub8443),
                allow(&api_svc),
                allow(&api_ep),
                allow(&kubelet),
                allow(&cdn),
                allow(&s3),
            ],
        ),
        (
            Source::Pod(crate::e2e::NS, GATEWAY_PROBE, "probe", "gateway pod (operator namespace, component gateway)"),
            vec![allow(&a_game), allow(&b_game), deny(&a_rcon), deny(&b_rcon), allow(&pub8443)],
        ),
        (
            Source::Pod(crate::e2e::NS, PLAIN_PROBE, "probe", "another pod of the operator's namespace"),
            vec![deny(&a_game), deny(&a_rcon), deny(&b_rcon), allow(&pub8443)],
        ),
        (
            // No policies of its own: only the servers' ingress rules stand
            // between it and them (a tenant pod's own egress deny would hide
            // an ingress rule that is too wide).
            Source::Pod("kube-system", DNS_POD, "probe", "pod of another namespace without policies (kube-system)"),
            vec![allow(&pub443), deny(&a_rcon), deny(&b_rcon), deny(&a_game)],
        ),
        (Source::Host(host.to_string()), vec![allow(&a_game), deny(&b_game), deny(&a_rcon)]),
    ];
    let t_probe = Instant::now();
    let results: Vec<Result<Vec<Outcome>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = sources.iter().map(|(src, arrows)| scope.spawn(move || probe(k, src, arrows))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("probe thread panicked"))))
            .collect()
    });
    let mut outcomes = Vec::new();
    for r in results {
        outcomes.extend(r?);
    }
    let verdict = judge(&outcomes);
    for o in &outcomes {
        println!(
            "e2e: {}   netpol: {} → {} ({}:{}): {} ({})",
            if o.want == o.open() { "ok" } else { "FAIL" },
            o.from,
            o.target.name,
            o.target.ip,
            o.target.port,
            if o.want { "allowed" } else { "denied" },
            o.got
        );
    }
    verdict?;
    println!("e2e: ok   netpol: {} arrows as the policies say, probed in {:.0?}", outcomes.len(), t_probe.elapsed());

    // The real backup Job reached its server's RCON and the store.
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let phase = k.run(&["get", "backup", "np-snap", "-n", NS_A, "-o", "jsonpath={.status.phase}"])?;
        if phase == "Completed" {
            break;
        }
        if phase == "Failed" || Instant::now() > deadline {
            bail!(
                "BackupSnapshot {NS_A}/np-snap is {phase:?}: {}\noperator log:\n{}",
                k.run(&["get", "backup", "np-snap", "-n", NS_A, "-o", "jsonpath={.status.conditions}"])?,
                tail(&k.operator_log(), 30)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let log = k.run(&["logs", "alpha-0", "-n", NS_A, "-c", "minecraft"])?;
    let rcon: Vec<&str> = log.lines().filter_map(|l| l.split("[RCON] ").nth(1)).collect();
    let mut it = rcon.iter();
    if !["save-off", "save-all flush", "save-on"].iter().all(|w| it.any(|c| c == w)) {
        bail!("tenant A's backup Job did not drive its server over RCON: {rcon:?}");
    }
    println!(
        "e2e: ok   netpol: tenant A's backup Job → its server's RCON (save-off, save-all flush, save-on) and → the S3 store (A's allowedEgress): snapshot Completed"
    );
    Ok(())
}

/// Removes what the scenario created (the Tenants' namespaces with their
/// servers, volumes' claims and probe pods; the Sku; the pods elsewhere).
fn cleanup(k: &Kube) -> Result<()> {
    let t0 = Instant::now();
    for pod in [OPERATOR_PROBE, GATEWAY_PROBE, PLAIN_PROBE] {
        let _ = k.run(&["delete", "pod", pod, "-n", crate::e2e::NS, "--ignore-not-found", "--wait=false"]);
    }
    let _ = k.run(&["delete", "pod", DNS_POD, "-n", "kube-system", "--ignore-not-found", "--wait=false"]);
    let _ = k.run(&["delete", "mcs", "--all", "-n", NS_A, "--ignore-not-found", "--wait=false"]);
    let _ = k.run(&["delete", "mcs", "--all", "-n", NS_B, "--ignore-not-found", "--wait=false"]);
    k.run(&["delete", "tenant", TENANT_A, TENANT_B, "--ignore-not-found", "--timeout=90s"])?;
    k.run(&["delete", "namespace", NS_A, NS_B, "--ignore-not-found", "--timeout=120s"])?;
    k.run(&["delete", "sku", SKU, "--ignore-not-found", "--timeout=60s"])?;
    println!("e2e: ok   netpol: cleaned up in {:.0?}", t0.elapsed());
    Ok(())
}

#[derive(Clone, Debug)]
struct Target {
    name: String,
    ip: String,
    port: u16,
}

enum Source {
    /// namespace, pod, container, what it stands for
    Pod(&'static str, &'static str, &'static str, &'static str),
    /// This machine, from its address on the node's veth.
    Host(String),
}

struct Outcome {
    from: String,
    target: Target,
    want: bool,
    /// `open`, or why the connect failed.
    got: String,
}

impl Outcome {
    fn open(&self) -> bool {
        self.got == "open"
    }
}

/// Tries every arrow of one source: allowed ones until they connect (up to
/// [`ALLOWED_DEADLINE`]), then denied ones once each.
fn probe(k: &Kube, src: &Source, arrows: &[(Target, bool)]) -> Result<Vec<Outcome>> {
    match src {
        Source::Pod(ns, pod, container, what) => {
            let list: Vec<serde_json::Value> = arrows
                .iter()
                .map(|(t, want)| serde_json::json!({"host": t.ip, "port": t.port, "want": want}))
                .collect();
            let args = serde_json::Value::Array(list).to_string();
            let out = k.run(&[
                "exec",
                pod,
                "-n",
                ns,
                "-c",
                container,
                "--",
                "node",
                "-e",
                PROBE,
                &args,
                &ALLOWED_DEADLINE.as_millis().to_string(),
                &DENIED_TIMEOUT_MS.to_string(),
            ])?;
            let got: Vec<String> =
                serde_json::from_str(out.trim()).with_context(|| format!("probe output of {ns}/{pod}: {out:?}"))?;
            if got.len() != arrows.len() {
                bail!("{ns}/{pod}: {} results for {} arrows", got.len(), arrows.len());
            }
            Ok(arrows
                .iter()
                .zip(got)
                .map(|((t, want), got)| Outcome {
                    from: format!("{what} ({ns}/{pod})"),
                    target: t.clone(),
                    want: *want,
                    got,
                })
                .collect())
        }
        Source::Host(ip) => {
            let connect = |t: &Target, timeout: Duration| -> String {
                let addr: SocketAddr = match format!("{}:{}", t.ip, t.port).parse() {
                    Ok(a) => a,
                    Err(e) => return e.to_string(),
                };
                match TcpStream::connect_timeout(&addr, timeout) {
                    Ok(_) => "open".into(),
                    Err(e) => e.kind().to_string(),
                }
            };
            let mut out = Vec::new();
            for (t, want) in arrows.iter().filter(|(_, w)| *w).chain(arrows.iter().filter(|(_, w)| !*w)) {
                let got = if *want {
                    let deadline = Instant::now() + ALLOWED_DEADLINE;
                    loop {
                        let g = connect(t, Duration::from_millis(DENIED_TIMEOUT_MS));
                        if g == "open" || Instant::now() > deadline {
                            break g;
                        }
                        std::thread::sleep(Duration::from_millis(500));
                    }
                } else {
                    connect(t, Duration::from_millis(DENIED_TIMEOUT_MS))
                };
                out.push(Outcome {
                    from: format!("this machine ({ip}, an address in A's allowedIngressCidrs only)"),
                    target: t.clone(),
                    want: *want,
                    got,
                });
            }
            Ok(out)
        }
    }
}

/// The matrix's verdict: every arrow as wanted, and every denial backed by
/// a working probe (its source connected somewhere) and a listening
/// destination (another source connected to it).
fn judge(outcomes: &[Outcome]) -> Result<()> {
    let working: BTreeSet<&str> = outcomes.iter().filter(|o| o.open()).map(|o| o.from.as_str()).collect();
    let listening: BTreeSet<(&str, u16)> =
        outcomes.iter().filter(|o| o.open()).map(|o| (o.target.ip.as_str(), o.target.port)).collect();
    let mut wrong = Vec::new();
    for o in outcomes {
        let arrow = format!("{} → {} ({}:{})", o.from, o.target.name, o.target.ip, o.target.port);
        if o.want && !o.open() {
            wrong.push(format!("{arrow}: should connect, got {}", o.got));
        } else if !o.want && o.open() {
            wrong.push(format!("{arrow}: should be refused by the policies, but connected"));
        } else if !o.want && !working.contains(o.from.as_str()) {
            wrong.push(format!("{arrow}: refused, but this probe connected nowhere (a broken probe proves nothing)"));
        } else if !o.want && !listening.contains(&(o.target.ip.as_str(), o.target.port)) {
            wrong.push(format!("{arrow}: refused, but nothing ever connected there (no listener proves nothing)"));
        }
    }
    if !wrong.is_empty() {
        bail!("the NetworkPolicy matrix failed on {} arrow(s):\n{}", wrong.len(), wrong.join("\n"));
    }
    Ok(())
}

/// Run in a pod: `node -e PROBE <targets json> <allowed deadline ms>
/// <denied timeout ms>`; prints one result per target, in order.
const PROBE: &str = r#"
const net = require('net');
const [targets, deadlineMs, timeoutMs] = [JSON.parse(process.argv[1]), +process.argv[2], +process.argv[3]];
const once = (host, port) => new Promise((done) => {
  const s = net.connect({ host, port });
  const t = setTimeout(() => { s.destroy(); done('timeout'); }, timeoutMs);
  s.on('connect', () => { clearTimeout(t); s.destroy(); done('open'); });
  s.on('error', (e) => { clearTimeout(t); done(e.code || e.message); });
});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
(async () => {
  const out = new Array(targets.length);
  const deadline = Date.now() + deadlineMs;
  await Promise.all(targets.map(async (t, i) => {
    if (!t.want) return;
    let got;
    do { got = await once(t.host, t.port); if (got === 'open') break; await sleep(500); } while (Date.now() < deadline);
    out[i] = got;
  }));
  await Promise.all(targets.map(async (t, i) => { if (!t.want) out[i] = await once(t.host, t.port); }));
  console.log(JSON.stringify(out));
})();
"#;

/// Run in the node's network namespace: accepts and closes connections on
/// ports 80, 443 and 8443 of the address in argv[1].
const PUBLIC_LISTENER: &str = r#"
import socket, sys, threading
def serve(port):
    s = socket.create_server((sys.argv[1], port))
    while True:
        s.accept()[0].close()
for port in (80, 443, 8443):
    threading.Thread(target=serve, args=(port,), daemon=True).start()
threading.Event().wait()
"#;
