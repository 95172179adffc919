//! `craftplane backup` / `restore` as processes, against a real
//! S3-compatible server (s3s-fs), the filesystem store and an independent
//! RCON server (npm rcon-server).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::peers::RconPeer;
use common::s3::S3Server;
use sha2::{Digest, Sha256};

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("craftplane-backup-{name}-{}", common::unique_suffix()));
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Deterministic bytes that compress like region files do (partly).
fn bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        // Every other 8-byte word is zero: about 2:1 compressible.
        if (out.len() / 8) % 2 == 0 { out.extend_from_slice(&b) } else { out.extend_from_slice(&[0; 8]) }
    }
    out.truncate(n);
    out
}

/// A world of `small` chunk-sized files and `regions` region files of
/// `region_kib` KiB each, plus logs and level.dat.
fn make_world(dir: &Path, small: usize, regions: usize, region_kib: usize) {
    for i in 0..regions {
        let p = dir.join(format!("world/region/r.{}.{}.mca", i % 16, i / 16));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes(i as u64, region_kib * 1024 + i * 4096)).unwrap();
    }
    for i in 0..small {
        let p = dir.join(format!("world/data/{}/chunk-{i}.dat", i % 20));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes(10_000 + i as u64, 512 + (i * 37) % 16_000)).unwrap();
    }
    std::fs::write(dir.join("world/level.dat"), bytes(7, 3000)).unwrap();
    std::fs::create_dir_all(dir.join("world/empty-dir")).unwrap();
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    std::fs::write(dir.join("logs/latest.log"), "[server] started\n").unwrap();
    std::fs::write(dir.join("server.properties"), "motd=hello\n").unwrap();
}

/// Every file under `dir` (but craftplane's own) → sha256; directories as "dir".
fn tree(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let rel = e.path().strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            if rel.starts_with(".craftplane") {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                out.insert(rel, "dir".into());
                stack.push(e.path());
            } else {
                let sum: String =
                    Sha256::digest(std::fs::read(e.path()).unwrap()).iter().map(|b| format!("{b:02x}")).collect();
                out.insert(rel, sum);
            }
        }
    }
    out
}

