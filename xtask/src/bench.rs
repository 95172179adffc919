//! `cargo xtask bench scale`: N servers on one operator, beside the API
//! server's own limit (the same children applied directly), on fresh local
//! control planes. Prints a table and appends it to BENCHMARKS.md.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

use crate::cluster::Cluster;
use crate::tools::{self, Tools};

const NS: &str = "bench";
const SKU: &str = "apiVersion: craftplane.io/v1alpha1\nkind: Sku\nmetadata:\n  name: bench\nspec:\n  resources: {cpu: 100m, memory: 512Mi, storage: 1Gi}\n  jvm: {heapPercent: 50}\n  maxPlayers: 10\n";

/// `kubectl get` listing every server's phase, a line each.
const SERVER_PHASES: [&str; 5] =
    ["get", "minecraftservers", "-A", "-o", "jsonpath={range .items[*]}{.status.phase}{\"\\n\"}{end}"];

/// How the servers meet the operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// The operator runs; the servers are applied.
    Live,
    /// The servers are applied with no operator running; then it starts
    /// (an upgrade, a crash, a failover).
    CatchUp,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Live => "live",
            Mode::CatchUp => "catch-up",
        }
    }
}

/// What `cargo xtask bench scale` runs.
pub struct ScaleArgs {
    pub counts: Vec<usize>,
    pub modes: Vec<Mode>,
    /// Runs of each (N, mode), for medians.
    pub runs: usize,
    /// Seconds of idleness after convergence in which writes are counted;
    /// None: two resync periods and 15 s.
    pub idle: Option<Duration>,
    /// The operator's `--resync-seconds` in the bench.
    pub resync_seconds: u64,
    pub skip_baseline: bool,
    pub namespaces: usize,
    /// Percent of the servers with a sleep policy (`afterIdle: 10s`): they
    /// run, are pinged (a status answer of 0 players from a backend in this
    /// process), then sleep; the run converges when they all sleep.
    pub asleep_percent: usize,
}

struct Row {
    n: usize,
    namespaces: usize,
    mode: Mode,
    /// Servers that sleep (0: none; then the goals are as below).
    asleep: usize,
    /// None when the baseline was skipped.
    baseline: Option<Duration>,
    /// Until every StatefulSet has its replica ready (with sleepers: every
    /// server Running or Hibernated).
    statefulsets_ready: Duration,
    /// Until every server's phase is Running (with sleepers: every sleeper
    /// Hibernated).
    craftplane: Duration,
    peak_rss_mib: f64,
    idle_rss_mib: f64,
    /// File-backed part of the RSS after idling: the binary's code pages
    /// (shared, reclaimable), not memory the operator allocated.
    idle_file_mib: f64,
    cpu_seconds: f64,
    reconciles: f64,
    /// Mean reconcile duration of MinecraftServers (ms).
    reconcile_ms: f64,
    /// MinecraftServer reconciles running at once while converging (the
    /// operator's gauge, sampled twice a second): mean and the share of
    /// samples at the worker limit.
    in_flight_mean: f64,
    in_flight_at_limit: f64,
    requests_by_verb: BTreeMap<String, usize>,
    idle_writes_per_min: f64,
    idle_seconds: f64,
    /// CPU seconds each control-plane component spent while converging.
    component_cpu: BTreeMap<&'static str, f64>,
    /// The API server's slowest (verb, resource) pairs while converging:
    /// (verb resource, requests, mean ms), by total time.
    apiserver: Vec<(String, f64, f64)>,
}

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

