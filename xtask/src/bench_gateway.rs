//! `cargo xtask bench gateway`: the player gateway beside HAProxy, same
//! machine, the same backend code, alternating runs.
//!
//! Paths to a backend on this host's non-loopback address (the same server
//! code on its own port for each path): (a) the
//! client straight to it; (b) HAProxy 2.6 (Debian) in TCP mode, set up two
//! ways: that backend behind one frontend port (plain L4: no routing, it
//! connects as soon as it accepts), and routing by the handshake's
//! hostname through a map of all `--routes` hostnames (`req.payload_lv`:
//! it waits for the handshake, as the gateway must); (c) `craftplane
//! gateway` (the image's release binary) routing by the handshake's
//! hostname among `--routes` MinecraftServers of a kwok-only control plane
//! (status.hostnames written as the operator would; one EndpointSlice
//! names the backend).
//!
//! Measured per path: connection setup (connect → handshake → the status
//! answer; sequential, the paths taking turns every 25 connections, median
//! and p99), bulk throughput (a login-state
//! connection reading `--mib` MiB the backend sends; median of 3), and RSS:
//! the gateway's with all routes loaded, then with `--open` status sessions
//! held open (MiB per connection), HAProxy's the same way. Then many
//! clients at once (`--clients` threads, each proxy at its default thread
//! count): connections per second and their setup times, and how many
//! connections the gateway's workers passed to one another.
//!
//! The backend is a small Rust thread server in this process (a status
//! answer for status handshakes, a byte stream for login handshakes); both
//! proxies forward every byte after the handshake untouched.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

use crate::cluster::Cluster;
use crate::e2e::{Kube, free_port};
use crate::slp::{frame, read_varint, varint};

pub struct Args {
    pub connections: usize,
    pub mib: usize,
    pub routes: usize,
    pub open: usize,
    pub runs: usize,
    pub clients: usize,
}

const NS: &str = "bench-gateway";
const HOST: &str = "s0.bench.example";
/// Status connections a path makes before the next path's turn.
const BATCH: usize = 25;

pub fn run(sh: &Shell, a: &Args) -> Result<()> {
    if a.routes == 0 || a.connections == 0 || a.runs == 0 || a.clients == 0 {
        bail!("--routes, --connections, --runs and --clients must be at least 1");
    }
    let tools = crate::tools::ensure(sh)?;
    let haproxy = ensure_haproxy(sh)?;
    let bin = crate::images::build_release_binary(sh, crate::images::Profile::Image)?;
    let cluster = Cluster::ephemeral(&format!("bench-gw-{}", std::process::id())).kwok_only();
    cluster.up(sh)?;
    let r = bench(&tools, &haproxy, &bin, &cluster, a);
    let d = cluster.down();
    r?;
    d
}

fn ensure_haproxy(sh: &Shell) -> Result<String> {
    if let Ok(p) = cmd!(sh, "sh -c 'command -v haproxy'").quiet().read() {
        return Ok(p.trim().to_string());
    }
    eprintln!("xtask: installing Debian's haproxy (the benchmark's reference proxy)");
    cmd!(sh, "apt-get install -y -qq --no-install-recommends haproxy")
        .run()
        .or_else(|_| {
            cmd!(sh, "apt-get update -qq").run()?;
            cmd!(sh, "apt-get install -y -qq --no-install-recommends haproxy").run()
        })
        .context("haproxy is needed (run as root: apt-get install -y haproxy)")?;
    Ok(cmd!(sh, "sh -c 'command -v haproxy'").quiet().read()?.trim().to_string())
}

fn host_address() -> Result<IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
    s.connect("192.0.2.123:9").or_else(|_| s.connect("8.8.8.8:53")).context("a route off this host")?;
    let ip = s.local_addr()?.ip();
    if ip.is_loopback() {
        bail!("no non-loopback address on this host");
    }
    Ok(ip)
}

struct Stop(Child);
impl Drop for Stop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// CPU time all threads of `pid` have run, in ns (schedstat).
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

