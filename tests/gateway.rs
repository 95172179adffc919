//! The gateway (`craftplane gateway`, run as a host process) against the
//! real API server: routes from the MinecraftServers' `status.hostnames`,
//! ready addresses from the game EndpointSlices, real npm clients and
//! servers on the host.
//!
//! kwok pods have fake IPs, so the test writes what the operator and the
//! EndpointSlice controller would: each server's status (the hostnames the
//! operator granted) and an EndpointSlice labelled like a game Service's,
//! whose ready address is an npm server on this host's non-loopback
//! address (EndpointSlices refuse loopback). The gateway runs the same
//! code path as in a cluster.

mod common;

use std::net::{IpAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::gateway::{Gateway, host_address};
use common::operator::SHARD_LABEL;
use common::peers::SlpPeer;
use craftplane::api::MinecraftServer;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

struct World {
    admin: Client,
    shard: String,
    namespaces: Vec<String>,
}

impl World {
    async fn new() -> World {
        let admin = common::client().await;
        common::ensure_crds(&admin).await;
        World { admin, shard: format!("gw-{}", common::unique_suffix()), namespaces: vec![] }
    }

    async fn namespace(&mut self, suffix: &str) -> String {
        let name = format!("{}-{suffix}", self.shard);
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        Api::<Namespace>::all(self.admin.clone()).create(&PostParams::default(), &ns).await.expect("namespace");
        self.namespaces.push(name.clone());
        name
    }

    /// A server whose status holds `granted` (what the operator decided),
    /// asking for `wanted`, reachable at `peer` (ready) or nowhere.
    async fn server(&self, ns: &str, name: &str, wanted: &[&str], granted: &[&str], peer: Option<(IpAddr, u16)>) {
        self.server_on("none", ns, name, wanted, granted, peer).await
    }

    async fn server_on(
        &self,
        sku: &str,
        ns: &str,
        name: &str,
        wanted: &[&str],
        granted: &[&str],
        peer: Option<(IpAddr, u16)>,
    ) {
        let api: Api<MinecraftServer> = Api::namespaced(self.admin.clone(), ns);
        let s: MinecraftServer = serde_json::from_value(json!({
            "apiVersion": "craftplane.io/v1alpha1", "kind": "MinecraftServer",
            "metadata": {"name": name, "labels": {SHARD_LABEL: self.shard}},
            "spec": {"sku": sku, "eula": true, "hostnames": wanted},
        }))
        .unwrap();
        api.create(&PostParams::default(), &s).await.expect("create server");
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(json!({"status": {"hostnames": granted}})))
            .await
            .expect("status");
        let Some((ip, port)) = peer else { return };
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": format!("{name}-game"), "labels": {
                "kubernetes.io/service-name": name,
                "app.kubernetes.io/managed-by": "craftplane",
                "app.kubernetes.io/component": "game",
                "craftplane.io/server": name,
            }},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ip.to_string()], "conditions": {"ready": true}}],
            "ports": [{"name": "minecraft", "port": port, "protocol": "TCP"}],
        }))
        .unwrap();
        Api::<EndpointSlice>::namespaced(self.admin.clone(), ns)
            .create(&PostParams::default(), &slice)
            .await
            .expect("create EndpointSlice");
    }

    async fn cleanup(self) {
        for ns in &self.namespaces {
            let _ = Api::<Namespace>::all(self.admin.clone()).delete(ns, &DeleteParams::default()).await;
        }
    }
}

/// Players online in a ping answer (tells the two npm servers apart).
fn online(v: &Value) -> Option<i64> {
    v["ping"]["players"]["online"].as_i64()
}