/// `namespaces`: how many namespaces the servers are spread over (1: all in
/// `bench`; more: `bench-000`, `bench-001`, … in equal contiguous shares).
pub fn scale(sh: &Shell, a: &ScaleArgs) -> Result<()> {
    let tools = tools::ensure(sh)?;
    // The binary the operator image ships (profile `image`).
    let bin = crate::images::build_release_binary(sh, crate::images::Profile::Image)?;
    let idle = a.idle.unwrap_or(Duration::from_secs(2 * a.resync_seconds + 15));
    let namespaces = a.namespaces;
    let mut rows = Vec::new();
    for &n in &a.counts {
        for run in 1..=a.runs {
            let spread = Spread { n, namespaces };
            let baseline = if a.skip_baseline {
                None
            } else {
                println!("bench: N={n} run {run}: baseline (children applied directly)");
                let b = with_cluster(sh, &format!("bench-base-{}", std::process::id()), |c| {
                    baseline(sh, &tools, &bin, c, spread, a.asleep_percent)
                })?;
                println!("bench: N={n} run {run}: baseline {:.1}s", b.as_secs_f64());
                Some(b)
            };
            for &mode in &a.modes {
                println!("bench: N={n} run {run}: craftplane, {}", mode.name());
                let run_args = RunArgs {
                    spread,
                    mode,
                    idle,
                    resync_seconds: a.resync_seconds,
                    baseline,
                    asleep_percent: a.asleep_percent,
                };
                let row = with_cluster(sh, &format!("bench-cp-{}", std::process::id()), |c| {
                    operator_run(sh, &tools, &bin, c, &run_args)
                })?;
                println!(
                    "bench: N={n} run {run} {}: StatefulSets ready {:.1}s, Running {:.1}s (x{}), peak RSS {:.1} MiB, idle writes/min {:.1}",
                    mode.name(),
                    row.statefulsets_ready.as_secs_f64(),
                    row.craftplane.as_secs_f64(),
                    ratio(&row),
                    row.peak_rss_mib,
                    row.idle_writes_per_min
                );
                // The row's table now, not only at the end: a long run that
                // is stopped later (10,000 servers take hours) keeps it.
                println!("{}{}", table(std::slice::from_ref(&row)), where_time_goes(&row));
                rows.push(row);
            }
        }
    }
    let mut out = table(&rows);
    if a.runs > 1 {
        out.push_str(&medians(&rows));
    }
    for r in &rows {
        out.push_str(&where_time_goes(r));
    }
    println!("\n{out}");
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let date = cmd!(sh, "date -u +%Y-%m-%d").read().unwrap_or_default();
    let path = crate::project_root().join("BENCHMARKS.md");
    let mut doc = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        "# Benchmarks\n\nFigures from `cargo xtask bench`, appended by each run. Ratios are measured in one run.\n"
            .to_string()
    });
    let _ = write!(
        doc,
        "\n## Scale: {date}, {cores} cores, local control plane (kwok), operator resync {}s, idle window {}s\n\n{out}\n",
        a.resync_seconds,
        idle.as_secs()
    );
    std::fs::write(&path, doc)?;
    println!("bench: appended to BENCHMARKS.md");
    Ok(())
}

/// Medians per (N, mode) over the runs.
fn medians(rows: &[Row]) -> String {
    let mut t = String::from(
        "\nMedians over the runs:\n\n| N | mode | runs | baseline (s) | StatefulSets ready (s) | Running (s) | ratio (Running / baseline) | peak RSS (MiB) |\n|---|---|---|---|---|---|---|---|\n",
    );
    let mut keys: Vec<(usize, Mode)> = rows.iter().map(|r| (r.n, r.mode)).collect();
    keys.dedup();
    keys.sort_by_key(|(n, m)| (*n, m.name()));
    keys.dedup();
    for (n, mode) in keys {
        let rs: Vec<&Row> = rows.iter().filter(|r| r.n == n && r.mode == mode).collect();
        let base = median(rs.iter().filter_map(|r| r.baseline.map(|b| b.as_secs_f64())).collect());
        let sts = median(rs.iter().map(|r| r.statefulsets_ready.as_secs_f64()).collect());
        let run = median(rs.iter().map(|r| r.craftplane.as_secs_f64()).collect());
        let rss = median(rs.iter().map(|r| r.peak_rss_mib).collect());
        let ratio = if base > 0.0 { format!("{:.2}", run / base) } else { "—".into() };
        let _ = writeln!(
            t,
            "| {n} | {} | {} | {base:.1} | {sts:.1} | {run:.1} | {ratio} | {rss:.1} |",
            mode.name(),
            rs.len()
        );
    }
    t
}

/// Where one run's time went: CPU per component, the API server's slowest
/// request kinds, the operator's reconciles.
fn where_time_goes(r: &Row) -> String {
    let cpu: Vec<String> = r.component_cpu.iter().map(|(k, v)| format!("{k} {v:.1}")).collect();
    let api: Vec<String> = r.apiserver.iter().map(|(k, n, ms)| format!("{k} {n:.0}× {ms:.0} ms")).collect();
    format!(
        "\nN={} {}: CPU seconds while converging ({:.0} s): {}. API server, slowest by total time (requests × mean latency; watches left out): {}. Operator: {:.0} reconciles, MinecraftServer mean {:.1} ms, workers busy {:.1} on average ({:.0}% of samples at the limit).\n",
        r.n,
        r.mode.name(),
        r.craftplane.as_secs_f64(),
        cpu.join(", "),
        api.join("; "),
        r.reconciles,
        r.reconcile_ms,
        r.in_flight_mean,
        r.in_flight_at_limit * 100.0
    )
}

