//! The player gateway on the real node (issue 32), as players meet it: the
//! chart's gateway pods, and two tenants' servers reached through ONE
//! address — the gateway Service's node port on the real node — by the
//! hostname in the client's handshake.
//!
//! Asserted: both servers list and join (npm `minecraft-protocol` client)
//! by their default hostnames `<server>.<namespace>.<base domain>`, and a
//! custom hostname reaches its holder; the same hostname asked for later by
//! the other tenant gets a `Hostname` condition (HostnameConflict) and its
//! players still reach the first; a custom hostname outside the tenant's
//! domains gets HostnameNotAllowed and routes nowhere; one gateway pod's
//! container killed (SIGKILL): once the Service dropped it, every new
//! connection goes through the other; a connection storm from this machine
//! is refused by the per-source rate limit (counted by the gateway's
//! metrics) while a player from another address still connects. Then
//! sleep and wake on B's server (`e2e_sleep`).
//!
//! The Service's `externalTrafficPolicy: Local` (set in the e2e's values)
//! keeps the client's address, so the rate limit sees this machine
//! (the host end of the node's veth) and the node itself as two sources.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cluster::Cluster;
use crate::e2e::{Kube, NS, retry, tail};

/// The base domain of the e2e's chart values (`gateway.baseDomain`).
pub const BASE_DOMAIN: &str = "play.e2e.test";
/// The e2e's `gateway.rateLimit`: the chart's defaults.
pub const RATE_BURST: u32 = 20;
pub const RATE_INTERVAL_MS: u32 = 200;

const TENANT_A: &str = "gw-alpha";
const NS_A: &str = "tenant-gw-alpha";
const TENANT_B: &str = "gw-beta";
const NS_B: &str = "tenant-gw-beta";
const SKU: &str = "gateway-node";
const SERVER: &str = "lobby";
/// Assigned by the admin to both tenants: the first claim of a name wins.
const SHARED_DOMAIN: &str = "shared.e2e.test";
/// Assigned to tenant A only.
const ALPHA_DOMAIN: &str = "alpha.e2e.test";
const CLAIMED: &str = "mc.shared.e2e.test";
const OUTSIDE: &str = "www.alpha.e2e.test";
const MOTD_A: &str = "gateway alpha lobby";
const MOTD_B: &str = "gateway beta lobby";
/// The gateway's answer to a hostname no server holds (its built-in text).
const UNKNOWN_HOST: &str = "No server has this address";
const RATE_LIMITED: &str = "Too many connections";
const GATEWAY_PODS: &str = "app.kubernetes.io/name=craftplane,app.kubernetes.io/component=gateway";

pub struct Setup<'a> {
    pub kube: &'a Kube,
    pub cluster: &'a Cluster,
    pub node_modules: &'a Path,
    /// Waits until the operator's leader may be killed (its metrics checked).
    pub before_leader_kill: &'a (dyn Fn() + Sync),
}

pub fn run(s: &Setup) -> Result<()> {
    let t0 = Instant::now();
    println!(
        "e2e: gateway: tenants {TENANT_A} and {TENANT_B}, a server each on the real node, players through one address"
    );
    let result = scenario(s);
    if result.is_err() {
        let k = s.kube;
        let _ = k.command(&["get", "pods,endpointslices", "-n", NS, "-o", "wide"]).status();
        let _ = k.command(&["get", "mcs", "-A", "-o", "wide"]).status();
        println!("e2e: gateway log:\n{}", tail(&gateway_log(k), 40));
    }
    let cleaned = cleanup(s.kube);
    result?;
    cleaned?;
    println!("e2e: ok   gateway: passed and cleaned up in {:.0?}", t0.elapsed());
    Ok(())
}

fn gateway_log(k: &Kube) -> String {
    k.run(&["logs", "-n", NS, "-l", GATEWAY_PODS, "--tail=60", "--prefix"]).unwrap_or_default()
}

