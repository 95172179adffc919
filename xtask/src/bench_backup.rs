//! `cargo xtask bench backup`: craftplane backup of a generated world of at
//! least 1 GiB to a local S3 server (s3s-fs), beside `tar | zstd -T0 | aws
//! s3 cp -` writing to the same server, in the same run.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

use crate::tools;

const ACCESS: &str = "bench";
const SECRET: &str = "bench-secret";

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Deterministic bytes that compress about 2:1, like region files.
fn fill(buf: &mut [u8], seed: u64) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for (i, chunk) in buf.chunks_mut(8).enumerate() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = if i % 2 == 0 { x.to_le_bytes() } else { [0; 8] };
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

/// A world of `mib` MiB: 4 MiB region files plus 3,000 small files. Reused
/// when present.
fn world(dir: &Path, mib: usize) -> Result<(u64, usize)> {
    let marker = dir.join(".complete");
    let regions = mib / 4;
    if !marker.exists() {
        let _ = std::fs::remove_dir_all(dir);
        eprintln!("bench: generating a {mib} MiB world in {}", dir.display());
        let mut buf = vec![0u8; 4 << 20];
        for i in 0..regions {
            let p = dir.join(format!("world/region/r.{}.{}.mca", i % 32, i / 32));
            std::fs::create_dir_all(p.parent().unwrap())?;
            fill(&mut buf, i as u64);
            std::fs::write(p, &buf)?;
        }
        for i in 0..3000 {
            let p = dir.join(format!("world/data/{}/c{i}.dat", i % 30));
            std::fs::create_dir_all(p.parent().unwrap())?;
            let mut b = vec![0u8; 1024 + (i * 97) % 30_000];
            fill(&mut b, 1_000_000 + i as u64);
            std::fs::write(p, &b)?;
        }
        std::fs::write(&marker, b"")?;
    }
    let mut bytes = 0;
    let mut files = 0;
    let mut stack = vec![dir.join("world")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                stack.push(e.path());
            } else {
                bytes += e.metadata()?.len();
                files += 1;
            }
        }
    }
    Ok((bytes, files))
}

/// Peak RSS (MiB) of a process tree, sampled until it exits; returns (wall, peak, success).
fn measure(mut child: Child) -> Result<(Duration, f64, bool)> {
    let t0 = Instant::now();
    let mut peak = 0f64;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok((t0.elapsed(), peak, status.success()));
        }
        peak = peak.max(tree_rss_mib(child.id()));
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// RSS of a process and all its descendants, in MiB.
fn tree_rss_mib(root: u32) -> f64 {
    let mut total = 0f64;
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        total += status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0;
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        stack.extend(children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()));
    }
    total
}

fn aws_cli(sh: &Shell) -> Result<PathBuf> {
    if cmd!(sh, "aws --version").quiet().ignore_stdout().ignore_stderr().run().is_ok() {
        return Ok("aws".into());
    }
    let venv = tools::cache_dir().join("awscli");
    let bin = venv.join("bin/aws");
    if !bin.exists() {
        eprintln!("bench: installing awscli from PyPI into {}", venv.display());
        cmd!(sh, "python3 -m venv {venv}").run().context("python3 -m venv (the baseline needs the aws CLI)")?;
        let pip = venv.join("bin/pip");
        cmd!(sh, "{pip} install --quiet awscli").run()?;
    }
    Ok(bin)
}

