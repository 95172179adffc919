//! Sleep and wake on the real node (issue 33), after the gateway scenario,
//! on its tenant B server: it is given a whitelist and `afterIdle: 20s`.
//!
//! Asserted: it sleeps after its idle time (pod gone, volume kept, phase
//! Hibernated and Ready, the world on the volume byte-identical to before
//! and saved as the pod went); a status ping through the gateway gets the
//! asleep MOTD; a player not on the whitelist cannot wake it; with the
//! operator's leader killed (SIGKILL) as a whitelisted player joins, the
//! other replica takes over and finishes the wake (the request waits in its
//! Lease); asleep again, a whitelisted player's join wakes it and the same
//! connection ends in the game (the client spawns), timed in parts
//! (gateway, operator, pod start, server start); a Stopped server stays
//! stopped when a player joins.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::e2e::{Kube, NS, leader_pod, retry, tail};

/// What the scenario needs of the gateway scenario.
pub struct Env<'a> {
    pub kube: &'a Kube,
    pub ns: &'a str,
    pub server: &'a str,
    pub host: String,
    /// The npm client through the gateway from the real node's address:
    /// mode, host, player, give up after.
    pub client: &'a dyn Fn(&str, &str, &str, Duration) -> Result<Value>,
    /// SIGKILLs a container by id on the real node.
    pub kill: &'a dyn Fn(&str) -> Result<()>,
    /// Returns once the leader may be killed (the e2e checks its metrics,
    /// counters of its process, first).
    pub before_leader_kill: &'a dyn Fn(),
}

const PLAYER: &str = "gwsleeper";
const IDLE: &str = "20s";