fn with_cluster<T>(sh: &Shell, name: &str, f: impl FnOnce(&Cluster) -> Result<T>) -> Result<T> {
    let cluster = Cluster::ephemeral(name).kwok_only();
    cluster.up(sh)?;
    let r = f(&cluster);
    let d = cluster.down();
    let v = r?;
    d?;
    Ok(v)
}

/// N servers over some namespaces.
#[derive(Clone, Copy)]
struct Spread {
    n: usize,
    namespaces: usize,
}

impl Spread {
    fn namespace(self, i: usize) -> String {
        if self.namespaces <= 1 { NS.to_string() } else { format!("{NS}-{:03}", i * self.namespaces / self.n) }
    }
}

/// Whether server `i` has a sleep policy (`percent` of every 100).
fn sleeps(i: usize, percent: usize) -> bool {
    i % 100 < percent
}

/// Writes the SKU and the servers, creates their namespaces; returns the
/// SKU's and the servers' files.
fn write_inputs(
    sh: &Shell,
    tools: &Tools,
    cluster: &Cluster,
    spread: Spread,
    asleep_percent: usize,
) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    let sku = cluster.dir.join("bench-sku.yaml");
    std::fs::write(&sku, SKU)?;
    let servers = cluster.dir.join("bench-servers.yaml");
    let mut text = String::new();
    let mut namespaces = std::collections::BTreeSet::new();
    for i in 0..spread.n {
        let ns = spread.namespace(i);
        let _ = write!(
            text,
            "---\napiVersion: craftplane.io/v1alpha1\nkind: MinecraftServer\nmetadata:\n  name: s{i:05}\n  namespace: {ns}\nspec:\n  sku: bench\n  eula: true\n  type: PAPER\n  version: \"1.21.4\"\n"
        );
        if sleeps(i, asleep_percent) {
            text.push_str("  sleep: {afterIdle: 10s}\n");
        }
        namespaces.insert(ns);
    }
    std::fs::write(&servers, text)?;
    let ns_file = cluster.dir.join("bench-namespaces.yaml");
    let docs: Vec<String> =
        namespaces.iter().map(|ns| format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n")).collect();
    std::fs::write(&ns_file, format!("---\n{}", docs.join("---\n")))?;
    kubectl(sh, tools, cluster, &["apply", "-f", &ns_file.display().to_string()])?;
    Ok((sku, servers))
}

fn kubectl(sh: &Shell, tools: &Tools, cluster: &Cluster, args: &[&str]) -> Result<String> {
    let k = &tools.kubectl;
    let kc = cluster.kubeconfig();
    Ok(cmd!(sh, "{k} --kubeconfig {kc} {args...}").quiet().read()?)
}

/// kubectl processes applying one file at once (see `apply_parallel`).
const APPLY_PARALLEL: usize = 8;

/// Applies a multi-document YAML file server-side with `APPLY_PARALLEL`
/// kubectl processes, each taking a contiguous share of the documents (one
/// server's objects stay together, in order). One kubectl sends one request
/// at a time, which alone took minutes at 10,000 servers; a chart install
/// (Helm creates a release's objects concurrently) or a GitOps sync doesn't.
fn apply_parallel(tools: &Tools, cluster: &Cluster, file: &Path) -> Result<()> {
    let text = std::fs::read_to_string(file)?;
    let docs: Vec<&str> =
        text.split("\n---\n").map(|d| d.trim_start_matches("---\n")).filter(|d| !d.trim().is_empty()).collect();
    let per = docs.len().div_ceil(APPLY_PARALLEL).max(1);
    let mut procs = Vec::new();
    for (i, part) in docs.chunks(per).enumerate() {
        let path = file.with_extension(format!("part{i}.yaml"));
        std::fs::write(&path, format!("---\n{}\n", part.join("\n---\n")))?;
        let child = Command::new(&tools.kubectl)
            .arg("--kubeconfig")
            .arg(cluster.kubeconfig())
            .args(["apply", "--server-side", "-f"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("start kubectl")?;
        procs.push((path, child));
    }
    let mut failed = Vec::new();
    for (path, child) in procs {
        let out = child.wait_with_output()?;
        if !out.status.success() {
            failed.push(format!("{}: {}", path.display(), String::from_utf8_lossy(&out.stderr).trim()));
        }
    }
    if !failed.is_empty() {
        bail!("kubectl apply failed:\n{}", failed.join("\n"));
    }
    Ok(())
}

/// What `wait_count` waits for: `want` (values separated by `|`) on `n`
/// lines of `kubectl get args`.
struct Goal<'a> {
    args: &'a [&'a str],
    want: &'a str,
    n: usize,
    t0: Instant,
}

