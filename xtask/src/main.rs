//! `cargo xtask`: the project's developer commands.

mod bench;
mod bench_backup;
mod bench_gateway;
mod cluster;
mod dev;
mod e2e;
mod e2e_gateway;
mod e2e_live;
mod e2e_netpol;
mod e2e_rbac;
mod e2e_real;
mod e2e_sleep;
mod http;
mod images;
mod node;
mod slp;
mod testrun;
mod tools;
mod versions;

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};
use xshell::{Shell, cmd};

use cluster::Cluster;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "craftplane developer tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok).
    Cluster {
        #[command(subcommand)]
        action: ClusterAction,
    },
    /// Regenerate crds/ (and the chart's copy) from the Rust types.
    Crds,
    /// Run every test: unit tests, and integration tests against a fresh
    /// control plane started for this run and stopped afterwards.
    Test {
        /// Leave out the end-to-end suite (counted as skipped, never as
        /// passed; for quick local runs, CI runs everything).
        #[arg(long)]
        no_e2e: bool,
        /// Extra arguments for `cargo test` (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Build the Go components into ~/.cache/craftplane and install the real
    /// node's Debian packages, without starting anything.
    Tools,
    /// Build craftplane's OCI images (operator, pause) into
    /// ~/.cache/craftplane/images; load them into the dev cluster's real node.
    Images,
    /// The main job: control plane and real node up, a local S3 store, examples/
    /// applied (the example server on the real node, TEST image), operator running.
    Dev,
    /// Benchmarks (figures printed and appended to BENCHMARKS.md).
    Bench {
        #[command(subcommand)]
        which: BenchKind,
    },
    /// End-to-end: the Helm chart on a fresh control plane, the operator as
    /// its ServiceAccount, examples/ applied and checked, metrics scraped.
    E2e {
        /// Only the chart install and this scenario (a fresh cluster still).
        #[arg(long, value_enum)]
        only: Option<e2e::Only>,
    },
}

#[derive(Subcommand)]
enum BenchKind {
    /// The player gateway beside HAProxy (TCP mode) and a direct
    /// connection: setup latency, throughput, RSS with many routes and open
    /// connections (xtask/src/bench_gateway.rs).
    Gateway {
        /// Status connections per path per run (sequential).
        #[arg(long, default_value_t = 500)]
        connections: usize,
        /// MiB per bulk transfer.
        #[arg(long, default_value_t = 256)]
        mib: usize,
        /// MinecraftServers (hostnames) the gateway loads.
        #[arg(long, default_value_t = 10_000)]
        routes: usize,
        /// Connections held open for the RSS figure.
        #[arg(long, default_value_t = 1000)]
        open: usize,
        /// Runs over all the paths (direct, HAProxy two ways, the gateway; each proxy at one thread and at its default).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Clients connecting at once in the many-clients round (each proxy
        /// at its default; each client makes a tenth of --connections).
        #[arg(long, default_value_t = 16)]
        clients: usize,
    },
    /// N servers on one operator beside the API server's own limit.
    Scale {
        /// Server counts to run (default 100 and 1000).
        #[arg(long = "servers", value_delimiter = ',', default_values_t = vec![100usize, 1000])]
        servers: Vec<usize>,
        /// Seconds of idleness after convergence in which writes are counted
        /// (default: two of the operator's resync periods and 15 s).
        #[arg(long)]
        idle_seconds: Option<u64>,
        /// The operator's --resync-seconds in the bench (shorter than its
        /// 300 s default so the idle window covers two resyncs).
        #[arg(long, default_value_t = 60)]
        resync_seconds: u64,
        /// Modes: live (operator running while the servers are applied),
        /// catch-up (servers applied first, then the operator starts).
        #[arg(long, value_delimiter = ',', default_values = ["live", "catch-up"])]
        modes: Vec<bench::Mode>,
        /// Runs of each count and mode (medians reported when more than one).
        #[arg(long, default_value_t = 1)]
        runs: usize,
        /// Run only the operator side (no baseline, no ratio): for counts
        /// whose baseline alone outlasts the time at hand.
        #[arg(long)]
        skip_baseline: bool,
        /// Namespaces the servers are spread over, as tenants' servers are
        /// (1: all in one namespace, the worst case for the controllers'
        /// per-namespace lists).
        #[arg(long, default_value_t = 1)]
        namespaces: usize,
        /// Percent of the servers that sleep (`spec.sleep.afterIdle: 10s`,
        /// pinged at one local status backend answering 0 players): the
        /// run converges when they are all Hibernated, then idles.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
        asleep_percent: u8,
    },
    /// N servers flapping between Running and Stopped; RSS at start and end.
    Soak {
        #[arg(long, default_value_t = 200)]
        servers: usize,
        #[arg(long, default_value_t = 10)]
        minutes: u64,
        /// Seconds between flips.
        #[arg(long, default_value_t = 30)]
        flip_seconds: u64,
    },
    /// craftplane backup of a generated world beside tar | zstd | aws s3 cp.
    Backup {
        /// World size in MiB (at least 1024).
        #[arg(long, default_value_t = 1024)]
        mib: usize,
    },
}

