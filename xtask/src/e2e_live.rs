//! The e2e suite's live operations on the real server (issue 20): player
//! names from Server List Ping, live whitelist / difficulty / game rules
//! over RCON without a restart (the pod's UID unchanged), console commands
//! as ConsoleCommand objects (output in status, refusals, Events, TTL), and
//! the live settings kept through a restart. Observed as a user would:
//! kubectl and real protocol clients.

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::e2e::{Stopper, retry};
use crate::e2e_real::{NS, POD, SERVER, Setup, expect_real, join, patch_spec, wait_running};

pub fn run(s: &Setup) -> Result<()> {
    let k = s.kube;
    let uid = k.get("pod", POD, "{.metadata.uid}")?;

    // --- players in status: a client stays connected
    let carol = hold(s, "carol")?;
    expect_real(
        k,
        "online players' names in real's status (Server List Ping sample)",
        "{.status.players.names[*]}",
        "carol",
        90,
    )?;
    drop(carol);

    // --- whitelist live: an unlisted player is refused, then let in
    let before = k.get("mcs", SERVER, "{.status.live.revision}")?;
    patch_spec(k, r#"{"whitelist":["alice"]}"#)?;
    live_applied(s, &before)?;
    refused_by_whitelist(s, "dave", "the whitelist (applied live) lists only alice")?;
    let before = k.get("mcs", SERVER, "{.status.live.revision}")?;
    patch_spec(k, r#"{"whitelist":["alice","dave"]}"#)?;
    live_applied(s, &before)?;
    join(s, "dave")?;
    same_pod(k, &uid, "the whitelist changed")?;
    println!(
        "e2e: ok   whitelist applied live over RCON: dave kicked as not white-listed, then added and joined; pod {uid} not restarted"
    );

    // --- difficulty and a game rule live, read back over RCON with a console command
    let before = k.get("mcs", SERVER, "{.status.live.revision}")?;
    patch_spec(k, r#"{"difficulty":"hard","gameRules":{"keepInventory":"true"}}"#)?;
    live_applied(s, &before)?;
    let (phase, out) = console(s, "ask-difficulty", "difficulty", 3600)?;
    if phase != "Succeeded" || !out.contains("Hard") {
        bail!("ConsoleCommand difficulty: {phase} {out:?}, expected Succeeded with Hard");
    }
    let (_, rule) = console(s, "ask-rule", "gamerule keepInventory", 3600)?;
    if !rule.contains("true") {
        bail!("gamerule keepInventory answers {rule:?} after spec.gameRules set it live");
    }
    same_pod(k, &uid, "the difficulty changed")?;
    println!(
        "e2e: ok   difficulty hard and gameRules applied live: the server answers {out:?} / {rule:?}; pod not restarted"
    );

    // --- console commands: output, refusal, audit Event, TTL
    let (phase, out) = console(s, "who", "list", 3600)?;
    if phase != "Succeeded" || !out.contains("players online") {
        bail!("ConsoleCommand list: {phase} {out:?}");
    }
    let (phase, _) = console(s, "no-stop", "stop", 3600)?;
    let reason = k.get("consolecommand", "no-stop", "{.status.reason}")?;
    if phase != "Failed" || reason != "CommandNotAllowed" {
        bail!("ConsoleCommand stop: {phase} {reason}, expected Failed CommandNotAllowed");
    }
    let (phase, _) = console(s, "no-deop", "whitelist remove dave", 3600)?;
    let reason = k.get("consolecommand", "no-deop", "{.status.reason}")?;
    if phase != "Failed" || reason != "CommandNotAllowed" {
        bail!(
            "`whitelist remove` although spec.whitelist manages the whitelist: {phase} {reason}, expected Failed CommandNotAllowed"
        );
    }
    let events = k.run(&[
        "get",
        "events",
        "-n",
        NS,
        "--field-selector",
        &format!("involvedObject.name={SERVER},reason=CommandRun"),
        "-o",
        "jsonpath={.items[*].message}",
    ])?;
    if !events.contains("`list`") {
        bail!("no CommandRun Event on {SERVER} for `list`: {events:?}");
    }
    if !crate::e2e_real::server_log(k)?.contains("[RCON] list") {
        bail!("the server's log does not show the console command");
    }
    console(s, "short-lived", "say bye", 10)?;
    retry(Duration::from_secs(90), || match k.get("consolecommand", "short-lived", "{.metadata.name}") {
        Ok(_) => bail!("ConsoleCommand short-lived still there after its 10 s TTL"),
        Err(_) => Ok(()),
    })?;
    println!(
        "e2e: ok   ConsoleCommand: `list` answered in status, `stop` and a whitelist change refused (CommandNotAllowed), CommandRun Event on the server, deleted after its TTL"
    );

    // --- the kubectl plugin on the real server: status, console, logs
    let status = plugin(s, &["status", SERVER])?;
    for want in ["Phase:        Running", "Live config:", "Plugin:       hello Installed"] {
        if !status.contains(want) {
            bail!("kubectl craftplane status {SERVER} lacks {want:?}:\n{status}");
        }
    }
    let answer = plugin(s, &["console", SERVER, "--", "list"])?;
    if !answer.contains("players online") {
        bail!("kubectl craftplane console {SERVER} -- list answered {answer:?}");
    }
    let log = plugin(s, &["logs", SERVER, "--tail", "50"])?;
    if !log.contains("[RCON] list") {
        bail!("kubectl craftplane logs {SERVER} does not show the console command:\n{log}");
    }
    println!("e2e: ok   kubectl craftplane status / console -- list ({}) / logs on the real server", answer.trim());

    // --- a scheduled restart: announced in chat, a clean restart, and it
    // keeps what was applied live. The slot is a minute ahead in a zone two
    // hours east of UTC (Etc/GMT-2: POSIX inverts the sign).
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let slot = (secs / 60 + if secs % 60 > 40 { 2 } else { 1 }) * 60;
    let local = slot + 2 * 3600;
    let cron = format!("{} {} * * *", (local / 60) % 60, (local / 3600) % 24);
    let follow_file = s.cluster.dir.join("real-task.log");
    let follow = Stopper(
        k.command(&["logs", "-f", POD, "-n", NS, "-c", "minecraft", "--tail=1"])
            .stdout(std::fs::File::create(&follow_file)?)
            .stderr(Stdio::null())
            .spawn()?,
    );
    patch_spec(
        k,
        &format!(
            r#"{{"tasks":[{{"name":"maintenance","schedule":"{cron}","timeZone":"Etc/GMT-2","actions":[{{"broadcast":"Maintenance in a moment"}},{{"restart":{{"countdownSeconds":10,"message":"Restarting for maintenance"}}}}]}}]}}"#
        ),
    )?;
    retry(Duration::from_secs(30), || {
        let next = k.get("mcs", SERVER, "{.status.tasks[0].nextScheduleTime}")?;
        if crate::e2e::parse_rfc3339(&next) != Some(slot as i64) {
            bail!("task maintenance: next slot {next:?}, expected {slot} (s since the epoch)");
        }
        Ok(())
    })?;
    retry(Duration::from_secs(240), || {
        let result = k.get("mcs", SERVER, "{.status.tasks[0].result}")?;
        if result != "Succeeded" {
            let msg = k.get("mcs", SERVER, "{.status.tasks[0].message}")?;
            bail!("task maintenance: {result:?} {msg}");
        }
        Ok(())
    })
    .with_context(|| format!("operator log:\n{}", crate::e2e::tail(&k.operator_log(), 30)))?;
    drop(follow);
    let said = std::fs::read_to_string(&follow_file)?;
    for line in [
        "[Server] Maintenance in a moment",
        "[Server] Restarting for maintenance in 10 seconds",
        "[Server] Restarting for maintenance in 1 seconds",
        "Saved the game",
        "Server stopped",
    ] {
        if !said.contains(line) {
            bail!("the scheduled restart's log lacks {line:?}:\n{}", crate::e2e::tail(&said, 30));
        }
    }
    if k.get("pod", POD, "{.metadata.uid}")? == uid {
        bail!("the scheduled restart left pod {uid} in place");
    }
    println!(
        "e2e: ok   scheduled task at {cron} Etc/GMT-2: broadcast, a 10 s countdown in chat, save and stop, a new pod, result Succeeded"
    );
    wait_running(k, Duration::from_secs(180))?;
    // What the server started with (written at start from its environment
    // and the ConfigMap; the stand-in never writes the difficulty back).
    let props = crate::e2e_real::exec_node(
        k,
        "process.stdout.write(require('fs').readFileSync('/data/server.properties', 'utf8'))",
    )?;
    for line in ["difficulty=hard", "white-list=true"] {
        if !props.lines().any(|l| l == line) {
            bail!("after a restart /data/server.properties lacks {line}:\n{props}");
        }
    }
    let new_uid = k.get("pod", POD, "{.metadata.uid}")?;
    retry(Duration::from_secs(60), || {
        if k.get("mcs", SERVER, "{.status.live.pod}")? != new_uid {
            bail!("status.live.pod is not the new pod {new_uid} yet");
        }
        Ok(())
    })?;
    let (_, out) = console(s, "ask-again", "difficulty", 3600)?;
    if !out.contains("Hard") {
        bail!("after a restart the server says {out:?}, expected Hard");
    }
    join(s, "dave")?;
    refused_by_whitelist(s, "erin", "the whitelist must survive the restart")?;
    println!(
        "e2e: ok   restarted: still Hard, dave still whitelisted, erin kicked as not white-listed; live settings re-applied to the new pod"
    );

    // Later steps join other players: the whitelist off again.
    let before = k.get("mcs", SERVER, "{.status.live.revision}")?;
    patch_spec(k, r#"{"whitelist":null,"tasks":null}"#)?;
    live_applied(s, &before)?;
    Ok(())
}

/// Waits until `status.live.revision` moved on from `before` and LiveConfig is True.
fn live_applied(s: &Setup, before: &str) -> Result<()> {
    let k = s.kube;
    retry(Duration::from_secs(60), || {
        let now = k.get("mcs", SERVER, "{.status.live.revision}")?;
        let cond = k.get("mcs", SERVER, r#"{.status.conditions[?(@.type=="LiveConfig")].status}"#)?;
        if now == before || cond != "True" {
            let msg = k.get("mcs", SERVER, r#"{.status.conditions[?(@.type=="LiveConfig")].message}"#)?;
            bail!("live settings not applied yet (revision {now:?}, LiveConfig {cond:?}: {msg})");
        }
        Ok(())
    })
    .with_context(|| format!("operator log:\n{}", crate::e2e::tail(&k.operator_log(), 20)))
}

fn same_pod(k: &crate::e2e::Kube, uid: &str, what: &str) -> Result<()> {
    let now = k.get("pod", POD, "{.metadata.uid}")?;
    if now != uid {
        bail!("{what}: the pod was replaced ({uid} → {now}); live settings must not restart the server");
    }
    Ok(())
}

/// Creates a ConsoleCommand and waits for its result: (phase, output).
fn console(s: &Setup, name: &str, command: &str, ttl: u32) -> Result<(String, String)> {
    let k = s.kube;
    let file = s.cluster.dir.join(format!("console-{name}.yaml"));
    std::fs::write(
        &file,
        format!(
            "apiVersion: craftplane.io/v1alpha1\nkind: ConsoleCommand\nmetadata: {{name: {name}, namespace: {NS}}}\nspec: {{server: {SERVER}, command: {command:?}, ttlSecondsAfterFinished: {ttl}}}\n"
        ),
    )?;
    k.run(&["apply", "-f", &file.to_string_lossy()])?;
    let mut result = (String::new(), String::new());
    retry(Duration::from_secs(60), || {
        let phase = k.get("consolecommand", name, "{.status.phase}")?;
        if phase != "Succeeded" && phase != "Failed" {
            bail!("ConsoleCommand {name} is {phase:?}");
        }
        result = (phase, k.get("consolecommand", name, "{.status.output}")?);
        Ok(())
    })?;
    Ok(result)
}

const CLIENT: &str = r#"
const mc = require('minecraft-protocol');
const hold = process.argv[3] === 'hold';
const c = mc.createClient({ host: process.argv[1], port: 25565, username: process.argv[2], version: '1.21.4', auth: 'offline' });
const t = setTimeout(() => { console.log('timeout'); process.exit(1); }, 15000);
c.on('login', () => { clearTimeout(t); setTimeout(() => { console.log('joined'); if (!hold) { c.end(); process.exit(0); } }, 1500); });
c.on('kick_disconnect', (p) => { console.log('kicked ' + JSON.stringify(p)); process.exit(1); });
c.on('disconnect', (p) => { console.log('kicked ' + JSON.stringify(p)); process.exit(1); });
c.on('end', () => { console.log('ended'); process.exit(1); });
c.on('error', (e) => { console.log('error ' + e.message); process.exit(1); });
"#;

fn client(s: &Setup, user: &str, mode: &str) -> Result<Command> {
    let ip = crate::e2e_real::pod_ip(s.kube)?;
    let ip = ip.as_str();
    let node = s.cluster.node().context("real node")?;
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{}", node.netns()))
        .args(["node", "-e", CLIENT, ip, user, mode])
        .env("NODE_PATH", s.node_modules);
    Ok(c)
}

/// The reason vanilla (and the stand-in server) kicks a player the
/// whitelist does not list with.
const NOT_WHITELISTED: &str = "You are not white-listed on this server!";

/// Tries `user`'s login: `None` when they get in and stay a moment, else
/// what the client saw instead (the kick packet with its reason, an error,
/// a timeout).
fn refusal(s: &Setup, user: &str) -> Result<Option<String>> {
    let out = client(s, user, "once")?.output()?;
    let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Ok((said != "joined").then_some(said))
}

/// `user` is kicked at login with the not-whitelisted reason: not any
/// failed join (a network error or a crash would be one too).
fn refused_by_whitelist(s: &Setup, user: &str, why: &str) -> Result<()> {
    match refusal(s, user)? {
        None => bail!("{user} joined although {why}"),
        Some(said) if kicked_as_not_whitelisted(&said) => Ok(()),
        Some(said) => bail!("{user} was not refused by the whitelist ({why}), the client saw: {said}"),
    }
}

/// Whether the client's report is a kick with the not-whitelisted reason.
fn kicked_as_not_whitelisted(said: &str) -> bool {
    said.starts_with("kicked ") && said.contains(NOT_WHITELISTED)
}

/// `user` joins and stays connected until the result is dropped.
fn hold(s: &Setup, user: &str) -> Result<Stopper> {
    let child = client(s, user, "hold")?.stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
    Ok(Stopper(child))
}

/// Runs the kubectl plugin (built here if needed) against the e2e cluster.
fn plugin(s: &Setup, args: &[&str]) -> Result<String> {
    let built = Command::new("cargo")
        .args(["build", "--quiet", "--bin", "kubectl-craftplane"])
        .current_dir(crate::project_root())
        .status()?;
    if !built.success() {
        bail!("cannot build kubectl-craftplane");
    }
    let out = Command::new(crate::target_dir().join("debug/kubectl-craftplane"))
        .args(["-n", NS])
        .args(args)
        .env("KUBECONFIG", s.cluster.kubeconfig())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        bail!("kubectl craftplane {args:?}: {text}{}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::kicked_as_not_whitelisted;

    /// What CLIENT printed against the stand-in server (tests/images/
    /// test-server, run on the host): an unlisted player, a full server,
    /// a server that is not there.
    #[test]
    fn only_the_not_whitelisted_kick_counts_as_a_whitelist_refusal() {
        let unlisted = r#"kicked {"reason":{"type":"compound","value":{"text":{"type":"string","value":"You are not white-listed on this server!"}}}}"#;
        let full =
            r#"kicked {"reason":{"type":"compound","value":{"text":{"type":"string","value":"The server is full!"}}}}"#;
        assert!(kicked_as_not_whitelisted(unlisted));
        assert!(!kicked_as_not_whitelisted(full));
        assert!(!kicked_as_not_whitelisted("error connect ECONNREFUSED 10.96.0.12:25565"));
        assert!(!kicked_as_not_whitelisted("timeout"));
    }
}
