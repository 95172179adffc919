//! Runs the workspace's test binaries a few at a time against the one test
//! control plane (`cargo xtask test`'s integration phase).
//!
//! `cargo test` runs its binaries one after another, each waiting mostly on
//! the API server; their tests are namespaced by shard and already run in
//! parallel threads within a binary, so binaries can run side by side too.
//! The slowest known binaries start first (durations of the last run,
//! kept beside the build); each binary's output is printed whole when it
//! ends, under cargo's own `Running …` header. A binary that takes the
//! control plane away from the others ([`ALONE`]) runs by itself at the end.

use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::TestCounts;

/// Binaries at once, unless `CRAFTPLANE_TEST_JOBS` says otherwise.
const DEFAULT_JOBS: usize = 3;

/// Binaries that run alone, after the others: they take the control plane
/// away (the API server restarted) from every test beside them.
const ALONE: &[&str] = &["tests/apiserver_restart.rs"];

/// A test executable built by `cargo test --no-run`.
#[derive(Clone, Debug)]
pub struct Binary {
    /// As cargo shows it: `tests/sleep.rs`, `unittests src/lib.rs`.
    pub name: String,
    pub exe: PathBuf,
    /// Its package's directory (cargo runs tests from there).
    pub dir: PathBuf,
}

/// The workspace's test binaries (built if needed), from cargo's JSON.
pub fn binaries(root: &std::path::Path) -> Result<Vec<Binary>> {
    let out = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["test", "--workspace", "--locked", "--no-run", "--message-format=json-render-diagnostics"])
        .current_dir(root)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("run cargo test --no-run")?;
    if !out.status.success() {
        bail!("cargo test --no-run failed");
    }
    Ok(parse_artifacts(&String::from_utf8_lossy(&out.stdout), root))
}

/// Test executables from cargo's `compiler-artifact` messages.
fn parse_artifacts(json_lines: &str, root: &std::path::Path) -> Vec<Binary> {
    let mut bins = Vec::new();
    for line in json_lines.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if v["reason"] != "compiler-artifact" || v["profile"]["test"] != true {
            continue;
        }
        let Some(exe) = v["executable"].as_str() else { continue };
        let manifest = PathBuf::from(v["manifest_path"].as_str().unwrap_or_default());
        let dir = manifest.parent().map(PathBuf::from).unwrap_or_else(|| root.to_path_buf());
        let src = PathBuf::from(v["target"]["src_path"].as_str().unwrap_or_default());
        let rel = src.strip_prefix(&dir).unwrap_or(&src).display().to_string();
        let kinds: Vec<&str> =
            v["target"]["kind"].as_array().into_iter().flatten().filter_map(|k| k.as_str()).collect();
        let name = if kinds.contains(&"test") { rel } else { format!("unittests {rel}") };
        let name = match dir.strip_prefix(root) {
            Ok(p) if !p.as_os_str().is_empty() => format!("{name} ({})", p.display()),
            _ => name,
        };
        bins.push(Binary { name, exe: PathBuf::from(exe), dir });
    }
    bins
}

/// Durations of the last run, by binary name (seconds).
fn load_durations(file: &std::path::Path) -> HashMap<String, f64> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (secs, name) = l.split_once('\t')?;
            Some((name.to_string(), secs.parse().ok()?))
        })
        .collect()
}

/// Unknown binaries first, then the slowest.
fn order(mut bins: Vec<Binary>, known: &HashMap<String, f64>) -> Vec<Binary> {
    bins.sort_by(|a, b| {
        let d = |x: &Binary| known.get(&x.name).copied().unwrap_or(f64::INFINITY);
        d(b).total_cmp(&d(a)).then_with(|| a.name.cmp(&b.name))
    });
    bins
}

/// Runs every binary with the libtest arguments `args` and environment
/// `env`, `CRAFTPLANE_TEST_JOBS` (default 3) at a time; adds up their
/// results. A binary that ends without a result line (crashed, killed)
/// counts as one failure; so does a non-zero exit without failed tests.
pub fn run(bins: Vec<Binary>, args: &[String], env: &[(String, std::ffi::OsString)]) -> TestCounts {
    let jobs = std::env::var("CRAFTPLANE_TEST_JOBS").ok().and_then(|j| j.parse().ok()).unwrap_or(DEFAULT_JOBS).max(1);
    let durations_file = crate::target_dir().join("xtask-test-durations.tsv");
    let known = load_durations(&durations_file);
    let (alone, shared): (Vec<Binary>, Vec<Binary>) = bins.into_iter().partition(|b| ALONE.contains(&b.name.as_str()));
    let queue = Mutex::new(order(shared, &known).into_iter().collect::<VecDeque<_>>());
    let logs = crate::target_dir().join("xtask-test-logs");
    let _ = std::fs::create_dir_all(&logs);
    let total = Mutex::new(TestCounts::default());
    let took = Mutex::new(Vec::<(String, f64)>::new());
    let print = Mutex::new(());
    eprintln!("xtask: running test binaries {jobs} at a time");
    // Runs one binary, prints its output whole, adds up its counts and time.
    let run_and_report = |bin: &Binary, log: &std::path::Path| {
        let t0 = Instant::now();
        let (counts, text) = run_one(bin, args, env, log);
        let secs = t0.elapsed().as_secs_f64();
        {
            let _p = print.lock().unwrap();
            eprintln!("     Running {} ({:.1} s)", bin.name, secs);
            println!("{text}");
        }
        total.lock().unwrap().add(counts);
        took.lock().unwrap().push((bin.name.clone(), secs));
    };
    std::thread::scope(|s| {
        for worker in 0..jobs {
            let (queue, logs, run_and_report) = (&queue, &logs, &run_and_report);
            s.spawn(move || {
                loop {
                    // The queue's lock is released before the binary runs.
                    let Some(bin) = queue.lock().unwrap().pop_front() else { break };
                    run_and_report(&bin, &logs.join(format!("worker-{worker}.log")));
                }
            });
        }
    });
    for bin in alone {
        eprintln!("xtask: {} runs alone (nothing beside it)", bin.name);
        run_and_report(&bin, &logs.join("alone.log"));
    }
    let took = took.into_inner().unwrap();
    // Only a full run says how long each binary takes.
    if args.is_empty() {
        let text: String = took.iter().map(|(n, s)| format!("{s:.1}\t{n}\n")).collect();
        let _ = std::fs::write(&durations_file, text);
    }
    total.into_inner().unwrap()
}