/// A cheap count of how many objects already reached the goal (the
/// operator's own phase gauge), read once a second; `None` when unknown.
type Hint<'a> = &'a dyn Fn() -> Option<usize>;

/// Polls until `n` lines of `kubectl get` output equal `want`; returns the
/// time since `t0`. Each list reads all N objects, so without a hint it
/// lists every N/1,000 s (at least every 0.5 s) to keep its own load on the
/// machine small. With a hint it lists only once the hint reports the goal
/// reached (then every N/1,000 s until the list agrees; as without a hint
/// while the hint is unreadable), so the answer still comes from the API
/// server while timing stays to the second. Allows 30 minutes plus 1 s per
/// object (10,000 servers take hours on 2 cores). Prints progress once a
/// minute, followed by what `progress` returns.
fn wait_count(
    sh: &Shell,
    tools: &Tools,
    cluster: &Cluster,
    goal: &Goal<'_>,
    hint: Option<Hint<'_>>,
    progress: &dyn Fn() -> String,
) -> Result<Duration> {
    let Goal { args, want, n, t0 } = *goal;
    let deadline = t0 + Duration::from_secs(1800) + Duration::from_secs(n as u64);
    let list_every = Duration::from_millis(500.max(n as u64));
    let mut last_report = Instant::now();
    let mut last_list: Option<Instant> = None;
    let mut done = 0;
    let mut hinted = None;
    loop {
        hinted = hint.and_then(|h| h()).or(hinted);
        let hint_says_done = hinted.is_none_or(|h| h >= n);
        if hint_says_done && last_list.is_none_or(|t| t.elapsed() >= list_every) {
            last_list = Some(Instant::now());
            let out = kubectl(sh, tools, cluster, args).unwrap_or_default();
            done = out.lines().filter(|l| want.split('|').any(|w| l.trim() == w)).count();
            if done >= n {
                return Ok(t0.elapsed());
            }
        }
        // Progress once a minute, so a long run that is stopped still tells
        // how far it got (and, for the operator, at what memory).
        if last_report.elapsed() >= Duration::from_secs(60) {
            last_report = Instant::now();
            let count = hinted.map_or_else(|| format!("{done}/{n}"), |h| format!("{h}/{n} (operator's gauge)"));
            println!("bench: {count} {want} after {:.0}s{}", t0.elapsed().as_secs_f64(), progress());
        }
        if Instant::now() > deadline {
            bail!(
                "only {}/{n} reached {want} after {:.0} min",
                hinted.unwrap_or(done),
                t0.elapsed().as_secs_f64() / 60.0
            );
        }
        std::thread::sleep(if hint.is_some() { Duration::from_secs(1) } else { list_every });
    }
}

/// kubectl arguments listing each StatefulSet's ready replicas, one a line
/// (one definition for the baseline and the operator runs).
const STATEFULSETS_READY: [&str; 5] =
    ["get", "statefulsets", "-A", "-o", "jsonpath={range .items[*]}{.status.readyReplicas}{\"\\n\"}{end}"];

/// The value of the metric line `key` (name and labels, then a space) in a
/// /metrics text.
pub(crate) fn metric(metrics: &str, key: &str) -> Option<f64> {
    metrics.lines().find_map(|l| l.strip_prefix(key)?.trim().parse::<f64>().ok())
}

/// The operator's `--concurrency` (reconcile workers per kind): its
/// default, 64, unless CRAFTPLANE_BENCH_ARGS sets it.
fn concurrency() -> f64 {
    let args = std::env::var("CRAFTPLANE_BENCH_ARGS").unwrap_or_default();
    let words: Vec<&str> = args.split_whitespace().collect();
    words
        .iter()
        .enumerate()
        .find_map(|(i, w)| match w.strip_prefix("--concurrency") {
            Some("") => words.get(i + 1)?.parse().ok(),
            Some(v) => v.strip_prefix('=')?.parse().ok(),
            None => None,
        })
        .unwrap_or(64.0)
}

/// Samples the operator's `craftplane_reconciles_in_flight` of
/// MinecraftServers twice a second on its own thread.
struct InFlightSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<f64>>,
    limit: f64,
}

impl InFlightSampler {
    fn start(port: u16, limit: f64) -> InFlightSampler {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let key = "craftplane_reconciles_in_flight{kind=\"MinecraftServer\"} ";
            let mut samples = Vec::new();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(m) = crate::http::get(port, "/metrics") {
                    samples.push(metric(&m, key).unwrap_or(0.0));
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            samples
        });
        InFlightSampler { stop, thread, limit }
    }

    /// (mean, share of samples at the limit).
    fn stop(self) -> (f64, f64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let s = self.thread.join().unwrap_or_default();
        if s.is_empty() {
            return (0.0, 0.0);
        }
        let n = s.len() as f64;
        (s.iter().sum::<f64>() / n, s.iter().filter(|v| **v >= self.limit).count() as f64 / n)
    }
}