pub fn run(e: &Env) -> Result<()> {
    let k = e.kube;
    let (ns, server) = (e.ns, e.server);
    let mcs = |path: &str| k.run(&["get", "mcs", server, "-n", ns, "-o", &format!("jsonpath={path}")]);
    let phase_ready = [
        "get",
        "mcs",
        server,
        "-n",
        ns,
        "-o",
        "jsonpath={.status.phase}/{.status.conditions[?(@.type==\"Ready\")].status}",
    ];
    let replicas = || k.run(&["get", "statefulset", server, "-n", ns, "-o", "jsonpath={.spec.replicas}"]);
    let pod = format!("{server}-0");
    let wake_leases = || {
        k.run(&["get", "leases", "-n", NS, "-l", "craftplane.io/wake-request", "-o", "name"]).map(|s| s.lines().count())
    };

    // The world as it is before the sleep, saved first (no player is on).
    k.run(&["exec", &pod, "-n", ns, "-c", "minecraft", "--", "rcon-cli", "save-all", "flush"])?;
    let before = volume_world(k, ns, server)?;
    k.run(&[
        "patch",
        "mcs",
        server,
        "-n",
        ns,
        "--type=merge",
        "-p",
        &format!("{{\"spec\":{{\"whitelist\":[\"{PLAYER}\"],\"sleep\":{{\"afterIdle\":\"{IDLE}\"}}}}}}"),
    ])?;
    let fall_asleep = |what: &str| -> Result<Duration> {
        let t = Instant::now();
        if let Err(err) = k.wait_for(&phase_ready, "Hibernated/True", Duration::from_secs(180)) {
            bail!("{ns}/{server} did not sleep ({what}): {err:#}\noperator log:\n{}", tail(&k.operator_log(), 30));
        }
        retry(Duration::from_secs(60), || {
            let p = k.run(&["get", "pod", &pod, "-n", ns, "--ignore-not-found", "-o", "name"])?;
            if !p.is_empty() {
                bail!("{pod} still there");
            }
            Ok(())
        })?;
        Ok(t.elapsed())
    };
    let took = fall_asleep("first sleep")?;
    let pvc = k.run(&["get", "pvc", "-n", ns, "-l", &format!("craftplane.io/server={server}"), "-o", "name"])?;
    if pvc.is_empty() || replicas()? != "0" {
        bail!("asleep: volume {pvc:?}, replicas {}", replicas()?);
    }
    let asleep = volume_world(k, ns, server)?;
    let changed = before.differ(&asleep);
    if !changed.is_empty() || asleep.saves <= before.saves {
        bail!(
            "the world on the sleeping server's volume is not the world before the sleep, saved: files {changed:?}, saves {} → {}",
            before.saves,
            asleep.saves
        );
    }
    println!(
        "e2e: ok   sleep: the world on the volume, read on the node, is byte-identical to before the sleep ({} files, sha256 each) and was saved as the pod went (saves {} → {})",
        asleep.files.len(),
        before.saves,
        asleep.saves
    );
    println!(
        "e2e: ok   sleep: {ns}/{server} Hibernated and Ready {took:.0?} after afterIdle {IDLE} was set (its idle clock runs from the last ping that saw a player; pod gone, {pvc} kept, 0 replicas; status.sleep {})",
        mcs("{.status.sleep}")?
    );
    // The server was made without a whitelist and given one as it fell
    // asleep: no pod ran to apply it live, so the sleeping template must
    // carry it, or the wake's first moments kick the player the gateway
    // let in (seen once in CI, when the leader's takeover moved the timing).
    let env = retry(Duration::from_secs(30), || {
        let names = k.run(&[
            "get",
            "statefulset",
            server,
            "-n",
            ns,
            "-o",
            "jsonpath={.spec.template.spec.containers[?(@.name==\"minecraft\")].env[*].name}",
        ])?;
        if !["WHITELIST", "ENABLE_WHITELIST"].iter().all(|v| names.split_whitespace().any(|n| n == *v)) {
            bail!("the sleeping {ns}/{server}'s template has no whitelist variables: {names}");
        }
        Ok(names)
    })?;
    println!(
        "e2e: ok   sleep: the whitelist given as it fell asleep is in the sleeping template (WHITELIST, ENABLE_WHITELIST among {} variables): in force from the wake's first moment",
        env.split_whitespace().count()
    );

    // --- the gateway answers for it
    let p = (e.client)("ping", &e.host, PLAYER, Duration::from_secs(10))?;
    if !p["ping"]["description"].to_string().contains("asleep") {
        bail!("a ping of the sleeping {} through the gateway: {p}", e.host);
    }
    println!(
        "e2e: ok   sleep: a ping through the gateway gets {} and version {}",
        p["ping"]["description"], p["ping"]["version"]["name"]
    );

    // --- a player not on the whitelist cannot wake it
    let k1 = (e.client)("join", &e.host, "gwmallory", Duration::from_secs(10))?;
    if !k1["kicked"].to_string().contains("not whitelisted") {
        bail!("a join by gwmallory (not whitelisted): {k1}");
    }
    std::thread::sleep(Duration::from_secs(3));
    if wake_leases()? != 0 || replicas()? != "0" {
        bail!("gwmallory's join asked for a wake: {} requests, replicas {}", wake_leases()?, replicas()?);
    }
    println!("e2e: ok   sleep: gwmallory (not whitelisted) was told so and woke nothing");

    // --- the leader killed as the join arrives: the other replica wakes it
    (e.before_leader_kill)();
    let leader = retry(Duration::from_secs(60), || leader_pod(k))?;
    let container =
        k.run(&["get", "pod", &leader, "-n", NS, "-o", "jsonpath={.status.containerStatuses[0].containerID}"])?;
    let container = container.trim_start_matches("containerd://").to_string();
    let wakes_before: u64 = mcs("{.status.sleep.wakeCount}")?.parse().unwrap_or(0);
    (e.kill)(&container).with_context(|| format!("kill the leader {leader}"))?;
    let t_kill = Instant::now();
    let first = (e.client)("join", &e.host, PLAYER, Duration::from_secs(60))?;
    // Held while the other replica took over: in the game, or told to
    // join again when that took longer than the hold.
    let joined_first = first["joined"] == true;
    if !joined_first && !first["kicked"].to_string().contains("starting") {
        bail!("{PLAYER}'s join with the leader killed: {first}");
    }
    retry(Duration::from_secs(120), || {
        let n: u64 = mcs("{.status.sleep.wakeCount}")?.parse().unwrap_or(0);
        if n <= wakes_before {
            bail!("wakeCount {n}");
        }
        Ok(())
    })
    .with_context(|| {
        format!("the wake after the leader {leader} was killed\noperator log:\n{}", tail(&k.operator_log(), 30))
    })?;
    let new_leader = retry(Duration::from_secs(60), || leader_pod(k))?;
    k.wait_for(&phase_ready, "Running/True", Duration::from_secs(180))?;
    if !joined_first {
        let again = (e.client)("join", &e.host, PLAYER, Duration::from_secs(30))?;
        if again["joined"] != true {
            bail!("{PLAYER} joining again after the wake: {again}");
        }
    }
    retry(Duration::from_secs(30), || {
        if wake_leases()? == 0 { Ok(()) } else { bail!("the wake request is still there") }
    })?;
    println!(
        "e2e: ok   sleep: the leader {leader} killed as {PLAYER} joined; {new_leader} finished the wake in {:.0?} ({})",
        t_kill.elapsed(),
        if joined_first {
            "the held join went on into the game"
        } else {
            "the held join was told to join again, and did"
        }
    );

    // --- asleep again; one join wakes it and ends in the game, timed
    fall_asleep("second sleep")?;
    let parts_before = wake_parts(k, &new_leader)?;
    let join_at = unix_now();
    let t_join = Instant::now();
    let joined = (e.client)("join", &e.host, PLAYER, Duration::from_secs(60))?;
    let total = t_join.elapsed();
    if joined["joined"] != true {
        bail!("{PLAYER}'s join of the sleeping server: {joined}");
    }
    let log = k.run(&["logs", &pod, "-n", ns, "-c", "minecraft"])?;
    if !log.contains(PLAYER) {
        bail!("the woken server's log does not show {PLAYER}:\n{}", tail(&log, 20));
    }
    // The parts, from the objects' own times (whole seconds, as the API
    // gives them; this machine's clock is the cluster's).
    let pod_json: Value = serde_json::from_str(&k.run(&["get", "pod", &pod, "-n", ns, "-o", "json"])?)?;
    let woke = rfc3339_secs(&mcs("{.status.sleep.lastWake}")?);
    let created = pod_json["metadata"]["creationTimestamp"].as_str().and_then(rfc3339_secs);
    let started = pod_json["status"]["containerStatuses"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "minecraft"))
        .and_then(|c| c["state"]["running"]["startedAt"].as_str())
        .and_then(rfc3339_secs);
    let part = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => format!("{:.0} s", b - a),
        _ => "?".into(),
    };
    let end = join_at + total.as_secs_f64();
    // The operator's own measure of this wake (its metrics, the sums'
    // difference over this one wake).
    k.wait_for(&phase_ready, "Running/True", Duration::from_secs(60))?;
    let parts = retry(Duration::from_secs(30), || {
        let now = wake_parts(k, &new_leader)?;
        let d: Vec<(f64, f64)> = now.iter().zip(&parts_before).map(|(a, b)| (a.0 - b.0, a.1 - b.1)).collect();
        if d.iter().any(|(n, _)| *n != 1.0) {
            bail!("wake parts counted {d:?} on {new_leader} (operator, pod_start, server_start), one each expected");
        }
        Ok(d.iter().map(|(_, sum)| *sum).collect::<Vec<f64>>())
    })?;
    println!(
        "e2e: ok   sleep: {PLAYER}'s join of the sleeping server woke it and the same connection ended in the game in {total:.1?}: join → wake recorded (gateway, operator) {}, → pod created (StatefulSet controller) {}, → container started (kubelet: sandbox, init-container) {}, → in the game (server start, connect) {}",
        part(Some(join_at), woke),
        part(woke, created),
        part(created, started),
        part(started, Some(end)),
    );
    println!(
        "e2e: ok   sleep: the operator's metrics of that wake (craftplane_server_wake_part_seconds): operator {:.3} s (the gateway's request to the StatefulSet scaled up), pod start {:.0} s, server start {:.0} s",
        parts[0], parts[1], parts[2]
    );

    // --- Stopped stays stopped
    k.run(&["patch", "mcs", server, "-n", ns, "--type=merge", "-p", "{\"spec\":{\"state\":\"Stopped\"}}"])?;
    k.wait_for(&phase_ready, "Stopped/True", Duration::from_secs(120))?;
    let refused = (e.client)("join", &e.host, PLAYER, Duration::from_secs(10))?;
    if !refused["kicked"].to_string().contains("not running") {
        bail!("{PLAYER}'s join of the Stopped server: {refused}");
    }
    std::thread::sleep(Duration::from_secs(3));
    if wake_leases()? != 0 || replicas()? != "0" {
        bail!("a join of the Stopped server asked for a wake: {} requests, replicas {}", wake_leases()?, replicas()?);
    }
    println!("e2e: ok   sleep: a Stopped server stays stopped when {PLAYER} joins (told it is not running)");
    Ok(())
}