/// One binary, its stdout and stderr in one file (in order); its counts
/// and output.
fn run_one(
    bin: &Binary,
    args: &[String],
    env: &[(String, std::ffi::OsString)],
    log: &std::path::Path,
) -> (TestCounts, String) {
    let failed = |why: String| (TestCounts { failed: 1, ..Default::default() }, why);
    let file = match std::fs::File::create(log) {
        Ok(f) => f,
        Err(e) => return failed(format!("xtask: cannot create {}: {e}", log.display())),
    };
    let err = match file.try_clone() {
        Ok(f) => f,
        Err(e) => return failed(format!("xtask: cannot share {}: {e}", log.display())),
    };
    let status = std::process::Command::new(&bin.exe)
        .args(args)
        .current_dir(&bin.dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(file)
        .stderr(err)
        .status();
    let mut text = String::new();
    if let Ok(f) = std::fs::File::open(log) {
        let _ = (&f).read_to_string(&mut text);
    }
    let status = match status {
        Ok(s) => s,
        Err(e) => return failed(format!("xtask: cannot run {}: {e}", bin.exe.display())),
    };
    let mut counts = TestCounts::default();
    let mut results = 0;
    for line in text.lines() {
        if let Some(c) = crate::result_line(line) {
            results += 1;
            counts.add(c);
        }
    }
    if results == 0 {
        text.push_str(&format!("\nxtask: {} ended ({status}) without a result line: counted as failed", bin.name));
        counts.failed += 1;
    } else if !status.success() && counts.failed == 0 {
        text.push_str(&format!("\nxtask: {} exited {status} with no failed test: counted as failed", bin.name));
        counts.failed += 1;
    }
    (counts, text)
}

/// How long a run of binaries would take with `jobs` workers taking them in
/// order (for the tests of the ordering).
#[cfg(test)]
fn makespan(durations: &[f64], jobs: usize) -> f64 {
    let mut free = vec![0.0f64; jobs];
    for d in durations {
        let i = (0..jobs).min_by(|a, b| free[*a].total_cmp(&free[*b])).unwrap();
        free[i] += d;
    }
    free.into_iter().fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifacts_name_binaries_as_cargo_does() {
        let root = std::path::Path::new("/w");
        let json = r#"{"reason":"compiler-artifact","manifest_path":"/w/Cargo.toml","target":{"kind":["lib"],"src_path":"/w/src/lib.rs"},"profile":{"test":true},"executable":"/t/deps/craftplane-1"}
{"reason":"compiler-artifact","manifest_path":"/w/Cargo.toml","target":{"kind":["test"],"src_path":"/w/tests/sleep.rs"},"profile":{"test":true},"executable":"/t/deps/sleep-2"}
{"reason":"compiler-artifact","manifest_path":"/w/xtask/Cargo.toml","target":{"kind":["bin"],"src_path":"/w/xtask/src/main.rs"},"profile":{"test":true},"executable":"/t/deps/xtask-3"}
{"reason":"compiler-artifact","manifest_path":"/w/Cargo.toml","target":{"kind":["lib"],"src_path":"/w/src/lib.rs"},"profile":{"test":false},"executable":null}
{"reason":"build-finished","success":true}"#;
        let names: Vec<String> = parse_artifacts(json, root).into_iter().map(|b| b.name).collect();
        assert_eq!(names, ["unittests src/lib.rs", "tests/sleep.rs", "unittests src/main.rs (xtask)"]);
    }

    #[test]
    fn unknown_and_slow_binaries_start_first_and_that_shortens_the_run() {
        let bin = |n: &str| Binary { name: n.into(), exe: n.into(), dir: ".".into() };
        let known: HashMap<String, f64> = [("a", 5.0), ("b", 80.0), ("c", 20.0)].map(|(n, s)| (n.into(), s)).into();
        let names: Vec<String> =
            order(vec![bin("a"), bin("b"), bin("c"), bin("new")], &known).into_iter().map(|b| b.name).collect();
        assert_eq!(names, ["new", "b", "c", "a"]);
        // Longest first beats the alphabet for a long binary named last.
        let alphabetical = [5.0, 5.0, 5.0, 5.0, 80.0];
        let longest_first = [80.0, 5.0, 5.0, 5.0, 5.0];
        assert!(makespan(&longest_first, 2) < makespan(&alphabetical, 2));
        let file = std::env::temp_dir().join(format!("durations-{}", std::process::id()));
        std::fs::write(&file, "83.3\ttests/backups.rs\nbad line\n2.0\tunittests src/lib.rs\n").unwrap();
        let d = load_durations(&file);
        let _ = std::fs::remove_file(&file);
        assert_eq!((d.len(), d["tests/backups.rs"]), (2, 83.3));
    }
}