/// The operator's `craftplane_servers{phase}` gauge, from its /metrics.
fn servers_in_phase(port: u16, phase: &str) -> Option<usize> {
    let metrics = crate::http::get(port, "/metrics").ok()?;
    let key = format!("craftplane_servers{{phase=\"{phase}\"}} ");
    metric(&metrics, &key).map(|v| v as usize)
}

fn baseline(
    sh: &Shell,
    tools: &Tools,
    bin: &Path,
    cluster: &Cluster,
    spread: Spread,
    asleep_percent: usize,
) -> Result<Duration> {
    let n = spread.n;
    let (sku, servers) = write_inputs(sh, tools, cluster, spread, asleep_percent)?;
    let rendered = cmd!(sh, "{bin} render --servers {servers} --skus {sku} --no-owner").quiet().read()?;
    let children = cluster.dir.join("bench-children.yaml");
    std::fs::write(&children, rendered)?;
    let t0 = Instant::now();
    apply_parallel(tools, cluster, &children)?;
    wait_count(sh, tools, cluster, &Goal { args: &STATEFULSETS_READY, want: "1", n, t0 }, None, &String::new)
}

/// File-backed resident MiB of a process (its mapped code and data pages).
fn rss_file_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("RssFile:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// (peak RSS MiB, current RSS MiB, CPU seconds) of a process.
fn proc_stats(pid: u32) -> (f64, f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| -> f64 {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0.0)
    };
    let (hwm_kib, rss_kib) = (kib("VmHWM:"), kib("VmRSS:"));
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    // After the command: state is field 3; utime 14, stime 15 (1-based) → indices 11, 12.
    let ticks: f64 = fields.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (hwm_kib / 1024.0, rss_kib / 1024.0, ticks / 100.0)
}

struct RunArgs {
    spread: Spread,
    mode: Mode,
    idle: Duration,
    resync_seconds: u64,
    baseline: Option<Duration>,
    asleep_percent: usize,
}

/// CPU seconds (user + system) of a process.
fn cpu_seconds(pid: u32) -> f64 {
    proc_stats(pid).2
}

/// The API server's request count and total seconds per (verb, resource),
/// from its own metrics.
fn apiserver_requests(sh: &Shell, tools: &Tools, cluster: &Cluster) -> BTreeMap<String, (f64, f64)> {
    let mut out: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    let text = kubectl(sh, tools, cluster, &["get", "--raw", "/metrics"]).unwrap_or_default();
    for line in text.lines() {
        let (which, rest) = if let Some(r) = line.strip_prefix("apiserver_request_duration_seconds_sum{") {
            (1, r)
        } else if let Some(r) = line.strip_prefix("apiserver_request_duration_seconds_count{") {
            (0, r)
        } else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else { continue };
        let label = |k: &str| {
            labels.split(',').find_map(|kv| kv.strip_prefix(&format!("{k}=\"")).map(|v| v.trim_end_matches('"')))
        };
        let key = format!("{} {}", label("verb").unwrap_or("?"), label("resource").unwrap_or("?"));
        let v: f64 = value.trim().parse().unwrap_or(0.0);
        let e = out.entry(key).or_default();
        if which == 0 { e.0 += v } else { e.1 += v }
    }
    out
}