/// The world directory on a server's volume, read on the real node's host
/// (the volume is a `local` PersistentVolume there): file (relative to the
/// world) → sha256; the stand-in's save journal (`craftplane-save.json`,
/// rewritten by every save) kept apart as its save count.
struct World {
    files: std::collections::BTreeMap<String, String>,
    saves: u64,
}

impl World {
    /// The files that differ from `other`'s (gone, new or changed).
    fn differ(&self, other: &World) -> Vec<String> {
        let keys: std::collections::BTreeSet<&String> = self.files.keys().chain(other.files.keys()).collect();
        keys.into_iter().filter(|f| self.files.get(*f) != other.files.get(*f)).cloned().collect()
    }
}

fn volume_world(k: &Kube, ns: &str, server: &str) -> Result<World> {
    use sha2::{Digest, Sha256};
    let pv = k.run(&[
        "get",
        "pvc",
        "-n",
        ns,
        "-l",
        &format!("craftplane.io/server={server}"),
        "-o",
        "jsonpath={.items[0].spec.volumeName}",
    ])?;
    let path = k.run(&["get", "pv", &pv, "-o", "jsonpath={.spec.local.path}"])?;
    if path.is_empty() {
        bail!("the volume {pv:?} of {ns}/{server} has no local path on the node");
    }
    let root = std::path::Path::new(&path).join("world");
    let mut files = std::collections::BTreeMap::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
            let e = e?;
            let p = e.path();
            if e.file_type()?.is_dir() {
                dirs.push(p);
                continue;
            }
            let bytes = std::fs::read(&p).with_context(|| format!("read {}", p.display()))?;
            let rel = p.strip_prefix(&root).unwrap_or(&p).display().to_string();
            files.insert(rel, format!("{:x}", Sha256::digest(&bytes)));
        }
    }
    if files.is_empty() {
        bail!("no world files under {}", root.display());
    }
    let journal = files.remove("craftplane-save.json").context("the world has no craftplane-save.json")?;
    let text = std::fs::read_to_string(root.join("craftplane-save.json"))?;
    let saves = serde_json::from_str::<Value>(&text)?["saves"]
        .as_u64()
        .with_context(|| format!("save journal {text:?} ({journal})"))?;
    Ok(World { files, saves })
}