#[tokio::test]
async fn gateway_routes_by_granted_hostname_only() {
    let mut w = World::new().await;
    let ip = host_address();
    let (peer_a, peer_b) =
        (SlpPeer::start_on(&ip.to_string(), 3, 30, "1.20.4"), SlpPeer::start_on(&ip.to_string(), 7, 70, "1.20.4"));
    // A's namespace sorts after B's: only A's earlier creation (whole
    // seconds) makes it the first claimant.
    let (ns_a, ns_b) = (w.namespace("z").await, w.namespace("b").await);
    let base = format!("{}.play.test", w.shard);
    let default_a = format!("survival.{ns_a}.{base}");
    let default_b = format!("survival.{ns_b}.{base}");
    let custom = format!("mc.{}.example", w.shard);
    let forged = format!("both.{}.example", w.shard);
    w.server(&ns_a, "survival", &[&custom, &forged], &[&custom, &forged, &default_a], Some((ip, peer_a.port))).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Created later: asks for A's name (not granted) and its status names
    // another one A holds (a stale or forged status).
    w.server(&ns_b, "survival", &[&custom, &forged], &[&forged, &default_b], Some((ip, peer_b.port))).await;
    w.server(&ns_b, "stopped", &[], &[&format!("stopped.{ns_b}.{base}")], None).await;

    let gw = Gateway::start(
        common::kubeconfig_path(),
        &[
            &format!("--server-selector={SHARD_LABEL}={}", w.shard),
            &format!("--base-domain={base}"),
            "--unknown-host-message=No such server here (test)",
        ],
    );
    gw.wait_ready().await;

    // Each default hostname reaches its own server (as the player types it).
    let a = gw.client("ping", &default_a.to_uppercase()).await;
    assert_eq!(online(&a), Some(3), "{a}");
    let b = gw.client("ping", &format!("{default_b}.")).await;
    assert_eq!(online(&b), Some(7), "{b}");
    // A custom hostname reaches its holder; B's claim in spec changes nothing.
    assert_eq!(online(&gw.client("ping", &custom).await), Some(3));
    // A hostname both statuses name goes to the first claimant only.
    for _ in 0..3 {
        assert_eq!(online(&gw.client("ping", &forged).await), Some(3));
    }
    // Unknown: the admin's message, as a status and as a login refusal.
    let unknown = format!("nobody.{base}");
    let p = gw.client("ping", &unknown).await;
    assert_eq!(p["ping"]["description"]["text"], "No such server here (test)", "{p}");
    let k = gw.client("login", &unknown).await;
    assert!(k["kicked"].as_str().is_some_and(|r| r.contains("No such server here (test)")), "{k}");
    // A server without a ready address: a clear refusal, no hang.
    let k = gw.client("login", &format!("stopped.{ns_b}.{base}")).await;
    assert!(k["kicked"].as_str().is_some_and(|r| r.contains("not running")), "{k}");

    // Routes follow the watch: A's name moves to B when the operator grants it.
    Api::<MinecraftServer>::namespaced(w.admin.clone(), &ns_a)
        .delete("survival", &DeleteParams::default())
        .await
        .unwrap();
    Api::<MinecraftServer>::namespaced(w.admin.clone(), &ns_b)
        .patch_status(
            "survival",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"hostnames": [&custom, &forged, &default_b]}})),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = gw.client("ping", &custom).await;
        if online(&r) == Some(7) {
            break;
        }
        assert!(Instant::now() < deadline, "the name did not move to B: {r}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(gw.metric("craftplane_gateway_refusals_total{reason=\"UnknownHost\"}") >= 2.0);
    assert!(gw.metric("craftplane_gateway_connections_total{") >= 7.0);
    drop((peer_a, peer_b));
    w.cleanup().await;
}

#[tokio::test]
async fn gateway_limits_a_storm_from_one_source() {
    let mut w = World::new().await;
    let ip = host_address();
    let peer = SlpPeer::start_on(&ip.to_string(), 1, 10, "1.20.4");
    let ns = w.namespace("s").await;
    let host = format!("storm.{}.example", w.shard);
    w.server(&ns, "survival", &[&host], &[&host], Some((ip, peer.port))).await;
    let gw = Gateway::start(
        common::kubeconfig_path(),
        &[&format!("--server-selector={SHARD_LABEL}={}", w.shard), "--rate-burst=5", "--rate-interval-ms=60000"],
    );
    gw.wait_ready().await;
    let mut answered = 0;
    let mut refused = 0;
    for _ in 0..8 {
        let r = gw.client("ping", &host).await;
        match r["ping"]["description"]["text"].as_str() {
            Some(motd) if motd.contains("Too many connections") => refused += 1,
            _ if online(&r) == Some(1) => answered += 1,
            _ => panic!("neither the server nor a refusal: {r}"),
        }
    }
    assert_eq!((answered, refused), (5, 3), "burst of 5, then refused until the interval");
    assert_eq!(gw.metric("craftplane_gateway_refusals_total{reason=\"RateLimited\"}"), 3.0);
    drop(peer);
    w.cleanup().await;
}