fn craftplane(args: &[&str], env: &[(String, String)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_craftplane"))
        .args(args)
        .envs(env.iter().cloned())
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_world_round_trips_through_s3_byte_for_byte() {
    let t = Scratch::new("roundtrip");
    let s3 = S3Server::start(t.path("s3"), "worlds");
    let rcon = RconPeer::start("hunter2");
    let world = t.path("world");
    make_world(&world, 2000, 24, 512);
    let pw = t.path("rcon-password");
    std::fs::write(&pw, "hunter2\n").unwrap();
    let tlog = t.path("termination-log");
    let to = "s3://worlds/tenants/acme/survival/2026-11-25-0400";
    let rcon_addr = format!("127.0.0.1:{}", rcon.port);
    let out = craftplane(
        &["backup", "--to", to, "--data-dir", p(&world), "--rcon-address", &rcon_addr, "--rcon-password-file", p(&pw)]
            .iter()
            .copied()
            .chain(["--server", "acme/survival/PAPER/1.21.4", "--termination-log", p(&tlog), "--exclude", "logs"])
            .collect::<Vec<_>>(),
        &s3.env(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON result line");
    assert_eq!(result["location"], to);
    assert_eq!(result["files"], 2000 + 24 + 2, "{result}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&tlog).unwrap()).unwrap(), result);
    assert_eq!(rcon.commands_through("save-on"), vec!["save-off", "save-all flush", "save-on"]);

    // The manifest lists every file with its checksum; verify agrees.
    let out = craftplane(&["backup", "verify", to], &s3.env());
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("ok: 2026 files"), "{}", text(&out));
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(t.path("s3/worlds/tenants/acme/survival/2026-11-25-0400/manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["server"]["type"], "PAPER");
    assert_eq!(manifest["compression"], "zstd");
    let level = manifest["files"].as_array().unwrap().iter().find(|f| f["path"] == "world/level.dat").unwrap();
    assert_eq!(level["sha256"], tree(&world)["world/level.dat"]);
    assert_eq!(level["size"], 3000);
    let stored =
        std::fs::metadata(t.path("s3/worlds/tenants/acme/survival/2026-11-25-0400/world.tar.zst")).unwrap().len();
    assert_eq!(manifest["archive"]["bytes"], stored);
    assert!(stored < manifest["totals"]["bytes"].as_u64().unwrap(), "zstd compresses the world");

    // Restore over another world: identical bytes, excluded paths left alone.
    let target = t.path("target");
    make_world(&target, 10, 2, 64);
    std::fs::write(target.join("world/stale.dat"), b"from the old world").unwrap();
    std::fs::write(target.join("logs/latest.log"), b"old log kept").unwrap();
    let out =
        craftplane(&["restore", "--from", to, "--data-dir", p(&target), "--termination-log", p(&tlog)], &s3.env());
    assert!(out.status.success(), "{}", text(&out));
    let mut want = tree(&world);
    want.insert("logs/latest.log".into(), tree(&target)["logs/latest.log"].clone());
    assert_eq!(tree(&target), want, "restored world differs");
    assert_eq!(std::fs::read(target.join("logs/latest.log")).unwrap(), b"old log kept");
    let leftovers: Vec<_> = std::fs::read_dir(&target)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".craftplane"))
        .collect();
    assert!(leftovers.is_empty(), "staging directories removed: {leftovers:?}");
}

/// `tree` split into the paths a snapshot with `include`/`exclude` covers
/// and the ones it does not.
fn split(t: &BTreeMap<String, String>, include: &[&str], exclude: &[&str]) -> [BTreeMap<String, String>; 2] {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let (include, exclude) = (s(include), s(exclude));
    let (inside, outside) =
        t.clone().into_iter().partition(|(p, _)| craftplane::backup::selected(p, &include, &exclude));
    [inside, outside]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_replaces_only_what_the_snapshot_covers() {
    let t = Scratch::new("scope");
    let s3 = S3Server::start(t.path("s3"), "worlds");
    let add = |root: &Path, files: &[&str], tag: &str| {
        for f in files {
            std::fs::create_dir_all(root.join(f).parent().unwrap()).unwrap();
            std::fs::write(root.join(f), format!("{f} {tag}")).unwrap();
        }
    };
    let extra = ["world/playerdata/alice.dat", "world_nether/DIM-1/region/r.0.0.mca", "plugins/Essentials/config.yml"];
    let world = t.path("world");
    make_world(&world, 40, 3, 64);
    add(&world, &extra, "then");
    let cases: [(&str, &[&str], &[&str]); 2] = [
        ("excl", &[], &["world/playerdata", "logs"]),
        ("incl", &["world/region", "world_nether/DIM-1/region", "plugins/Essentials"], &[]),
    ];
    for (name, include, exclude) in cases {
        let to = format!("s3://worlds/{name}");
        let mut args = vec!["backup", "--to", &to, "--data-dir", p(&world), "--termination-log", "/nonexistent/x"];
        include.iter().for_each(|i| args.extend(["--include", *i]));
        exclude.iter().for_each(|x| args.extend(["--exclude", *x]));
        let out = craftplane(&args, &s3.env());
        assert!(out.status.success(), "{}", text(&out));

        // The world later: other files, other bytes, new player data.
        let target = t.path(&format!("target-{name}"));
        make_world(&target, 12, 5, 32);
        add(&target, &extra, "now");
        add(&target, &["world/playerdata/bob.dat", "world/region/r.9.9.mca", "plugins/Other/config.yml"], "new");
        std::fs::write(target.join("world/level.dat"), "level.dat now").unwrap();
        let before = tree(&target);
        let out = craftplane(
            &["restore", "--from", &to, "--data-dir", p(&target), "--termination-log", "/nonexistent/x"],
            &s3.env(),
        );
        assert!(out.status.success(), "{}", text(&out));
        let [inside, outside] = split(&tree(&target), include, exclude);
        let [_, outside_before] = split(&before, include, exclude);
        assert_eq!(outside, outside_before, "{name}: paths outside the snapshot must be byte-identical");
        assert_eq!(inside, split(&tree(&world), include, exclude)[0], "{name}: inside the snapshot");
    }
    let target = t.path("target-excl");
    assert_eq!(
        std::fs::read_to_string(target.join("world/playerdata/bob.dat")).unwrap(),
        "world/playerdata/bob.dat new"
    );
    assert!(!target.join("world/region/r.9.9.mca").exists(), "a region file the snapshot does not hold is removed");
    let target = t.path("target-incl");
    assert_eq!(std::fs::read_to_string(target.join("world/level.dat")).unwrap(), "level.dat now", "level.dat is kept");
    assert!(target.join("plugins/Other/config.yml").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corruption_fails_verify_and_restore_and_leaves_the_world_intact() {
    let t = Scratch::new("corrupt");
    let s3 = S3Server::start(t.path("s3"), "worlds");
    let world = t.path("world");
    make_world(&world, 300, 4, 256);
    let to = "s3://worlds/snap";
    let out =
        craftplane(&["backup", "--to", to, "--data-dir", p(&world), "--termination-log", "/nonexistent/x"], &s3.env());
    assert!(out.status.success(), "{}", text(&out));

    let target = t.path("target");
    make_world(&target, 20, 1, 64);
    let before = tree(&target);
    // Flip one byte in the middle of the stored archive.
    let archive = t.path("s3/worlds/snap/world.tar.zst");
    let mut data = std::fs::read(&archive).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0x40;
    std::fs::write(&archive, &data).unwrap();
    let out = craftplane(&["backup", "verify", to], &s3.env());
    assert!(!out.status.success(), "verify must fail on a flipped byte");
    assert!(text(&out).contains("VerificationFailed"), "{}", text(&out));
    let tlog = t.path("termination-log");
    let out =
        craftplane(&["restore", "--from", to, "--data-dir", p(&target), "--termination-log", p(&tlog)], &s3.env());
    assert!(!out.status.success(), "restore must fail on a flipped byte");
    assert!(std::fs::read_to_string(&tlog).unwrap().starts_with("VerificationFailed: "), "{}", text(&out));
    assert_eq!(tree(&target), before, "the current world must be untouched");
    assert!(
        !std::fs::read_dir(&target)
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(".craftplane")),
        "no staging left behind"
    );
    // An edited manifest (a file's checksum) is caught as well.
    data[mid] ^= 0x40;
    std::fs::write(&archive, &data).unwrap();
    assert!(craftplane(&["backup", "verify", to], &s3.env()).status.success(), "restored archive verifies again");
    let mpath = t.path("s3/worlds/snap/manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&mpath).unwrap()).unwrap();
    m["files"][0]["sha256"] = serde_json::json!("0".repeat(64));
    std::fs::write(&mpath, serde_json::to_vec(&m).unwrap()).unwrap();
    let out =
        craftplane(&["restore", "--from", to, "--data-dir", p(&target), "--termination-log", p(&tlog)], &s3.env());
    assert!(!out.status.success());
    assert!(text(&out).contains("manifest says"), "{}", text(&out));
    assert_eq!(tree(&target), before);
    // A missing snapshot.
    std::fs::remove_file(&mpath).unwrap();
    let out =
        craftplane(&["restore", "--from", to, "--data-dir", p(&target), "--termination-log", p(&tlog)], &s3.env());
    assert!(!out.status.success());
    assert!(text(&out).contains("SnapshotNotFound"), "{}", text(&out));
    assert_eq!(tree(&target), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_on_is_sent_when_the_store_dies_mid_upload() {
    let t = Scratch::new("s3dies");
    let mut s3 = S3Server::start(t.path("s3"), "worlds");
    let rcon = RconPeer::start("pw");
    let world = t.path("world");
    make_world(&world, 50, 64, 4096);
    std::fs::write(t.path("pw"), "pw").unwrap();
    let tlog = t.path("termination-log");
    let child = Command::new(env!("CARGO_BIN_EXE_craftplane"))
        .args(["backup", "--to", "s3://worlds/snap", "--compression", "none", "--data-dir", p(&world)])
        .args(["--rcon-address", &format!("127.0.0.1:{}", rcon.port), "--rcon-password-file", p(&t.path("pw"))])
        .args(["--termination-log", p(&tlog)])
        .envs(s3.env())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The upload starts right after the flush: stop the store then.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !rcon.commands().iter().any(|c| c == "save-all flush") {
        assert!(Instant::now() < deadline, "no save-all flush: {:?}", rcon.commands());
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(150));
    s3.kill();
    let t0 = Instant::now();
    let out = child.wait_with_output().unwrap();
    println!("backup gave up {:.1}s after the store died", t0.elapsed().as_secs_f64());
    assert!(!out.status.success(), "a backup whose store died must fail: {}", text(&out));
    let log = std::fs::read_to_string(&tlog).unwrap();
    assert!(log.starts_with("StoreFailed: "), "{log}");
    assert_eq!(
        rcon.commands_through("save-on"),
        vec!["save-off", "save-all flush", "save-on"],
        "save-on is always sent"
    );
    assert!(!t.path("s3/worlds/snap/manifest.json").exists(), "no manifest: never a complete snapshot");
    // With the store back, verify says there is no snapshot.
    s3.restart();
    let out = craftplane(&["backup", "verify", "s3://worlds/snap"], &s3.env());
    assert!(text(&out).contains("SnapshotNotFound"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_and_import_move_a_world_out_and_in() {
    let t = Scratch::new("export");
    let s3 = S3Server::start(t.path("s3"), "worlds");
    let world = t.path("world");
    make_world(&world, 200, 3, 128);
    assert!(
        craftplane(
            &["backup", "--to", "s3://worlds/a", "--data-dir", p(&world), "--termination-log", "/x/y"],
            &s3.env()
        )
        .status
        .success()
    );
    let file = t.path("world.tar.zst");
    let out = craftplane(&["backup", "export", "s3://worlds/a", "-o", p(&file)], &s3.env());
    assert!(out.status.success(), "{}", text(&out));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(t.path("s3/worlds/a/manifest.json")).unwrap()).unwrap();
    let sum: String = Sha256::digest(std::fs::read(&file).unwrap()).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(manifest["archive"]["sha256"], sum);
    // The exported file is a plain tar.zst holding the world (read with the
    // zstd and tar crates: the check runs whatever the system tar supports).
    let entries = tar_zst_entries(&file).expect("the export is a tar.zst");
    assert!(entries.iter().any(|e| e.ends_with("level.dat")), "no level.dat in {entries:?}");
    let files_in_world = tree(&world).len();
    assert!(entries.len() >= files_in_world, "{} entries for {files_in_world} files", entries.len());
    assert!(tar_zst_entries(&t.path("s3/worlds/a/manifest.json")).is_err(), "the check tells a non-archive apart");
    // Import into the filesystem store, then restore from there.
    let fs_loc = format!("file://{}", t.path("fs-store/imported").display());
    let out = craftplane(&["backup", "import", p(&file), &fs_loc], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let out = craftplane(&["backup", "verify", &fs_loc], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let target = t.path("target");
    std::fs::create_dir_all(&target).unwrap();
    let out = craftplane(&["restore", "--from", &fs_loc, "--data-dir", p(&target), "--termination-log", "/x/y"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(tree(&target), tree(&world));
    // Not an archive: refused.
    std::fs::write(t.path("junk.tar.zst"), b"definitely not a tar").unwrap();
    let out = craftplane(&["backup", "import", p(&t.path("junk.tar.zst")), &format!("{fs_loc}-2")], &[]);
    assert!(!out.status.success());
}

/// A server whose RCON port answers only seconds after the backup starts
/// (as behind a NetworkPolicy engine that has not yet let the new backup
/// pod in): the backup waits for it, saves with save-off / save-on, stores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rcon_reachable_only_later_is_waited_for() {
    let t = Scratch::new("late-rcon");
    let s3 = S3Server::start(t.path("s3"), "worlds");
    let world = t.path("world");
    make_world(&world, 5, 1, 16);
    std::fs::write(t.path("pw"), "pw").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let late = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(3));
        RconPeer::start_on(port, "pw")
    });
    let rcon_addr = format!("127.0.0.1:{port}");
    let (pw, tlog) = (t.path("pw"), t.path("tlog"));
    let args = ["backup", "--to", "s3://worlds/late", "--data-dir", p(&world), "--rcon-address", &rcon_addr];
    let args: Vec<&str> =
        args.into_iter().chain(["--rcon-password-file", p(&pw), "--termination-log", p(&tlog)]).collect();
    let out = craftplane(&args, &s3.env());
    let rcon = late.join().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(rcon.commands_through("save-on"), vec!["save-off", "save-all flush", "save-on"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_fail_with_a_reason_and_save_on() {
    let t = Scratch::new("creds");
    let s3 = S3Server::start(t.path("s3"), "worlds");
    let rcon = RconPeer::start("pw");
    let world = t.path("world");
    make_world(&world, 10, 1, 64);
    std::fs::write(t.path("pw"), "pw").unwrap();
    let mut env = s3.env();
    env[1].1 = "not-the-secret".into();
    let tlog = t.path("tlog");
    let rcon_addr = format!("127.0.0.1:{}", rcon.port);
    let pw = t.path("pw");
    let backup_to = |to: &str, env: &[(String, String)]| {
        craftplane(
            &["backup", "--to", to, "--data-dir", p(&world), "--rcon-address", &rcon_addr]
                .into_iter()
                .chain(["--rcon-password-file", p(&pw), "--termination-log", p(&tlog)])
                .collect::<Vec<_>>(),
            env,
        )
    };
    let out = backup_to("s3://worlds/x", &env);
    assert!(!out.status.success());
    assert!(std::fs::read_to_string(&tlog).unwrap_or_default().starts_with("StoreFailed: "), "{}", text(&out));
    assert_eq!(rcon.commands_through("save-on"), vec!["save-off", "save-all flush", "save-on"]);
    // A wrong RCON password fails before anything is written.
    std::fs::write(&pw, "wrong").unwrap();
    let out = backup_to("s3://worlds/y", &s3.env());
    assert!(!out.status.success());
    assert!(std::fs::read_to_string(&tlog).unwrap().starts_with("RconFailed: "), "{}", text(&out));
    assert!(!t.path("s3/worlds/y").exists());
}

/// The entry paths of a tar.zst file.
fn tar_zst_entries(file: &Path) -> std::io::Result<Vec<String>> {
    let decoder = zstd::stream::read::Decoder::new(std::fs::File::open(file)?)?;
    let mut archive = tar::Archive::new(decoder);
    let mut out = Vec::new();
    for e in archive.entries()? {
        out.push(e?.path()?.to_string_lossy().into_owned());
    }
    Ok(out)
}