pub fn run(sh: &Shell, mib: usize) -> Result<()> {
    if mib < 1024 {
        bail!("the backup benchmark needs a world of at least 1024 MiB (got {mib})");
    }
    for tool in ["tar", "zstd"] {
        if cmd!(sh, "{tool} --version").quiet().ignore_stdout().ignore_stderr().run().is_err() {
            bail!("the baseline needs `{tool}` on PATH (Debian: apt-get install {tool})");
        }
    }
    let aws = aws_cli(sh)?;
    let s3s = tools::ensure_s3s_fs(sh)?;
    cmd!(sh, "cargo build --release --quiet --bin craftplane").run()?;
    let bin = crate::target_dir().join("release/craftplane");
    let base = tools::cache_dir().join("bench");
    let (bytes, files) = world(&base.join(format!("world-{mib}")), mib)?;
    let data = base.join(format!("world-{mib}"));

    let root = base.join("s3");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("bench"))?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let _s3 = Killed(
        Command::new(&s3s)
            .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--access-key", ACCESS, "--secret-key", SECRET])
            .arg(&root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    std::thread::sleep(Duration::from_millis(500));
    let endpoint = format!("http://127.0.0.1:{port}");
    let env = [
        ("AWS_ACCESS_KEY_ID", ACCESS.to_string()),
        ("AWS_SECRET_ACCESS_KEY", SECRET.to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_DEFAULT_REGION", "us-east-1".to_string()),
        ("AWS_ENDPOINT", endpoint.clone()),
        ("AWS_ALLOW_HTTP", "true".to_string()),
    ];
    // Warm the page cache once so both runs read from memory alike.
    cmd!(sh, "tar -cf /dev/null -C {data} world").quiet().run()?;

    eprintln!("bench: craftplane backup");
    let child = Command::new(&bin)
        .args(["backup", "--to", "s3://bench/craftplane", "--data-dir"])
        .arg(&data)
        .args(["--termination-log", "/nonexistent/x"])
        .envs(env.iter().cloned())
        .stdout(Stdio::null())
        .spawn()?;
    let (cp_time, cp_rss, ok) = measure(child)?;
    if !ok {
        bail!("craftplane backup failed");
    }
    let cp_size = std::fs::metadata(root.join("bench/craftplane/world.tar.zst"))?.len();

    eprintln!("bench: tar | zstd -T0 | aws s3 cp -");
    let script = format!(
        "set -o pipefail; tar -cf - -C {} world | zstd -T0 -3 -q -c | {} s3 cp - s3://bench/baseline/world.tar.zst --endpoint-url {endpoint} --expected-size {}",
        data.display(),
        aws.display(),
        bytes
    );
    let child = Command::new("bash").args(["-c", &script]).envs(env.iter().cloned()).stdout(Stdio::null()).spawn()?;
    let (bl_time, bl_rss, ok) = measure(child)?;
    if !ok {
        bail!("the baseline pipeline failed");
    }
    let bl_size = std::fs::metadata(root.join("bench/baseline/world.tar.zst"))?.len();

    // craftplane also verified nothing here; check its snapshot afterwards.
    let out =
        Command::new(&bin).args(["backup", "verify", "s3://bench/craftplane"]).envs(env.iter().cloned()).output()?;
    if !out.status.success() {
        bail!("verify failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    let date = cmd!(sh, "date -u +%Y-%m-%d").read().unwrap_or_default();
    let mibps = |t: Duration| bytes as f64 / 1048576.0 / t.as_secs_f64();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut t = String::new();
    let _ = writeln!(
        t,
        "\n## Backup: {date}, {:.2} GiB world ({files} files), {cores} cores, local s3s-fs\n",
        bytes as f64 / 1073741824.0,
    );
    t.push_str("| | seconds | MiB/s | peak RSS (MiB) | archive (MiB) |\n|---|---|---|---|---|\n");
    let _ = writeln!(
        t,
        "| craftplane backup (tar+zstd, manifest with sha256 per file, multipart) | {:.1} | {:.0} | {:.1} | {:.0} |",
        cp_time.as_secs_f64(),
        mibps(cp_time),
        cp_rss,
        cp_size as f64 / 1048576.0
    );
    let _ = writeln!(
        t,
        "| tar \\| zstd -T0 -3 \\| aws s3 cp - | {:.1} | {:.0} | {:.1} | {:.0} |",
        bl_time.as_secs_f64(),
        mibps(bl_time),
        bl_rss,
        bl_size as f64 / 1048576.0
    );
    let _ = writeln!(
        t,
        "\nthroughput ratio craftplane / baseline: {:.2}; peak memory ratio: {:.2}",
        bl_time.as_secs_f64() / cp_time.as_secs_f64(),
        cp_rss / bl_rss.max(0.1)
    );
    print!("{t}");
    let mut f =
        std::fs::OpenOptions::new().append(true).create(true).open(crate::project_root().join("BENCHMARKS.md"))?;
    f.write_all(t.as_bytes())?;
    Ok(())
}