fn operator_run(sh: &Shell, tools: &Tools, bin: &Path, cluster: &Cluster, a: &RunArgs) -> Result<Row> {
    let n = a.spread.n;
    let (sku, servers) = write_inputs(sh, tools, cluster, a.spread, a.asleep_percent)?;
    kubectl(sh, tools, cluster, &["apply", "-f", &sku.display().to_string()])?;
    let asleep = (0..n).filter(|i| sleeps(*i, a.asleep_percent)).count();
    // With sleepers every server is pinged (kwok pods answer nothing): one
    // backend here answers for all, 0 players online.
    let backend = if asleep > 0 {
        Some(crate::bench_gateway::Backend::start(std::net::Ipv4Addr::LOCALHOST.into(), 0)?)
    } else {
        None
    };
    let ping_args: Vec<String> = match &backend {
        Some(b) => vec!["--slp-interval=10".into(), format!("--slp-address={}", b.addr)],
        None => vec!["--slp-interval=0".into()],
    };
    let audit = cluster.audit_log();
    let components = cluster.running();
    let cpu_now = || -> BTreeMap<&'static str, f64> { components.iter().map(|(k, p)| (*k, cpu_seconds(*p))).collect() };
    let (op, port, t0, start_line, api_before, cpu_before) = match a.mode {
        Mode::Live => {
            let (op, port) = start_operator(bin, cluster, a.resync_seconds, &ping_args)?;
            let start_line = line_count(&audit);
            let api_before = apiserver_requests(sh, tools, cluster);
            let cpu_before = cpu_now();
            let t0 = Instant::now();
            apply_parallel(tools, cluster, &servers)?;
            (op, port, t0, start_line, api_before, cpu_before)
        }
        Mode::CatchUp => {
            apply_parallel(tools, cluster, &servers)?;
            println!("bench: {n} servers applied with no operator running; starting it");
            let start_line = line_count(&audit);
            let api_before = apiserver_requests(sh, tools, cluster);
            let cpu_before = cpu_now();
            let t0 = Instant::now();
            let (op, port) = start_operator(bin, cluster, a.resync_seconds, &ping_args)?;
            (op, port, t0, start_line, api_before, cpu_before)
        }
    };
    let pid = op.0.id();
    let progress = || {
        let (peak, rss, cpu) = proc_stats(pid);
        format!("; operator RSS {rss:.1} MiB (peak {peak:.1}, code pages {:.1}), CPU {cpu:.0}s", rss_file_mib(pid))
    };
    let sampler = InFlightSampler::start(port, concurrency());
    let (statefulsets_ready, took) = if asleep == 0 {
        let statefulsets_ready =
            wait_count(sh, tools, cluster, &Goal { args: &STATEFULSETS_READY, want: "1", n, t0 }, None, &progress)?;
        let took = wait_count(
            sh,
            tools,
            cluster,
            &Goal { args: &SERVER_PHASES, want: "Running", n, t0 },
            Some(&|| servers_in_phase(port, "Running")),
            &progress,
        )?;
        (statefulsets_ready, took)
    } else {
        let up = wait_count(
            sh,
            tools,
            cluster,
            &Goal { args: &SERVER_PHASES, want: "Running|Hibernated", n, t0 },
            Some(&|| Some(servers_in_phase(port, "Running")? + servers_in_phase(port, "Hibernated")?)),
            &progress,
        )?;
        let slept = wait_count(
            sh,
            tools,
            cluster,
            &Goal { args: &SERVER_PHASES, want: "Hibernated", n: asleep, t0 },
            Some(&|| servers_in_phase(port, "Hibernated")),
            &progress,
        )?;
        (up, slept)
    };
    let converged_line = line_count(&audit);
    let (in_flight_mean, in_flight_at_limit) = sampler.stop();
    let api_after = apiserver_requests(sh, tools, cluster);
    let component_cpu: BTreeMap<&'static str, f64> = components
        .iter()
        .map(|(k, p)| (*k, cpu_seconds(*p) - cpu_before.get(k).copied().unwrap_or(0.0)))
        .chain([("craftplane", cpu_seconds(pid))])
        .collect();
    let mut apiserver: Vec<(String, f64, f64)> = api_after
        .iter()
        .map(|(k, (c, s))| {
            let (c0, s0) = api_before.get(k).copied().unwrap_or_default();
            (k.clone(), c - c0, s - s0)
        })
        // Watches are open for the whole run: their "latency" is how long
        // they stayed open (at 10,000 servers they filled the list).
        .filter(|(k, c, _)| *c > 0.0 && !k.starts_with("WATCH "))
        .collect();
    apiserver.sort_by(|x, y| y.2.total_cmp(&x.2));
    let apiserver = apiserver.into_iter().take(8).map(|(k, c, s)| (k, c, s / c * 1000.0)).collect();
    let requests_by_verb = operator_requests(&audit, start_line, converged_line, |_| true);
    let metrics = crate::http::get(port, "/metrics").unwrap_or_default();
    let sum_of = |prefix: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let reconciles = sum_of("craftplane_reconciles_total{");
    let count = sum_of("craftplane_reconcile_duration_seconds_count{kind=\"MinecraftServer\"}");
    let reconcile_ms = if count > 0.0 {
        sum_of("craftplane_reconcile_duration_seconds_sum{kind=\"MinecraftServer\"}") / count * 1000.0
    } else {
        0.0
    };
    println!("bench: converged in {:.1}s; idle for {}s", took.as_secs_f64(), a.idle.as_secs());
    std::thread::sleep(a.idle);
    let idle_writes: usize = operator_requests(&audit, converged_line, line_count(&audit), |v| {
        matches!(v, "create" | "update" | "patch" | "delete" | "deletecollection")
    })
    .values()
    .sum();
    let (peak_rss_mib, idle_rss_mib, cpu_seconds) = proc_stats(pid);
    let idle_file_mib = rss_file_mib(pid);
    Ok(Row {
        n,
        namespaces: a.spread.namespaces,
        mode: a.mode,
        asleep,
        baseline: a.baseline,
        statefulsets_ready,
        craftplane: took,
        peak_rss_mib,
        idle_rss_mib,
        idle_file_mib,
        cpu_seconds,
        reconciles,
        reconcile_ms,
        in_flight_mean,
        in_flight_at_limit,
        requests_by_verb,
        idle_writes_per_min: idle_writes as f64 / (a.idle.as_secs_f64() / 60.0),
        idle_seconds: a.idle.as_secs_f64(),
        component_cpu,
        apiserver,
    })
}