fn bench(tools: &crate::tools::Tools, haproxy: &str, bin: &Path, cluster: &Cluster, a: &Args) -> Result<()> {
    let k = Kube { kubectl: tools.kubectl.clone(), kubeconfig: cluster.kubeconfig() };
    let ip = host_address()?;
    let backend = Backend::start(ip, a.mib)?;
    println!("bench: backend on {}; {} routes for the gateway", backend.addr, a.routes);

    // The routes: MinecraftServers with status.hostnames, as the operator
    // writes them; s0's EndpointSlice names the backend.
    k.run(&["create", "namespace", NS])?;
    let dir = &cluster.dir;
    let mut servers = String::new();
    let mut statuses = String::new();
    for i in 0..a.routes {
        servers.push_str(&format!(
            "apiVersion: craftplane.io/v1alpha1\nkind: MinecraftServer\nmetadata: {{name: s{i}, namespace: {NS}}}\nspec: {{sku: none, eula: true}}\n---\n"
        ));
        statuses.push_str(&format!(
            "apiVersion: craftplane.io/v1alpha1\nkind: MinecraftServer\nmetadata: {{name: s{i}, namespace: {NS}}}\nstatus: {{hostnames: [s{i}.bench.example]}}\n---\n"
        ));
    }
    let t_load = Instant::now();
    let (sf, stf) = (dir.join("bench-gw-servers.yaml"), dir.join("bench-gw-status.yaml"));
    std::fs::write(&sf, servers)?;
    std::fs::write(&stf, statuses)?;
    k.run(&["apply", "--server-side", "-f", &sf.display().to_string()])?;
    k.run(&["apply", "--server-side", "--subresource=status", "-f", &stf.display().to_string()])?;
    let slice = dir.join("bench-gw-slice.yaml");
    std::fs::write(
        &slice,
        format!(
            "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: s0-game
  namespace: {NS}
  labels: {{kubernetes.io/service-name: s0, app.kubernetes.io/managed-by: craftplane, app.kubernetes.io/component: game, craftplane.io/server: s0}}
addressType: IPv4
endpoints: [{{addresses: [\"{ip}\"], conditions: {{ready: true}}}}]
ports: [{{name: minecraft, port: {port}, protocol: TCP}}]
",
            port = backend.addr.port()
        ),
    )?;
    k.run(&["apply", "-f", &slice.display().to_string()])?;
    println!(
        "bench: {} MinecraftServers with status and the backend's EndpointSlice in {:.1?}",
        a.routes,
        t_load.elapsed()
    );

    // Each proxy twice: one thread, and its default (one per CPU): the
    // client and the backend share this machine's cores with them. HAProxy
    // in two set-ups: one frontend port for the one backend (plain L4: it
    // connects to the backend as soon as it accepts, before the client's
    // first byte) and routing by the handshake's hostname through a map of
    // every route (it waits for the handshake, as the gateway must).
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let settings: Vec<usize> = if cores > 1 { vec![1, cores] } else { vec![1] };
    let map = dir.join("bench-haproxy-hosts.map");
    std::fs::write(&map, (0..a.routes).map(|i| format!("s{i}.bench.example servers\n")).collect::<String>())?;
    let mut procs: Vec<Stop> = Vec::new();
    // Each path its own backend port (the gateways share s0's): a
    // connection to the backend takes one of the ~14,000 even ephemeral
    // ports the kernel tries first for that destination, each held 60 s in
    // TIME_WAIT by whoever closed first; the paths sharing one port ran out
    // of them and every connect then scanned them all (milliseconds).
    let mut paths: Vec<(String, SocketAddr, Option<u32>)> =
        vec![("direct".into(), Backend::start(ip, a.mib)?.addr, None)];
    let mut gw_https = Vec::new();
    for &t in &settings {
        let (gw, gw_addr, gw_http) = start_gateway(bin, cluster, t, a.routes)?;
        let (hp, hp_addr) = start_haproxy(haproxy, dir, Backend::start(ip, a.mib)?.addr, t, None)?;
        let (hr, hr_addr) = start_haproxy(haproxy, dir, Backend::start(ip, a.mib)?.addr, t, Some(&map))?;
        let what = if t == cores { format!("{t} threads, its default") } else { format!("{t} thread") };
        paths.push((format!("HAProxy 2.6 (tcp), {what}, one frontend per server"), hp_addr, Some(hp.0.id())));
        paths.push((format!("HAProxy 2.6 (tcp), {what}, routing by hostname"), hr_addr, Some(hr.0.id())));
        paths.push((format!("craftplane gateway, {what}"), gw_addr, Some(gw.0.id())));
        procs.extend([hp, hr, gw]);
        gw_https.push(gw_http);
    }
    for (_, addr, _) in &paths {
        crate::e2e::retry(Duration::from_secs(10), || status_once(*addr).map(|_| ()))?;
    }
    let rss_idle: Vec<f64> = paths.iter().map(|p| p.2.map_or(0.0, rss_mib)).collect();

    let n = paths.len();
    let mut setup: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut thru: Vec<Vec<f64>> = vec![Vec::new(); n];
    // CPU time of each proxy during the setup rounds.
    let mut cpu = vec![0u64; n];
    // Many clients at once: direct and each proxy at its default.
    let many_paths = [0, n - 3, n - 2, n - 1];
    let each = (a.connections / 10).max(1);
    let (mut many_rate, mut many_setup, mut many_cpu) = (vec![Vec::new(); n], vec![Vec::new(); n], vec![0u64; n]);
    // Connections the default gateway's workers passed to one another.
    let gw_http = *gw_https.last().context("a gateway")?;
    let handoffs = || {
        crate::http::get(gw_http, "/metrics")
            .ok()
            .and_then(|m| crate::bench::metric(&m, "craftplane_gateway_handoffs_total "))
            .unwrap_or(0.0)
    };
    let mut many_handoffs = 0.0;
    for run in 1..=a.runs {
        for (_, addr, _) in &paths {
            for _ in 0..50 {
                status_once(*addr)?; // warm-up
            }
        }
        // Setup in rounds of BATCH connections per path, the paths taking
        // turns: what drifts during a run (the machine's other work, the
        // sockets in TIME_WAIT) falls on all of them alike.
        let before: Vec<u64> = paths.iter().map(|p| p.2.map_or(0, cpu_ns)).collect();
        let mut done = 0;
        while done < a.connections {
            let k = BATCH.min(a.connections - done);
            for (i, (_, addr, _)) in paths.iter().enumerate() {
                for _ in 0..k {
                    setup[i].push(status_once(*addr)?.as_secs_f64() * 1000.0);
                }
            }
            done += k;
        }
        for (i, p) in paths.iter().enumerate() {
            cpu[i] += p.2.map_or(0, cpu_ns) - before[i];
        }
        for (i, (name, addr, _)) in paths.iter().enumerate() {
            for _ in 0..3 {
                thru[i].push(bulk(*addr, a.mib)?);
            }
            println!("bench: run {run} {name}: done");
        }
    }

    // Many clients at once, after the sequential rounds (their many
    // short-lived sockets slowed the rounds after them), the paths taking
    // turns each run.
    for run in 1..=a.runs {
        for &i in &many_paths {
            let before = paths[i].2.map_or(0, cpu_ns);
            let passed = handoffs();
            let (rate, lat) = many_clients(paths[i].1, a.clients, each)?;
            many_cpu[i] += paths[i].2.map_or(0, cpu_ns) - before;
            if i == n - 1 {
                many_handoffs += handoffs() - passed;
            }
            many_rate[i].push(rate);
            many_setup[i].extend(lat);
        }
        println!("bench: run {run} many clients: done");
    }

    // Open sessions: held status connections (handshake + status answered,
    // the socket kept), through each proxy at its default (HAProxy's L4 set-up).
    let (hp_i, gw_i) = (n - 3, n - 1);
    let hold = |addr: SocketAddr| -> Result<Vec<TcpStream>> { (0..a.open).map(|_| open_session(addr)).collect() };
    let mut rss_open = vec![0.0; n];
    for i in [gw_i, hp_i] {
        let held = hold(paths[i].1)?;
        std::thread::sleep(Duration::from_millis(500));
        rss_open[i] = paths[i].2.map_or(0.0, rss_mib);
        drop(held);
    }

    let q = |v: &[f64], p: f64| -> f64 {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        s[((s.len() as f64 - 1.0) * p).round() as usize]
    };
    let mut out = format!(
        "\n## Gateway: {}, {cores} cores, {} runs, {} status connections per path per run (in turns of {BATCH}), {} MiB per bulk transfer (3 per run), {} routes loaded\n\n",
        date(),
        a.runs,
        a.connections,
        a.mib,
        a.routes
    );
    out.push_str("| path | setup median (ms) | setup p99 (ms) | added median vs direct (ms) | throughput median (MiB/s) | CPU per status connection (µs) |\n|---|---|---|---|---|---|\n");
    let direct_med = q(&setup[0], 0.5);
    let per_conn = |ns: u64| ns as f64 / 1000.0 / (a.connections * a.runs) as f64;
    for (i, (name, _, pid)) in paths.iter().enumerate() {
        out.push_str(&format!(
            "| {name} | {:.3} | {:.3} | {:+.3} | {:.0} | {} |\n",
            q(&setup[i], 0.5),
            q(&setup[i], 0.99),
            q(&setup[i], 0.5) - direct_med,
            q(&thru[i], 0.5),
            pid.map_or("".into(), |_| format!("{:.1}", per_conn(cpu[i])))
        ));
    }
    let added = |i: usize| q(&setup[i], 0.5) - direct_med;
    out.push('\n');
    for (k, &t) in settings.iter().enumerate() {
        let (l4, routing, g) = (1 + 3 * k, 2 + 3 * k, 3 + 3 * k);
        let verdict = |h: usize| if added(g) <= added(h) { "met" } else { "missed" };
        let ratio = q(&thru[g], 0.5) / q(&thru[l4], 0.5);
        out.push_str(&format!(
            "Gateway vs HAProxy, {t} thread(s) each: added setup latency {:.3} ms vs {:.3} ms routing by hostname (target ≤ HAProxy's: {}), vs {:.3} ms with one frontend per server ({}); throughput {ratio:.2}× HAProxy's (target ≥ 0.9×: {}).\n",
            added(g),
            added(routing),
            verdict(routing),
            added(l4),
            verdict(l4),
            if ratio >= 0.9 { "met" } else { "missed" }
        ));
    }
    out.push_str(&format!(
        "\n{} clients at once, {each} status connections each, per path per run; each proxy at its default ({} thread(s)):\n\n| path | connections per second (median of runs) | setup median (ms) | setup p99 (ms) | CPU per connection (µs) |\n|---|---|---|---|---|\n",
        a.clients,
        settings.last().copied().unwrap_or(1)
    ));
    for &i in &many_paths {
        let per = many_cpu[i] as f64 / 1000.0 / (a.clients * each * a.runs) as f64;
        out.push_str(&format!(
            "| {} | {:.0} | {:.3} | {:.3} | {} |\n",
            paths[i].0,
            q(&many_rate[i], 0.5),
            q(&many_setup[i], 0.5),
            q(&many_setup[i], 0.99),
            paths[i].2.map_or("".into(), |_| format!("{per:.1}"))
        ));
    }
    let (l4, routing, g) = (n - 3, n - 2, n - 1);
    out.push_str(&format!(
        "\nMany clients: the gateway {:.2}× HAProxy's connections per second routing by hostname, {:.2}× with one frontend per server; its workers passed {many_handoffs:.0} of these {} connections to a less busy worker.\n",
        q(&many_rate[g], 0.5) / q(&many_rate[routing], 0.5),
        q(&many_rate[g], 0.5) / q(&many_rate[l4], 0.5),
        a.clients * each * a.runs
    ));
    let (rss_gw_idle, rss_gw_open, rss_hp_idle, rss_hp_open) =
        (rss_idle[gw_i], rss_open[gw_i], rss_idle[hp_i], rss_open[hp_i]);
    let per = |open: f64, idle: f64| (open - idle) * 1024.0 / a.open as f64;
    out.push_str(&format!(
        "RSS: the gateway {rss_gw_idle:.1} MiB with {} routes, {rss_gw_open:.1} MiB with {} open sessions ({:.1} KiB per connection); HAProxy {rss_hp_idle:.1} MiB, {rss_hp_open:.1} MiB ({:.1} KiB per connection).\n",
        a.routes,
        a.open,
        per(rss_gw_open, rss_gw_idle),
        per(rss_hp_open, rss_hp_idle)
    ));
    print!("{out}");
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(crate::project_root().join("BENCHMARKS.md"))?
        .write_all(out.as_bytes())?;
    println!("bench: appended to BENCHMARKS.md");
    drop(procs);
    drop(gw_https);
    Ok(())
}

/// A gateway with `workers` threads, no rate or connection limits (one
/// source address here), once it has loaded every route: the process, its
/// player address and its HTTP port.
fn start_gateway(bin: &Path, cluster: &Cluster, workers: usize, routes: usize) -> Result<(Stop, SocketAddr, u16)> {
    let port = free_port("127.0.0.1")?;
    let http = free_port("127.0.0.1")?;
    let gw = Stop(
        Command::new(bin)
            .args(["gateway", "--listen", &format!("127.0.0.1:{port}"), "--http-addr", &format!("127.0.0.1:{http}")])
            .args(["--workers", &workers.to_string()])
            .args(["--rate-burst", "1000000000", "--rate-interval-ms", "1"])
            .args(["--max-connections-per-server", "0", "--max-connections-per-tenant", "0"])
            .env("KUBECONFIG", cluster.kubeconfig())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .context("start the gateway")?,
    );
    let t_sync = Instant::now();
    loop {
        let m = crate::http::get(http, "/metrics").unwrap_or_default();
        let (r, b) = (
            crate::bench::metric(&m, "craftplane_gateway_routes "),
            crate::bench::metric(&m, "craftplane_gateway_backends "),
        );
        if r == Some(routes as f64) && b == Some(1.0) {
            break;
        }
        if t_sync.elapsed() > Duration::from_secs(300) {
            bail!("the gateway did not load {routes} routes and 1 backend in 300 s (routes {r:?}, backends {b:?})");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("bench: gateway ({workers} workers) synced {routes} routes in {:.1?}", t_sync.elapsed());
    Ok((gw, ([127, 0, 0, 1], port).into(), http))
}

/// HAProxy with `threads` threads, the one backend (maxconn 8,000: HAProxy
/// asks for twice that in file descriptors, and the machine allows 20,000)
/// behind one frontend, or, with `map`, behind a frontend that routes by the
/// handshake's hostname: it waits for the bytes up to the hostname, takes
/// the hostname as the length-prefixed string at offset 4 (right for
/// protocol versions of two VarInt bytes and names under 128 bytes, as the
/// bench sends: an easier parse than the gateway's), lowers it and looks it
/// up in the map of all routes; an unknown name is refused.
fn start_haproxy(
    haproxy: &str,
    dir: &Path,
    backend: SocketAddr,
    threads: usize,
    map: Option<&Path>,
) -> Result<(Stop, SocketAddr)> {
    let port = free_port("127.0.0.1")?;
    let (name, routing) = match map {
        None => ("l4", "  default_backend servers\n".to_string()),
        Some(m) => (
            "routing",
            format!(
                "  tcp-request inspect-delay 5s\n  tcp-request content accept if {{ req.payload_lv(4,1) -m found }}\n  tcp-request content reject\n  use_backend %[req.payload_lv(4,1),lower,map({})]\n",
                m.display()
            ),
        ),
    };
    let cfg = dir.join(format!("bench-haproxy-{name}-{threads}.cfg"));
    std::fs::write(
        &cfg,
        format!(
            "global\n  maxconn 8000\n  nbthread {threads}\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\nfrontend mc\n  bind 127.0.0.1:{port}\n{routing}backend servers\n  server s0 {backend}\n"
        ),
    )?;
    let hp = Stop(
        Command::new(haproxy)
            .args(["-db", "-f"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start haproxy")?,
    );
    Ok((hp, ([127, 0, 0, 1], port).into()))
}

fn date() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn handshake(next: u32) -> Vec<u8> {
    let mut hs = vec![0x00];
    varint(769, &mut hs);
    varint(HOST.len() as u32, &mut hs);
    hs.extend_from_slice(HOST.as_bytes());
    hs.extend_from_slice(&25565u16.to_be_bytes());
    varint(next, &mut hs);
    frame(&hs)
}

fn read_frame(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let n = read_varint(s).map_err(std::io::Error::other)? as usize;
    if n > 1 << 20 {
        return Err(std::io::Error::other("frame too large"));
    }
    let mut b = vec![0u8; n];
    s.read_exact(&mut b)?;
    Ok(b)
}

/// Connect, handshake, status request, status answer: the time it took.
fn status_once(addr: SocketAddr) -> Result<Duration> {
    let t = Instant::now();
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut req = handshake(1);
    req.extend(frame(&[0x00]));
    s.write_all(&req)?;
    let answer = read_frame(&mut s)?;

    if answer.first() != Some(&0) || answer.len() < 10 {
        bail!("not a status answer from {addr}");
    }
    Ok(t.elapsed())
}

/// `clients` threads at once, each making `each` status connections to
/// `addr` one after another: connections per second and each setup (ms).
fn many_clients(addr: SocketAddr, clients: usize, each: usize) -> Result<(f64, Vec<f64>)> {
    let t = Instant::now();
    let lat = std::thread::scope(|s| {
        let hs: Vec<_> = (0..clients)
            .map(|_| {
                s.spawn(move || {
                    (0..each).map(|_| status_once(addr).map(|d| d.as_secs_f64() * 1000.0)).collect::<Result<Vec<_>>>()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("a client thread")).collect::<Result<Vec<Vec<f64>>>>()
    })?;
    Ok(((clients * each) as f64 / t.elapsed().as_secs_f64(), lat.concat()))
}

/// A status session left open (the backend waits for its ping).
fn open_session(addr: SocketAddr) -> Result<TcpStream> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut req = handshake(1);
    req.extend(frame(&[0x00]));
    s.write_all(&req)?;
    read_frame(&mut s)?;
    Ok(s)
}

/// A login handshake, then `mib` MiB from the backend: MiB/s.
fn bulk(addr: SocketAddr, mib: usize) -> Result<f64> {
    let t = Instant::now();
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(&handshake(2))?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0usize;
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    if got != mib << 20 {
        bail!("bulk through {addr}: {got} bytes, expected {}", mib << 20);
    }
    Ok(mib as f64 / t.elapsed().as_secs_f64())
}

/// The backend: a status answer (and pong) for status handshakes, `mib` MiB
/// then close for login handshakes. One thread per connection.
pub(crate) struct Backend {
    pub addr: SocketAddr,
}

impl Backend {
    pub fn start(ip: IpAddr, mib: usize) -> Result<Backend> {
        let l = TcpListener::bind((ip, 0))?;
        let addr = l.local_addr()?;
        let status = {
            let json = br#"{"version":{"name":"1.21.4","protocol":769},"players":{"max":20,"online":0},"description":{"text":"bench backend"}}"#;
            let mut body = vec![0x00];
            varint(json.len() as u32, &mut body);
            body.extend_from_slice(json);
            frame(&body)
        };
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(mut c) = c else { continue };
                let status = status.clone();
                std::thread::spawn(move || -> std::io::Result<()> {
                    c.set_nodelay(true)?;
                    let hs = read_frame(&mut c)?;
                    match hs.last() {
                        Some(1) => {
                            read_frame(&mut c)?;
                            c.write_all(&status)?;
                            let ping = read_frame(&mut c)?;
                            c.write_all(&frame(&ping))
                        }
                        _ => {
                            let chunk = vec![0x5au8; 1 << 20];
                            for _ in 0..mib {
                                c.write_all(&chunk)?;
                            }
                            Ok(())
                        }
                    }
                });
            }
        });
        Ok(Backend { addr })
    }
}