/// (count, sum) of `craftplane_server_wake_part_seconds` for the parts
/// operator, pod_start and server_start, scraped from an operator pod.
fn wake_parts(k: &Kube, pod: &str) -> Result<[(f64, f64); 3]> {
    let m = crate::e2e::scrape_operator(k, pod)?;
    let value = |key: &str| crate::bench::metric(&m, key).unwrap_or(0.0);
    let part = |p: &str| {
        (
            value(&format!("craftplane_server_wake_part_seconds_count{{part=\"{p}\"}}")),
            value(&format!("craftplane_server_wake_part_seconds_sum{{part=\"{p}\"}}")),
        )
    };
    Ok([part("operator"), part("pod_start"), part("server_start")])
}

/// Seconds since the Unix epoch now.
fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// Seconds since the Unix epoch of an RFC 3339 UTC time as the API writes
/// them (`2026-12-04T10:11:05Z`, fractions allowed).
fn rfc3339_secs(s: &str) -> Option<f64> {
    let s = s.trim().strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let d: Vec<i64> = date.split('-').map(|x| x.parse().ok()).collect::<Option<_>>()?;
    let t: Vec<f64> = time.split(':').map(|x| x.parse().ok()).collect::<Option<_>>()?;
    let [y, m, day] = d[..] else { return None };
    let [hh, mm, ss] = t[..] else { return None };
    // Days from 1970-01-01 (Howard Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 * 86_400.0 + hh * 3600.0 + mm * 60.0 + ss)
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_times_parse() {
        assert_eq!(super::rfc3339_secs("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(super::rfc3339_secs("2026-12-04T10:11:05Z"), Some(1_796_379_065.0));
        assert_eq!(super::rfc3339_secs("2000-03-01T00:00:00.5Z"), Some(951_868_800.5));
        assert_eq!(super::rfc3339_secs("nonsense"), None);
    }
}