/// Starts the operator (operator identity, no Server List Ping, extra flags
/// from CRAFTPLANE_BENCH_ARGS) and waits until it is ready; returns it and
/// its HTTP port.
fn start_operator(bin: &Path, cluster: &Cluster, resync_seconds: u64, ping_args: &[String]) -> Result<(Proc, u16)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let log = std::fs::File::create(cluster.dir.join("logs").join("operator.log"))?;
    let child = Command::new(bin)
        .args(["controller", "--log-format", "json"])
        .args(ping_args)
        .arg(format!("--resync-seconds={resync_seconds}"))
        .args(std::env::var("CRAFTPLANE_BENCH_ARGS").unwrap_or_default().split_whitespace())
        .arg("--http-addr")
        .arg(format!("127.0.0.1:{port}"))
        .env("KUBECONFIG", cluster.operator_kubeconfig())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("start operator")?;
    let op = Proc(child);
    let ready_deadline = Instant::now() + Duration::from_secs(30);
    while crate::http::get(port, "/readyz").map(|b| !b.starts_with("HTTP/1.0 200")).unwrap_or(true) {
        if Instant::now() > ready_deadline {
            bail!("operator not ready");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok((op, port))
}

/// Lines in a file, read in pieces (the audit log reaches gigabytes at
/// 10,000 servers).
fn line_count(path: &Path) -> usize {
    use std::io::BufRead as _;
    std::fs::File::open(path).map(|f| std::io::BufReader::new(f).split(b'\n').count()).unwrap_or(0)
}

/// Requests of the operator's user between two audit-log line numbers.
fn operator_requests(path: &Path, from: usize, to: usize, verb_ok: impl Fn(&str) -> bool) -> BTreeMap<String, usize> {
    use std::io::BufRead as _;
    let mut out = BTreeMap::new();
    let Ok(file) = std::fs::File::open(path) else { return out };
    for line in std::io::BufReader::new(file).lines().map_while(Result::ok).skip(from).take(to.saturating_sub(from)) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
        if v["user"]["username"] != "craftplane-operator" || v["stage"] != "ResponseComplete" {
            continue;
        }
        let verb = v["verb"].as_str().unwrap_or("?");
        if verb_ok(verb) {
            *out.entry(verb.to_string()).or_default() += 1;
        }
    }
    out
}

/// craftplane's time over the baseline's, or "—" without a baseline.
fn ratio(r: &Row) -> String {
    r.baseline.map_or("—".into(), |b| format!("{:.2}", r.craftplane.as_secs_f64() / b.as_secs_f64()))
}

fn table(rows: &[Row]) -> String {
    let mut t = String::from(
        "| N | mode | baseline (s) | StatefulSets ready (s) | Running (s) | ratio | peak RSS (MiB) | RSS after idle (MiB) | of which code pages (MiB) | CPU (s) | reconciles | API requests / server | writes / server | idle writes / min (window s) | requests by verb |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let total: usize = r.requests_by_verb.values().sum();
        let writes: usize = r
            .requests_by_verb
            .iter()
            .filter(|(k, _)| matches!(k.as_str(), "create" | "update" | "patch" | "delete" | "deletecollection"))
            .map(|(_, v)| v)
            .sum();
        let verbs: Vec<String> = r.requests_by_verb.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(
            t,
            "| {} | {} | {} | {:.1} | {:.1} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} | {:.1} | {:.1} | {:.1} ({:.0}) | {} |",
            if r.namespaces > 1 { format!("{} in {} namespaces", r.n, r.namespaces) } else { r.n.to_string() },
            if r.asleep > 0 {
                format!(
                    "{} ({} asleep: columns 4 and 5 are all Running or Hibernated, then those Hibernated)",
                    r.mode.name(),
                    r.asleep
                )
            } else {
                r.mode.name().to_string()
            },
            r.baseline.map_or("skipped".into(), |b| format!("{:.1}", b.as_secs_f64())),
            r.statefulsets_ready.as_secs_f64(),
            r.craftplane.as_secs_f64(),
            ratio(r),
            r.peak_rss_mib,
            r.idle_rss_mib,
            r.idle_file_mib,
            r.cpu_seconds,
            r.reconciles,
            total as f64 / r.n as f64,
            writes as f64 / r.n as f64,
            r.idle_writes_per_min,
            r.idle_seconds,
            verbs.join(", ")
        );
    }
    t
}