fn cleanup(k: &Kube) -> Result<()> {
    let _ = k.run(&["delete", "mcs", "--all", "-n", NS_A, "--ignore-not-found", "--wait=false"]);
    let _ = k.run(&["delete", "mcs", "--all", "-n", NS_B, "--ignore-not-found", "--wait=false"]);
    k.run(&["delete", "tenant", TENANT_A, TENANT_B, "--ignore-not-found", "--timeout=90s"])?;
    k.run(&["delete", "namespace", NS_A, NS_B, "--ignore-not-found", "--timeout=120s"])?;
    k.run(&["delete", "sku", SKU, "--ignore-not-found", "--timeout=60s"])?;
    Ok(())
}

fn default_host(ns: &str) -> String {
    format!("{SERVER}.{ns}.{BASE_DOMAIN}")
}

/// A gateway pod: name, Ready, restarts, container id.
struct GatewayPod {
    name: String,
    ready: bool,
    restarts: u64,
    container: String,
}

fn gateway_pods(k: &Kube) -> Result<Vec<GatewayPod>> {
    let v: serde_json::Value =
        serde_json::from_str(&k.run(&["get", "pods", "-n", NS, "-l", GATEWAY_PODS, "-o", "json"])?)?;
    let mut pods = Vec::new();
    for p in v["items"].as_array().context("pods")? {
        if p["metadata"]["deletionTimestamp"].is_string() {
            continue;
        }
        if p["spec"]["nodeName"] != crate::node::NODE_NAME {
            bail!("gateway pod {} on {}, not the real node", p["metadata"]["name"], p["spec"]["nodeName"]);
        }
        let cs = &p["status"]["containerStatuses"][0];
        pods.push(GatewayPod {
            name: p["metadata"]["name"].as_str().unwrap_or_default().to_string(),
            ready: cs["ready"].as_bool().unwrap_or(false),
            restarts: cs["restartCount"].as_u64().unwrap_or(0),
            container: cs["containerID"].as_str().unwrap_or_default().trim_start_matches("containerd://").to_string(),
        });
    }
    Ok(pods)
}

/// Sum of a metric over every gateway pod (scraped through the API server's
/// pod proxy).
fn gateway_metric(k: &Kube, prefix: &str) -> Result<f64> {
    let mut sum = 0.0;
    for p in gateway_pods(k)? {
        let m = k.run(&["get", "--raw", &format!("/api/v1/namespaces/{NS}/pods/{}:8080/proxy/metrics", p.name)])?;
        sum += crate::e2e::metric_sum(&m, prefix);
    }
    Ok(sum)
}