#[derive(Subcommand)]
enum ClusterAction {
    /// Start it (idempotent). Builds the components on first use.
    Up {
        /// Create a kind cluster instead (needs kind and a running Docker engine).
        #[arg(long)]
        kind: bool,
    },
    /// Stop every component and delete the cluster's state.
    Down {
        /// Delete the kind cluster instead.
        #[arg(long)]
        kind: bool,
        /// Another cluster under ~/.cache/craftplane/clusters (e.g. an
        /// interrupted e2e's `e2e-<pid>`) instead of the dev one.
        #[arg(long, conflicts_with = "kind")]
        name: Option<String>,
    },
    /// Show which components run and whether the API is ready.
    Status,
    /// Print the path of the admin kubeconfig.
    Kubeconfig,
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<ExitCode> {
    let cli = Cli::parse();
    let sh = Shell::new()?;
    sh.change_dir(project_root());
    match cli.command {
        Command::Cluster { action } => match action {
            ClusterAction::Up { kind: false } => Cluster::dev().up(&sh)?,
            ClusterAction::Up { kind: true } => kind_up(&sh)?,
            ClusterAction::Down { kind: false, name } => {
                let cluster = match name {
                    Some(n) if !n.is_empty() && !n.contains('/') && n != "." && n != ".." => {
                        let c = Cluster::ephemeral(&n);
                        if !c.dir.exists() {
                            anyhow::bail!("no cluster at {}", c.dir.display());
                        }
                        c
                    }
                    Some(n) => anyhow::bail!("{n:?} is not a cluster name"),
                    None => Cluster::dev(),
                };
                cluster.down()?;
                eprintln!("xtask: control plane stopped, state removed");
            }
            ClusterAction::Down { kind: true, .. } => {
                cmd!(sh, "kind delete cluster --name craftplane").run()?;
            }
            ClusterAction::Status => {
                if !Cluster::dev().status(&sh)? {
                    return Ok(ExitCode::FAILURE);
                }
            }
            ClusterAction::Kubeconfig => println!("{}", Cluster::dev().kubeconfig().display()),
        },
        Command::Crds => write_crds(&sh)?,
        Command::Images => images::run(&sh)?,
        Command::Tools => {
            let t = tools::ensure(&sh)?;
            node::ensure_packages(&sh)?;
            images::ensure_pause(&sh)?;
            let npm = tools::ensure_npm_peers(&sh)?;
            let s3 = tools::ensure_s3s_fs(&sh)?;
            tools::ensure_kstatus_check(&sh)?;
            tools::ensure_argocd_health(&sh)?;
            tools::ensure_promtool(&sh)?;
            tools::ensure_promql_names(&sh)?;
            eprintln!(
                "xtask: components ready: {t:#?}\nxtask: test peers in {}\nxtask: S3 server {}",
                npm.display(),
                s3.display()
            );
        }
        Command::Test { args, no_e2e } => return test(&sh, &args, !no_e2e),
        Command::Dev => dev::run(&sh)?,
        Command::E2e { only } => e2e::run(&sh, only)?,
        Command::Bench { which: BenchKind::Backup { mib } } => bench_backup::run(&sh, mib)?,
        Command::Bench { which: BenchKind::Gateway { connections, mib, routes, open, runs, clients } } => {
            bench_gateway::run(&sh, &bench_gateway::Args { connections, mib, routes, open, runs, clients })?
        }
        Command::Bench { which: BenchKind::Soak { servers, minutes, flip_seconds } } => {
            bench::soak(&sh, servers, minutes, flip_seconds)?
        }
        Command::Bench {
            which:
                BenchKind::Scale {
                    servers,
                    idle_seconds,
                    resync_seconds,
                    modes,
                    runs,
                    skip_baseline,
                    namespaces,
                    asleep_percent,
                },
        } => bench::scale(
            &sh,
            &bench::ScaleArgs {
                counts: servers,
                modes,
                runs: runs.max(1),
                idle: idle_seconds.map(std::time::Duration::from_secs),
                resync_seconds,
                skip_baseline,
                namespaces,
                asleep_percent: asleep_percent.into(),
            },
        )?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Cargo's target directory: `CARGO_TARGET_DIR` when set (CI keeps it under
/// ~/.cache/craftplane), else `target/` in the workspace.
pub fn target_dir() -> std::path::PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => {
            let d = std::path::PathBuf::from(d);
            if d.is_absolute() { d } else { project_root().join(d) }
        }
        _ => project_root().join("target"),
    }
}

/// The workspace root. `cargo run` sets CARGO_MANIFEST_DIR at run time too,
/// and that one wins: a target directory shared by clones at other paths
/// (CI's) may hold an xtask binary compiled in another checkout.
pub fn project_root() -> std::path::PathBuf {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    dir.parent().expect("xtask lives in the workspace").to_path_buf()
}

fn write_crds(sh: &Shell) -> Result<()> {
    let yaml = cmd!(sh, "cargo run --quiet --bin craftplane -- crds").read()?;
    sh.write_file("crds/craftplane.yaml", format!("{yaml}\n"))?;
    sh.write_file("charts/craftplane/crds/craftplane.yaml", format!("{yaml}\n"))?;
    let rules = cmd!(sh, "cargo run --quiet --bin craftplane -- rbac").read()?;
    sh.write_file("charts/craftplane/files/operator-rules.yaml", format!("{rules}\n"))?;
    eprintln!(
        "xtask: wrote crds/craftplane.yaml, charts/craftplane/crds/craftplane.yaml and charts/craftplane/files/operator-rules.yaml"
    );
    Ok(())
}

fn test(sh: &Shell, args: &[String], e2e: bool) -> Result<ExitCode> {
    let t0 = std::time::Instant::now();
    cluster::reap_abandoned_test_clusters();
    let mut phases = Phases::start();
    cmd!(sh, "cargo fmt --all --check").run().map_err(|_| anyhow::anyhow!("code is not formatted: run `cargo fmt`"))?;
    cmd!(sh, "cargo clippy --workspace --all-targets --locked -- -D warnings").run()?;
    phases.mark("fmt and clippy");
    // Build first, so compile errors show before a cluster starts.
    cmd!(sh, "cargo test --workspace --no-run --locked").run()?;
    phases.mark("test build");
    // The e2e's operator image binary builds while the integration tests
    // run (they mostly wait on the API server): at the lowest CPU priority,
    // so it takes only the idle cycles; the e2e then finds it built.
    let prebuild = e2e.then(|| images::prebuild_release_binary(images::Profile::E2e));
    tools::ensure(sh)?;
    let node_modules = tools::ensure_npm_peers(sh)?;
    let s3s_fs = tools::ensure_s3s_fs(sh)?;
    let kstatus = tools::ensure_kstatus_check(sh)?;
    let argocd = tools::ensure_argocd_health(sh)?;
    let promtool = tools::ensure_promtool(sh)?;
    let promql_names = tools::ensure_promql_names(sh)?;
    // The integration tests use kwok pods only; the real node is started by
    // the lifecycle test and the e2e suite on their own control planes.
    let cluster = Cluster::ephemeral(&format!("test-{}", std::process::id())).kwok_only();
    let started = cluster.up(sh);
    let result = started.map(|()| {
        let kc = cluster.kubeconfig();
        let tools = tools::Tools::locate();
        let _env = sh.push_env("CRAFTPLANE_TEST_KUBECONFIG", &kc);
        let _kubectl = sh.push_env("CRAFTPLANE_KUBECTL", &tools.kubectl);
        let _node = sh.push_env("CRAFTPLANE_NODE_MODULES", &node_modules);
        let _s3 = sh.push_env("CRAFTPLANE_S3S_FS", &s3s_fs);
        let _kstatus = sh.push_env("CRAFTPLANE_KSTATUS_CHECK", &kstatus);
        let _argocd = sh.push_env("CRAFTPLANE_ARGOCD_HEALTH", &argocd);
        let _promtool = sh.push_env("CRAFTPLANE_PROMTOOL", &promtool);
        let _promql = sh.push_env("CRAFTPLANE_PROMQL_NAMES", &promql_names);
        let _helm = sh.push_env("CRAFTPLANE_HELM", &tools.helm);
        let _op = sh.push_env("CRAFTPLANE_TEST_OPERATOR_KUBECONFIG", cluster.operator_kubeconfig());
        let _op2 = sh.push_env("CRAFTPLANE_TEST_OPERATOR2_KUBECONFIG", cluster.dir.join("operator2.kubeconfig"));
        let _audit = sh.push_env("CRAFTPLANE_TEST_AUDIT_LOG", cluster.audit_log());
        let skips = std::env::temp_dir().join(format!("craftplane-skipped-{}", std::process::id()));
        let _ = std::fs::remove_file(&skips);
        let _skips = sh.push_env(SKIPPED_ENV, &skips);
        let mut counts = run_tests(sh, args);
        // Checks a test could not make (see `skipped`): not passes.
        for reason in std::fs::read_to_string(&skips).unwrap_or_default().lines() {
            eprintln!("xtask: skipped: {reason}");
            counts.ignored += 1;
        }
        let _ = std::fs::remove_file(&skips);
        // The operator ran under the chart's rules: none of its writes may
        // have been refused, and every write granted must have been used
        // (only meaningful over the whole suite, not a filtered run).
        if !args.is_empty() {
            eprintln!("xtask: the operator RBAC audit check was NOT run (tests filtered): counted as skipped");
            counts.ignored += 1;
        } else {
            let kube = e2e::Kube { kubectl: tools.kubectl.clone(), kubeconfig: kc.clone() };
            let users = cluster::OPERATOR_USERS;
            match e2e_rbac::check(
                &kube,
                &cluster.audit_log(),
                &users,
                "craftplane-test-operator",
                e2e_rbac::INTEGRATION_ELSEWHERE,
            ) {
                Ok(()) => counts.passed += 1,
                Err(e) => {
                    eprintln!("xtask: operator RBAC over the integration tests: {e:#}");
                    counts.failed += 1;
                }
            }
        }
        counts
    });
    let stopped = cluster.down();
    let mut counts = result?;
    stopped?;
    phases.mark("integration tests");
    // The stand-in server image's own contract, on a host process.
    match images::test_server_selftest(sh) {
        Ok((passed, failed)) => {
            counts.passed += passed;
            counts.failed += failed;
        }
        Err(e) => {
            eprintln!("xtask: test server self-test failed: {e:#}");
            counts.failed += 1;
        }
    }
    phases.mark("test server self-test");
    if let Some(prebuild) = prebuild {
        // Its errors show again (in full) when the e2e builds the binary.
        let _ = prebuild.join();
        phases.mark("waiting for the image binary");
    }
    // End-to-end on a fresh control plane (only when the tests passed).
    if !e2e {
        eprintln!("xtask: the end-to-end suite was NOT run (--no-e2e): counted as skipped");
        counts.ignored += 1;
    } else if counts.failed > 0 {
        eprintln!("xtask: the end-to-end suite was NOT run (tests failed before it): counted as skipped");
        counts.ignored += 1;
    } else {
        match e2e::run(sh, None) {
            Ok(()) => counts.passed += 1,
            Err(e) => {
                eprintln!("xtask: e2e failed: {e:#}");
                counts.failed += 1;
            }
        }
    }
    phases.mark("e2e");
    phases.print();
    eprintln!("xtask: test run took {:.0?}", t0.elapsed());
    // One closing line for the whole run (cargo test binaries + e2e).
    println!("xtask: {} passed, {} failed, {} skipped", counts.passed, counts.failed, counts.ignored);
    Ok(if counts.failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Runs every test binary (even after a failure), a few at a time
/// (`testrun`), and adds up their results: tests filtered out count as
/// skipped, and a binary that ended without a result (it crashed, or was
/// killed) counts as one failure.
fn run_tests(sh: &Shell, args: &[String]) -> TestCounts {
    match testrun::binaries(sh.current_dir().as_path()) {
        Ok(bins) => testrun::run(bins, args, &sh_env(sh)),
        Err(e) => {
            eprintln!("xtask: cannot list the test binaries: {e:#}");
            TestCounts { failed: 1, ..Default::default() }
        }
    }
}

/// The counts of a libtest closing line (`test result: ok. 3 passed; 0
/// failed; 1 ignored; 0 measured; 2 filtered out; …`); filtered-out tests
/// count as skipped.
fn result_line(line: &str) -> Option<TestCounts> {
    let rest = line.strip_prefix("test result: ")?;
    let num = |word: &str| {
        rest.split(';')
            .find_map(|p| {
                p.trim().strip_suffix(word).map(|n| {
                    n.trim().trim_start_matches("ok.").trim_start_matches("FAILED.").trim().parse::<u64>().unwrap_or(0)
                })
            })
            .unwrap_or(0)
    };
    Some(TestCounts { passed: num("passed"), failed: num("failed"), ignored: num("ignored") + num("filtered out") })
}

/// Wall-clock time of each phase of `cargo xtask test`, printed at the end
/// (where CI's minutes go).
struct Phases {
    done: Vec<(&'static str, std::time::Duration)>,
    last: std::time::Instant,
}

impl Phases {
    fn start() -> Phases {
        Phases { done: Vec::new(), last: std::time::Instant::now() }
    }

    /// Ends `phase` now (it began at the previous mark).
    fn mark(&mut self, phase: &'static str) {
        let now = std::time::Instant::now();
        self.done.push((phase, now - self.last));
        self.last = now;
    }

    fn print(&self) {
        for (phase, took) in &self.done {
            eprintln!("xtask: phase {phase}: {:.0}s", took.as_secs_f64());
        }
    }
}

/// Tests counted across every test binary (and the e2e suite).
#[derive(Clone, Copy, Debug, Default)]
struct TestCounts {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl TestCounts {
    fn add(&mut self, o: TestCounts) {
        self.passed += o.passed;
        self.failed += o.failed;
        self.ignored += o.ignored;
    }
}

/// File where a test run by `cargo xtask test` records a check it could not
/// make (one line each), counted as skipped in the closing line.
const SKIPPED_ENV: &str = "CRAFTPLANE_TEST_SKIPPED";

/// A check of an xtask test that cannot be made here: recorded for `cargo
/// xtask test`'s closing line as skipped; outside it (nothing to record it
/// in) a test failure, so it is never silently a pass.
#[cfg(test)]
pub(crate) fn skipped(reason: &str) {
    use std::io::Write;
    let Some(file) = std::env::var_os(SKIPPED_ENV) else {
        panic!("cannot check: {reason} (run through `cargo xtask test` to count it as skipped)");
    };
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(file).expect("open the skipped-checks file");
    writeln!(f, "{reason}").expect("record a skipped check");
}

/// The environment variables pushed onto the shell, for a std Command.
fn sh_env(sh: &Shell) -> Vec<(String, std::ffi::OsString)> {
    [
        "CRAFTPLANE_TEST_KUBECONFIG",
        "CRAFTPLANE_KUBECTL",
        "CRAFTPLANE_NODE_MODULES",
        "CRAFTPLANE_S3S_FS",
        "CRAFTPLANE_KSTATUS_CHECK",
        "CRAFTPLANE_ARGOCD_HEALTH",
        "CRAFTPLANE_PROMTOOL",
        "CRAFTPLANE_PROMQL_NAMES",
        "CRAFTPLANE_HELM",
        "CRAFTPLANE_TEST_OPERATOR_KUBECONFIG",
        "CRAFTPLANE_TEST_OPERATOR2_KUBECONFIG",
        "CRAFTPLANE_TEST_AUDIT_LOG",
        SKIPPED_ENV,
    ]
    .into_iter()
    .filter_map(|k| sh.var_os(k).map(|v| (k.to_string(), v)))
    .collect()
}

fn kind_up(sh: &Shell) -> Result<()> {
    let have_kind = cmd!(sh, "kind version").quiet().ignore_stdout().ignore_stderr().run().is_ok();
    let have_docker = cmd!(sh, "docker info").quiet().ignore_stdout().ignore_stderr().run().is_ok();
    if !have_kind || !have_docker {
        bail!(
            "--kind needs `kind` on PATH and a running Docker engine (kind: {}, docker engine: {}); \
             without them use `cargo xtask cluster up`",
            if have_kind { "found" } else { "missing" },
            if have_docker { "running" } else { "not reachable" }
        );
    }
    let exists = cmd!(sh, "kind get clusters").read()?.lines().any(|l| l.trim() == "craftplane");
    if !exists {
        cmd!(sh, "kind create cluster --name craftplane --wait 120s").run()?;
    }
    cmd!(sh, "kind export kubeconfig --name craftplane").run()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_lines_count_filtered_out_as_skipped() {
        let c = result_line(
            "test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 7 filtered out; finished in 0.01s",
        )
        .unwrap();
        assert_eq!((c.passed, c.failed, c.ignored), (3, 0, 8));
        let c = result_line("test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out").unwrap();
        assert_eq!((c.passed, c.failed, c.ignored), (2, 1, 0));
        assert!(result_line("running 3 tests").is_none());
    }
}