/// `cargo xtask bench soak`: N servers flapping between Running and Stopped
/// for a while; the operator's RSS at the start, its peak and at the end.
pub fn soak(sh: &Shell, n: usize, minutes: u64, flip_seconds: u64) -> Result<()> {
    let tools = tools::ensure(sh)?;
    // The binary the operator image ships (profile `image`).
    let bin = crate::images::build_release_binary(sh, crate::images::Profile::Image)?;
    let rows = with_cluster(sh, &format!("bench-soak-{}", std::process::id()), |cluster| {
        let (sku, servers) = write_inputs(sh, &tools, cluster, Spread { n, namespaces: 1 }, 0)?;
        kubectl(sh, &tools, cluster, &["apply", "-f", &sku.display().to_string()])?;
        let stopped = cluster.dir.join("bench-servers-stopped.yaml");
        std::fs::write(
            &stopped,
            std::fs::read_to_string(&servers)?.replace("  eula: true\n", "  eula: true\n  state: Stopped\n"),
        )?;
        let running = cluster.dir.join("bench-servers-running.yaml");
        std::fs::write(
            &running,
            std::fs::read_to_string(&servers)?.replace("  eula: true\n", "  eula: true\n  state: Running\n"),
        )?;
        let (mut op, port) = start_operator(&bin, cluster, 300, &["--slp-interval=0".to_string()])?;
        let pid = op.0.id();
        let t0 = Instant::now();
        kubectl(sh, &tools, cluster, &["apply", "--server-side", "-f", &running.display().to_string()])?;
        let hint = || servers_in_phase(port, "Running");
        wait_count(
            sh,
            &tools,
            cluster,
            &Goal { args: &SERVER_PHASES, want: "Running", n, t0 },
            Some(&hint),
            &String::new,
        )?;
        let (_, start_rss, _) = proc_stats(pid);
        println!(
            "bench: {n} servers Running; RSS {start_rss:.1} MiB; flapping every {flip_seconds}s for {minutes} min"
        );
        let end = Instant::now() + Duration::from_secs(minutes * 60);
        let mut flips = 0;
        let mut samples = Vec::new();
        while Instant::now() < end {
            let file = if flips % 2 == 0 { &stopped } else { &running };
            kubectl(sh, &tools, cluster, &["apply", "--server-side", "-f", &file.display().to_string()])?;
            flips += 1;
            std::thread::sleep(Duration::from_secs(flip_seconds));
            let (_, rss, _) = proc_stats(pid);
            samples.push(rss);
            println!("bench: flip {flips}: RSS {rss:.1} MiB");
        }
        // Settle in the Running state, then read the end figures.
        kubectl(sh, &tools, cluster, &["apply", "--server-side", "-f", &running.display().to_string()])?;
        let goal = Goal { args: &SERVER_PHASES, want: "Running", n, t0: Instant::now() };
        wait_count(sh, &tools, cluster, &goal, Some(&hint), &String::new)?;
        let (peak, end_rss, cpu) = proc_stats(pid);
        // The same process ran throughout: it must still be running.
        if let Some(status) = op.0.try_wait()? {
            bail!("the operator exited during the soak: {status}");
        }
        Ok((start_rss, peak, end_rss, cpu, flips, samples))
    })?;
    let (start_rss, peak, end_rss, cpu, flips, samples) = rows;
    let date = cmd!(sh, "date -u +%Y-%m-%d").read().unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let text = format!(
        "\n## Soak: {date}, {cores} cores, {n} servers flapping Running/Stopped every {flip_seconds}s for {minutes} min\n\n| flips | RSS at start (MiB) | peak (MiB) | RSS at end (MiB) | CPU (s) | RSS samples (MiB) |\n|---|---|---|---|---|---|\n| {flips} | {start_rss:.1} | {peak:.1} | {end_rss:.1} | {cpu:.1} | {} |\n",
        samples.iter().map(|s| format!("{s:.0}")).collect::<Vec<_>>().join(" ")
    );
    print!("{text}");
    let path = crate::project_root().join("BENCHMARKS.md");
    let mut doc = std::fs::read_to_string(&path).unwrap_or_default();
    doc.push_str(&text);
    std::fs::write(&path, doc)?;
    Ok(())
}