fn scenario(s: &Setup) -> Result<()> {
    let k = s.kube;
    let node = s.cluster.node().context("the gateway scenario needs the real node")?;

    // --- the chart's gateway: two Ready pods on the real node, one address.
    let pods = gateway_pods(k)?;
    if pods.len() != 2 || pods.iter().any(|p| !p.ready) {
        bail!("expected 2 Ready gateway pods, found {:?}", pods.iter().map(|p| (&p.name, p.ready)).collect::<Vec<_>>());
    }
    let node_port: u16 = k
        .run(&["get", "service", "craftplane-gateway", "-n", NS, "-o", "jsonpath={.spec.ports[0].nodePort}"])?
        .parse()
        .context("the gateway Service's node port")?;
    let gateway: SocketAddr = format!("{}:{node_port}", node.node_ip()).parse()?;
    println!(
        "e2e: ok   gateway: 2 pods Ready on {} ({}), players' address {gateway} (Service craftplane-gateway, NodePort)",
        crate::node::NODE_NAME,
        pods.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
    );

    // --- two tenants, a server each; A claims a custom name first.
    let image = crate::images::test_server_image();
    let image_repo = image.rsplit_once(':').map(|(r, _)| r.to_string()).unwrap_or_default();
    let file = s.cluster.dir.join("gateway-objects.yaml");
    let server = |ns: &str, motd: &str, hostnames: &str| {
        format!(
            "apiVersion: craftplane.io/v1alpha1
kind: MinecraftServer
metadata: {{name: {SERVER}, namespace: {ns}}}
spec:
  sku: {SKU}
  eula: true
  type: PAPER
  version: \"1.21.4\"
  image: {image}
  motd: {motd}
  deletionPolicy: Delete
  hostnames: [{hostnames}]
---
"
        )
    };
    std::fs::write(
        &file,
        format!(
            "apiVersion: craftplane.io/v1alpha1
kind: Sku
metadata: {{name: {SKU}}}
spec:
  resources: {{cpu: 100m, memory: 512Mi, storage: 1Gi}}
  maxPlayers: 6
  storageClassName: {sc}
  allowedImages: [{image_repo}]
  placement:
    nodeSelector: {{{l}: {v}}}
    tolerations: [{{key: {t}, operator: Exists, effect: NoSchedule}}]
---
apiVersion: craftplane.io/v1alpha1
kind: Tenant
metadata: {{name: {TENANT_A}}}
spec:
  owners: [{{kind: User, name: gw-alpha-owner}}]
  allowedSkus: [{SKU}]
  hostnameDomains: [{SHARED_DOMAIN}, {ALPHA_DOMAIN}]
---
apiVersion: craftplane.io/v1alpha1
kind: Tenant
metadata: {{name: {TENANT_B}}}
spec:
  owners: [{{kind: User, name: gw-beta-owner}}]
  allowedSkus: [{SKU}]
  hostnameDomains: [{SHARED_DOMAIN}]
",
            sc = crate::node::STORAGE_CLASS,
            l = crate::node::LABEL.0,
            v = crate::node::LABEL.1,
            t = crate::node::TAINT_KEY,
        ),
    )?;
    k.run(&["apply", "-f", &file.display().to_string()])?;
    for ns in [NS_A, NS_B] {
        retry(Duration::from_secs(60), || {
            k.run(&["get", "networkpolicy", "craftplane-gateway", "-n", ns, "-o", "name"])
        })
        .with_context(|| format!("the Tenant's NetworkPolicies in {ns}"))?;
    }
    let servers = s.cluster.dir.join("gateway-servers.yaml");
    std::fs::write(&servers, server(NS_A, MOTD_A, CLAIMED) + &server(NS_B, MOTD_B, ""))?;
    k.run(&["apply", "-f", &servers.display().to_string()])?;
    let t_up = Instant::now();
    for ns in [NS_A, NS_B] {
        let phase = [
            "get",
            "mcs",
            SERVER,
            "-n",
            ns,
            "-o",
            "jsonpath={.status.phase}/{.status.conditions[?(@.type==\"Ready\")].status}",
        ];
        if let Err(e) = k.wait_for(&phase, "Running/True", Duration::from_secs(240)) {
            let _ = k.command(&["describe", "pod", &format!("{SERVER}-0"), "-n", ns]).status();
            bail!(
                "MinecraftServer {ns}/{SERVER} not Running/Ready: {e:#}\noperator log:\n{}",
                tail(&k.operator_log(), 30)
            );
        }
    }
    let held =
        |ns: &str| k.run(&["get", "mcs", SERVER, "-n", ns, "-o", "jsonpath={.status.hostnames}"]).unwrap_or_default();
    retry(Duration::from_secs(60), || {
        let a = held(NS_A);
        if !a.contains(CLAIMED) || !a.contains(&default_host(NS_A)) || !held(NS_B).contains(&default_host(NS_B)) {
            bail!("status.hostnames: {NS_A} {a}, {NS_B} {}", held(NS_B));
        }
        Ok(())
    })?;
    let address = k.run(&["get", "mcs", SERVER, "-n", NS_A, "-o", "jsonpath={.status.address}"])?;
    println!(
        "e2e: ok   gateway: both servers Running in {:.0?}; {NS_A}/{SERVER} holds {}, status.address {address:?}",
        t_up.elapsed(),
        held(NS_A)
    );

    // --- one address, routed by hostname (this machine's quick pings, then
    // the independent npm client: list and join).
    let ping = |host: &str| -> Result<String> {
        let st = crate::slp::status(gateway, host, node_port, Duration::from_secs(3))?;
        Ok(crate::slp::motd(&st))
    };
    let expect_motd = |host: &str, want: &str, timeout: Duration| -> Result<()> {
        retry(timeout, || {
            let got = ping(host)?;
            if !got.contains(want) {
                bail!("{host} through the gateway answered {got:?}, expected {want:?}");
            }
            Ok(())
        })
    };
    let t_route = Instant::now();
    expect_motd(&default_host(NS_A), MOTD_A, Duration::from_secs(60))?;
    expect_motd(&default_host(NS_B), MOTD_B, Duration::from_secs(60))?;
    expect_motd(CLAIMED, MOTD_A, Duration::from_secs(30))?;
    let odd = format!("{}.", default_host(NS_B).to_uppercase());
    expect_motd(&odd, MOTD_B, Duration::from_secs(5))?;
    println!(
        "e2e: ok   gateway: {} → {MOTD_A:?}, {} and {odd:?} → {MOTD_B:?}, {CLAIMED} → {MOTD_A:?} through {gateway} (routes ready {:.1?} after the servers)",
        default_host(NS_A),
        default_host(NS_B),
        t_route.elapsed()
    );
    let client = |mode: &str, host: &str, user: &str, from_node: bool| -> Result<serde_json::Value> {
        let script = crate::project_root().join("tests/peers/gateway-client.js");
        let mut cmd = if from_node {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{}", node.netns())).arg("node");
            c
        } else {
            Command::new("node")
        };
        let out = cmd
            .arg(&script)
            .args([mode, &node_port.to_string(), host, "1.21.4", user])
            .env("NODE_PATH", s.node_modules)
            .env("GATEWAY_HOST", node.node_ip())
            // The servers have 100m of CPU (the node's 2 CPUs hold every
            // scenario): a first join, which generates the spawn chunks,
            // can take longer than the client's default 10 s.
            .env("CLIENT_TIMEOUT_MS", "30000")
            .output()
            .context("run tests/peers/gateway-client.js")?;
        let line = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(line.trim())
            .with_context(|| format!("gateway-client {mode} {host}: {line} {}", String::from_utf8_lossy(&out.stderr)))
    };
    for (ns, motd, user) in [(NS_A, MOTD_A, "gwalice"), (NS_B, MOTD_B, "gwbob")] {
        let host = default_host(ns);
        let listed = client("ping", &host, user, false)?;
        let text = listed["ping"]["description"].to_string();
        if !text.contains(motd) {
            bail!("the npm client's ping of {host} through the gateway: {listed}");
        }
        let joined = client("join", &host, user, false)?;
        if joined["joined"] != true {
            bail!("{user} could not join {host} through the gateway: {joined}");
        }
        let log = retry(Duration::from_secs(10), || {
            let log = k.run(&["logs", &format!("{SERVER}-0"), "-n", ns, "-c", "minecraft"])?;
            if !log.contains(user) {
                bail!("{ns}/{SERVER}'s log does not show {user}");
            }
            Ok(log)
        })?;
        let _ = log;
    }
    println!(
        "e2e: ok   gateway: the npm minecraft-protocol client listed and joined both servers by hostname through {gateway} (gwalice in {NS_A}, gwbob in {NS_B})"
    );

    // --- the other tenant asks for the held name: a condition, no traffic.
    let patch = |hosts: &str| {
        k.run(&[
            "patch",
            "mcs",
            SERVER,
            "-n",
            NS_B,
            "--type=merge",
            "-p",
            &format!("{{\"spec\":{{\"hostnames\":[{hosts}]}}}}"),
        ])
    };
    let hostname_condition = [
        "get",
        "mcs",
        SERVER,
        "-n",
        NS_B,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Hostname\")].status}/{.status.conditions[?(@.type==\"Hostname\")].reason}",
    ];
    patch(&format!("\"{CLAIMED}\""))?;
    k.expect(
        &format!("gateway: {NS_B}/{SERVER} asking for {CLAIMED} (held by {NS_A})"),
        &hostname_condition,
        "False/HostnameConflict",
    )?;
    for _ in 0..5 {
        expect_motd(CLAIMED, MOTD_A, Duration::from_secs(1))?;
    }
    if held(NS_B).contains(CLAIMED) {
        bail!("{NS_B}/{SERVER} holds {CLAIMED}: {}", held(NS_B));
    }
    println!("e2e: ok   gateway: {CLAIMED} still reaches {NS_A}/{SERVER} (5 of 5 pings) while {NS_B} asks for it");
    // --- a name outside the tenant's domains: refused, routed nowhere.
    patch(&format!("\"{OUTSIDE}\""))?;
    k.expect(
        &format!("gateway: {NS_B}/{SERVER} asking for {OUTSIDE} (outside its hostnameDomains)"),
        &hostname_condition,
        "False/HostnameNotAllowed",
    )?;
    let got = ping(OUTSIDE)?;
    if !got.contains(UNKNOWN_HOST) {
        bail!("{OUTSIDE} through the gateway answered {got:?}, expected the unknown-host message");
    }
    let refused = client("login", OUTSIDE, "gwmallory", false)?;
    if !refused["kicked"].to_string().contains(UNKNOWN_HOST) {
        bail!("a login to {OUTSIDE} through the gateway: {refused}, expected a disconnect saying {UNKNOWN_HOST:?}");
    }
    println!("e2e: ok   gateway: {OUTSIDE} routes nowhere (status and login answered {UNKNOWN_HOST:?})");

    // --- one gateway pod killed: new connections go through the other.
    failover(k, node.ctr(), &|| {
        ping(&default_host(NS_A)).and_then(|m| if m.contains(MOTD_A) { Ok(()) } else { bail!("answered {m:?}") })
    })?;

    // --- a storm from this machine, a player from the node itself.
    storm(k, gateway, node_port, &|| {
        let v = client("ping", &default_host(NS_A), "gwcarol", true)?;
        if !v["ping"]["description"].to_string().contains(MOTD_A) {
            bail!("the ping from the node's address during the storm: {v}");
        }
        Ok(())
    })?;

    // --- sleep and wake (issue 33), on B's server, players from the node.
    let timed_client = |mode: &str, host: &str, user: &str, timeout: Duration| -> Result<serde_json::Value> {
        let script = crate::project_root().join("tests/peers/gateway-client.js");
        let out = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", node.netns()))
            .arg("node")
            .arg(&script)
            .args([mode, &node_port.to_string(), host, "1.21.4", user])
            .env("NODE_PATH", s.node_modules)
            .env("GATEWAY_HOST", node.node_ip())
            .env("CLIENT_TIMEOUT_MS", timeout.as_millis().to_string())
            .output()
            .context("run tests/peers/gateway-client.js")?;
        let line = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(line.trim())
            .with_context(|| format!("gateway-client {mode} {host}: {line} {}", String::from_utf8_lossy(&out.stderr)))
    };
    let kill = |container: &str| -> Result<()> {
        let out = node.ctr().args(["tasks", "kill", "--signal", "SIGKILL", container]).output()?;
        if !out.status.success() {
            bail!("ctr tasks kill {container}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    };
    crate::e2e_sleep::run(&crate::e2e_sleep::Env {
        kube: k,
        ns: NS_B,
        server: SERVER,
        host: default_host(NS_B),
        client: &timed_client,
        kill: &kill,
        before_leader_kill: s.before_leader_kill,
    })
}

/// SIGKILLs one gateway pod's container; pings every 200 ms until the
/// Service stopped sending to it (its endpoint not ready, or it is back and
/// Ready), then 20 pings in a row must all succeed.
fn failover(k: &Kube, mut ctr: Command, ping: &dyn Fn() -> Result<()>) -> Result<()> {
    let pods = gateway_pods(k)?;
    let victim = pods.first().context("a gateway pod")?;
    let out = ctr.args(["tasks", "kill", "--signal", "SIGKILL", &victim.container]).output()?;
    if !out.status.success() {
        bail!("ctr tasks kill {}: {}", victim.container, String::from_utf8_lossy(&out.stderr));
    }
    let t_kill = Instant::now();
    let dropped = || -> Result<bool> {
        let v: serde_json::Value = serde_json::from_str(&k.run(&[
            "get",
            "endpointslices",
            "-n",
            NS,
            "-l",
            "kubernetes.io/service-name=craftplane-gateway",
            "-o",
            "json",
        ])?)?;
        let mine = v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
            .find(|e| e["targetRef"]["name"] == victim.name.as_str());
        let not_ready = mine.as_ref().is_none_or(|e| e["conditions"]["ready"] == false);
        let back = gateway_pods(k)?.iter().any(|p| p.name == victim.name && p.restarts > victim.restarts && p.ready);
        Ok(not_ready || back)
    };
    let (mut tried, mut failed) = (0, 0);
    let mut first_error = String::new();
    let deadline = t_kill + Duration::from_secs(60);
    while !dropped()? {
        if Instant::now() > deadline {
            bail!("the gateway Service still sends to {} 60 s after its container was killed", victim.name);
        }
        tried += 1;
        if let Err(e) = ping() {
            failed += 1;
            if first_error.is_empty() {
                first_error = format!("{e:#}");
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let t_dropped = t_kill.elapsed();
    for i in 0..20 {
        ping().with_context(|| {
            format!("connection {} of 20 after the Service dropped the killed gateway pod {}", i + 1, victim.name)
        })?;
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "e2e: ok   gateway: {}'s container killed; the Service dropped it after {t_dropped:.1?} ({failed} of {tried} pings failed before{}); then 20 of 20 new connections through the other pod",
        victim.name,
        if first_error.is_empty() { String::new() } else { format!(", first: {first_error}") }
    );
    retry(Duration::from_secs(90), || {
        let p = gateway_pods(k)?;
        if p.iter().any(|p| p.name == victim.name && p.restarts > victim.restarts && p.ready)
            && p.iter().all(|p| p.ready)
        {
            Ok(())
        } else {
            bail!("{} not restarted and Ready yet", victim.name)
        }
    })?;
    println!("e2e: ok   gateway: {} restarted by the kubelet and Ready again", victim.name);
    Ok(())
}

/// Four threads on this machine open status connections as fast as they
/// can for 4 s; a second into it, a player on the node's own address pings.
/// Asserted: the storm is refused beyond what the two pods' buckets allow,
/// each refusal is counted in `craftplane_gateway_refusals_total`, and the
/// other address is answered by the server.
fn storm(k: &Kube, gateway: SocketAddr, port: u16, other: &dyn Fn() -> Result<()>) -> Result<()> {
    let metric = "craftplane_gateway_refusals_total{reason=\"RateLimited\"}";
    let before = gateway_metric(k, metric)?;
    let duration = Duration::from_secs(4);
    let stop = AtomicBool::new(false);
    let host = default_host(NS_A);
    let (counts, other_result) = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    let (mut ok, mut limited, mut errors) = (0u64, 0u64, 0u64);
                    let t0 = Instant::now();
                    while t0.elapsed() < duration && !stop.load(Ordering::Relaxed) {
                        match crate::slp::status(gateway, &host, port, Duration::from_secs(2)) {
                            Ok(st) if crate::slp::motd(&st).contains(RATE_LIMITED) => limited += 1,
                            Ok(st) if crate::slp::motd(&st).contains(MOTD_A) => ok += 1,
                            _ => errors += 1,
                        }
                    }
                    (ok, limited, errors)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(1));
        let other_result = other();
        let counts = workers
            .into_iter()
            .map(|w| w.join().unwrap_or((0, 0, 0)))
            .fold((0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2));
        (counts, other_result)
    });
    let (ok, limited, errors) = counts;
    other_result.context("a player from another address during the storm")?;
    let secs = duration.as_secs_f64();
    // Two pods, each a bucket of RATE_BURST refilled every interval.
    let allowed = 2.0 * (f64::from(RATE_BURST) + secs * 1000.0 / f64::from(RATE_INTERVAL_MS)) + 4.0;
    if limited == 0 || ok as f64 > allowed {
        bail!(
            "storm from this machine: {ok} answered by the server, {limited} refused, {errors} errors: at most {allowed:.0} should have passed"
        );
    }
    let counted = retry(Duration::from_secs(10), || {
        let after = gateway_metric(k, metric)?;
        if after - before != limited as f64 {
            bail!("{metric} grew by {}, the storm saw {limited} refusals", after - before);
        }
        Ok(after - before)
    })?;
    println!(
        "e2e: ok   gateway: a storm of {} connections in {secs:.0} s from this machine: {ok} reached the server, {limited} refused as rate limited ({metric} +{counted}), {errors} errors; a player on the node's address got through meanwhile",
        ok + limited + errors
    );
    Ok(())
}