/// A status session through the gateway at `port` for `host`, left open:
/// the socket and the MOTD of the answer.
async fn session(port: u16, host: &str) -> (tokio::net::TcpStream, String) {
    use craftplane::gateway::protocol::{self, Handshake, NextState};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let hs = Handshake { protocol: 765, address: host.into(), port: 25565, next: NextState::Status };
    s.write_all(&[hs.encode(), protocol::frame(0, &[])].concat()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.expect("status answer").unwrap();
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    (s, text)
}

#[tokio::test]
async fn gateway_applies_the_sku_and_tenant_connection_limits() {
    use craftplane::api::{Sku, Tenant};
    let mut w = World::new().await;
    let ip = host_address();
    let peer = SlpPeer::start_on(&ip.to_string(), 1, 10, "1.20.4");
    let ns = w.namespace("l").await;
    // Set by the admin: one connection per server of this SKU, two for the
    // whole tenant (the gateway's flags allow 1000 and 5000).
    let sku_name = format!("{}-limited", w.shard);
    let sku: Sku = serde_json::from_value(json!({
        "apiVersion": "craftplane.io/v1alpha1", "kind": "Sku", "metadata": {"name": sku_name},
        "spec": {"resources": {"cpu": "1", "memory": "1Gi", "storage": "1Gi"}, "gateway": {"maxConnectionsPerServer": 1}},
    }))
    .unwrap();
    Api::<Sku>::all(w.admin.clone()).create(&PostParams::default(), &sku).await.expect("sku");
    let tenant: Tenant = serde_json::from_value(json!({
        "apiVersion": "craftplane.io/v1alpha1", "kind": "Tenant", "metadata": {"name": w.shard},
        "spec": {"owners": [{"kind": "User", "name": "limits-owner"}], "namespaces": [ns], "gateway": {"maxConnections": 2}},
    }))
    .unwrap();
    Api::<Tenant>::all(w.admin.clone()).create(&PostParams::default(), &tenant).await.expect("tenant");
    let hosts: Vec<String> = ["a", "b", "c"].iter().map(|n| format!("{n}.{}.example", w.shard)).collect();
    for (name, host) in ["a", "b", "c"].iter().zip(&hosts) {
        w.server_on(&sku_name, &ns, name, &[host], &[host], Some((ip, peer.port))).await;
    }
    let gw = Gateway::start(common::kubeconfig_path(), &[&format!("--server-selector={SHARD_LABEL}={}", w.shard)]);
    gw.wait_ready().await;
    let (_a1, first) = session(gw.port, &hosts[0]).await;
    assert!(first.contains("\"online\":1"), "the first connection reaches server a: {first}");
    let (_, second) = session(gw.port, &hosts[0]).await;
    assert!(second.contains("is full at the gateway"), "a second connection to a (SKU limit 1): {second}");
    let (_b1, other) = session(gw.port, &hosts[1]).await;
    assert!(other.contains("\"online\":1"), "server b still has room: {other}");
    let (_, third) = session(gw.port, &hosts[2]).await;
    assert!(third.contains("as many connections as they may"), "a third for the tenant (limit 2): {third}");
    assert_eq!(gw.metric("craftplane_gateway_refusals_total{reason=\"ServerLimit\"}"), 1.0);
    assert_eq!(gw.metric("craftplane_gateway_refusals_total{reason=\"TenantLimit\"}"), 1.0);
    // Ending a session frees its place.
    drop(_a1);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_a2, again) = session(gw.port, &hosts[0]).await;
        if again.contains("\"online\":1") {
            break;
        }
        assert!(Instant::now() < deadline, "a's place not freed after its session ended: {again}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(peer);
    let _ = Api::<Tenant>::all(w.admin.clone()).delete(&w.shard, &Default::default()).await;
    let _ = Api::<Sku>::all(w.admin.clone()).delete(&sku_name, &Default::default()).await;
    w.cleanup().await;
}

#[tokio::test]
async fn gateway_readyz_fails_until_the_route_cache_synced() {
    let w = World::new().await;
    // The operator's identity may not list EndpointSlices: the watch
    // fails, the cache never syncs, the gateway stays unready.
    let gw = Gateway::start(
        common::operator::operator_kubeconfig(),
        &[&format!("--server-selector={SHARD_LABEL}={}", w.shard)],
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let (code, body) = gw.get("/readyz").expect("readyz answers");
        assert_eq!(code, 503, "ready without a synced cache: {body}\nlog:\n{}", gw.log_text());
        assert!(body.contains("not synced"), "{body}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(gw.get("/healthz").map(|r| r.0), Some(200));
    // With a role that may, it becomes ready.
    let gw = Gateway::start(common::kubeconfig_path(), &[&format!("--server-selector={SHARD_LABEL}={}", w.shard)]);
    gw.wait_ready().await;
    w.cleanup().await;
}

#[tokio::test]
async fn gateway_drains_open_connections_on_sigterm() {
    use craftplane::gateway::protocol::{self, Handshake, NextState};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut w = World::new().await;
    let ip = host_address();
    let peer = SlpPeer::start_on(&ip.to_string(), 2, 20, "1.20.4");
    let ns = w.namespace("d").await;
    let host = format!("drain.{}.example", w.shard);
    w.server(&ns, "survival", &[&host], &[&host], Some((ip, peer.port))).await;
    let mut gw = Gateway::start(
        common::kubeconfig_path(),
        &[&format!("--server-selector={SHARD_LABEL}={}", w.shard), "--drain-seconds=30", "--shutdown-delay-seconds=2"],
    );
    gw.wait_ready().await;
    // A status session through the gateway, left open.
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    let hs = Handshake { protocol: 765, address: host.clone(), port: 25565, next: NextState::Status };
    s.write_all(&[hs.encode(), protocol::frame(0, &[])].concat()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.expect("status answer").unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("\"online\":2"), "{:?}", String::from_utf8_lossy(&buf[..n]));

    let pid = gw.child.as_ref().unwrap().id();
    assert!(Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap().success());
    let t_term = Instant::now();
    // First the shutdown delay: unready, but new connections still spliced
    // (a proxy that has not yet heard of the pod's end sends players here).
    let deadline = Instant::now() + Duration::from_secs(1);
    while gw.get("/readyz").is_none_or(|(c, b)| c != 503 || !b.contains("stopping")) {
        assert!(Instant::now() < deadline, "still ready 1 s after SIGTERM; log:\n{}", gw.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut late =
        tokio::net::TcpStream::connect(("127.0.0.1", gw.port)).await.expect("accepting during the shutdown delay");
    late.write_all(&[hs.encode(), protocol::frame(0, &[])].concat()).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(2), late.read(&mut buf)).await.expect("status answer").unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("\"online\":2"), "{:?}", String::from_utf8_lossy(&buf[..n]));
    drop(late);
    assert!(t_term.elapsed() < Duration::from_secs(2), "the check took longer than the shutdown delay");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let refused = TcpStream::connect(("127.0.0.1", gw.port)).is_err();
        let unready = gw.get("/readyz").is_some_and(|(c, b)| c == 503 && b.contains("stopping"));
        if refused && unready {
            break;
        }
        assert!(Instant::now() < deadline, "still accepting or ready after SIGTERM; log:\n{}", gw.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The open session still works: ping → pong through the gateway.
    s.write_all(&protocol::frame(1, &42i64.to_be_bytes())).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.expect("pong").unwrap();
    assert_eq!(&buf[..n], protocol::pong(42).as_slice());
    drop(s);
    // Its end ends the drain: the process exits cleanly, well before 30 s.
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = gw.child.as_mut().unwrap().try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "gateway did not exit after its last connection; log:\n{}", gw.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "{status}");
    drop(peer);
    w.cleanup().await;
}
