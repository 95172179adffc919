//! Which console commands a tenant may run (ConsoleCommand, and scheduled
//! tasks' `command` actions): pure.
//!
//! A line may run more than its first word says: `execute … run <cmd>`
//! (nested at will), `return run <cmd>`, namespaced names (`bukkit:stop`)
//! and aliases (`rl` is `reload`). [`check`] finds every command the line
//! runs and checks each one. The arguments of other commands are data
//! (`say hello run stop` says a text); inside `execute` every `run` word is
//! followed, as the checker cannot tell a player named `run` from the
//! keyword. A line that runs commands it cannot see is refused: `function`,
//! `schedule function`, `execute if function`, `sudo`, a command block's
//! `Command` set by `setblock`/`summon`/`data`/….

use std::collections::BTreeSet;

use std::time::Duration;

use crate::api::server::{MinecraftServerSpec, ServerPhase};
use crate::api::sku::ConsolePolicy;

/// Aliases (Bukkit, Spigot, Paper, vanilla, EssentialsX) of commands a
/// policy is likely to name, to the name they are checked as.
const ALIASES: &[(&str, &str)] = &[
    ("rl", "reload"),
    ("pl", "plugins"),
    ("ver", "version"),
    ("about", "version"),
    ("icanhasbukkit", "version"),
    ("tell", "msg"),
    ("w", "msg"),
    ("tm", "teammsg"),
    ("tp", "teleport"),
    ("xp", "experience"),
    ("eban", "ban"),
    ("banip", "ban-ip"),
    ("ipban", "ban-ip"),
    ("ebanip", "ban-ip"),
    ("eban-ip", "ban-ip"),
    ("unban", "pardon"),
    ("eunban", "pardon"),
    ("epardon", "pardon"),
    ("unbanip", "pardon-ip"),
    ("eunbanip", "pardon-ip"),
    ("pardonip", "pardon-ip"),
    ("ekick", "kick"),
    ("esudo", "sudo"),
];

/// Plugin commands that make a player (who may be an operator) run a
/// command: what they run cannot be checked.
const RUN_AS_PLAYER: &[&str] = &["sudo"];

/// Commands that may put a command into a command block or minecart
/// (`{Command:"…"}`), which then runs it unseen.
const BLOCK_DATA: &[&str] = &["setblock", "fill", "clone", "summon", "data", "give", "item", "place"];

/// A command name as the server resolves it: lowercased, without a leading
/// `/` or a namespace (`bukkit:`, `minecraft:`, `spigot:`, …), aliases
/// resolved.
fn canonical(word: &str) -> String {
    let w = word.trim_start_matches('/').to_lowercase();
    let bare = w.rsplit(':').next().unwrap_or_default();
    ALIASES.iter().find(|(a, _)| *a == bare).map_or(bare, |(_, to)| to).to_string()
}

/// The words of a command (lowercased), its name made [`canonical`].
fn words(command: &str) -> Vec<String> {
    let mut w: Vec<String> = command.split_whitespace().map(str::to_lowercase).collect();
    if let Some(first) = w.first_mut() {
        *first = canonical(first);
    }
    w
}

/// Whether `args` (lowercased) set a command block's or minecart's
/// `Command`: `command:`, `"command":`, `'command' :`.
fn sets_block_command(args: &str) -> bool {
    args.match_indices("command").any(|(i, m)| {
        let rest = args[i + m.len()..].trim_start_matches(['"', '\'']).trim_start();
        rest.starts_with(':')
    })
}

/// Where each whitespace-separated word of `s` ends (byte offsets), with
/// the word.
fn word_ends(s: &str) -> impl Iterator<Item = (&str, usize)> {
    s.split_whitespace().map(move |w| (w, w.as_ptr() as usize - s.as_ptr() as usize + w.len()))
}

/// Whether a word could be a command name the server resolves (a name
/// with quotes or brackets, e.g. `stop"]` split out of a selector, names
/// no command: the server would refuse the line).
fn plausible(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || "_-.?".contains(c))
}

/// Every command `line` runs, as [`words`]: the line's own command first,
/// then what `execute … run` and `return run` run, nested at will. Every
/// whitespace-separated `run` in an `execute` is followed: the server's
/// `run` keyword is always such a word, so no quoting or selector
/// (`@a[name="x run stop"]`, a player named `run`) can hide one. An error
/// names what cannot be followed.
fn commands(line: &str) -> Result<Vec<Vec<String>>, String> {
    let mut out = Vec::new();
    let mut todo = vec![0];
    let mut seen = BTreeSet::new();
    while let Some(start) = todo.pop() {
        if !seen.insert(start) {
            continue;
        }
        let text = &line[start..];
        let cmd = words(text);
        let Some(name) = cmd.first().cloned() else {
            return Err(if start == 0 { "the command is empty".into() } else { "a `run` runs nothing".into() });
        };
        if start > 0 && !plausible(&name) {
            continue;
        }
        if name.is_empty() {
            return Err(format!("`{}` names no command", text.split_whitespace().next().unwrap_or_default()));
        }
        match name.as_str() {
            "execute" | "return" => {
                let mut prev = "";
                for (w, end) in word_ends(text) {
                    let w_lower = w.to_lowercase();
                    if w_lower == "run" {
                        todo.push(start + end);
                    } else if w_lower == "function" && (prev == "if" || prev == "unless") {
                        return Err(format!(
                            "`{name} {prev} function` runs a function's commands, which cannot be checked"
                        ));
                    }
                    prev = if w_lower == "if" {
                        "if"
                    } else if w_lower == "unless" {
                        "unless"
                    } else {
                        ""
                    };
                }
            }
            "function" => return Err("`function` runs a function's commands, which cannot be checked".into()),
            "schedule" if cmd.get(1).is_some_and(|w| w == "function") => {
                return Err("`schedule function` runs a function's commands, which cannot be checked".into());
            }
            n if RUN_AS_PLAYER.contains(&n) => {
                return Err(format!("`{n}` makes a player run a command, which cannot be checked"));
            }
            n if BLOCK_DATA.contains(&n) && sets_block_command(&cmd[1..].join(" ")) => {
                return Err(format!("`{n}` sets a command block's command, which cannot be checked"));
            }
            _ => {}
        }
        out.push(cmd);
    }
    Ok(out)
}

/// Whether `entry` (a command with optional leading arguments) matches the
/// command's words.
fn matches(entry: &str, cmd: &[String]) -> bool {
    let e = words(entry);
    !e.is_empty() && e.len() <= cmd.len() && e.iter().zip(cmd).all(|(a, b)| a == b)
}

/// Why a command the line runs is always refused, if it is.
fn managed(cmd: &[String], spec: &MinecraftServerSpec) -> Option<&'static str> {
    let name = cmd.first()?;
    match name.as_str() {
        "stop" | "restart" => {
            Some("whether the server runs is spec.state (set it to Stopped, or restart through the spec)")
        }
        "whitelist" if !spec.whitelist.is_empty() && cmd.get(1).is_some_and(|s| s != "list") => {
            Some("the whitelist is managed by spec.whitelist")
        }
        "op" | "deop" if !spec.ops.is_empty() => Some("operators are managed by spec.ops"),
        "difficulty" if spec.difficulty.is_some() && cmd.len() > 1 => {
            Some("the difficulty is managed by spec.difficulty")
        }
        "gamerule"
            if cmd.len() > 2
                && cmd.get(1).is_some_and(|r| spec.game_rules.keys().any(|k| k.eq_ignore_ascii_case(r))) =>
        {
            Some("this game rule is managed by spec.gameRules")
        }
        _ => None,
    }
}

/// Why the command may not run, or `Ok`. Every command the line runs (see
/// the module docs) is checked. Always refused: `stop`/`restart` (the
/// spec's `state` decides whether the server runs) and commands that change
/// what the spec manages (the whitelist when `spec.whitelist` is set,
/// `op`/`deop` when `spec.ops` is, `difficulty <value>` when
/// `spec.difficulty` is, `gamerule <rule> <value>` for rules in
/// `spec.gameRules`): the operator would undo them, or they would undo the
/// spec. Then the SKU's `deny`, then its `allow` (which must list every
/// command the line runs, `execute` included).
pub fn check(command: &str, spec: &MinecraftServerSpec, policy: Option<&ConsolePolicy>) -> Result<(), String> {
    if command.chars().any(char::is_control) {
        return Err("the command must be one line without control characters".into());
    }
    let runs = commands(command).map_err(|e| format!("refused because {e}"))?;
    let top = runs.first().and_then(|c| c.first()).cloned().unwrap_or_default();
    for (i, cmd) in runs.iter().enumerate() {
        let name = cmd.first().map(String::as_str).unwrap_or_default();
        let via = if i == 0 { String::new() } else { format!(" (run by `{top}`)") };
        if let Some(why) = managed(cmd, spec) {
            return Err(format!("`{name}`{via} is not run through ConsoleCommand: {why}"));
        }
        let Some(p) = policy else { continue };
        if let Some(d) = p.deny.iter().find(|d| matches(d, cmd)) {
            return Err(format!("the SKU's consoleCommands.deny refuses `{d}`{via}"));
        }
        if !p.allow.is_empty() && !p.allow.iter().any(|a| matches(a, cmd)) {
            return Err(format!("the SKU's consoleCommands.allow does not list `{name}`{via}"));
        }
    }
    Ok(())
}

/// What a command does about its server not being ready for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerWait {
    /// Keep waiting (reason, message).
    Wait(&'static str, String),
    /// Give up (reason, message).
    Fail(&'static str, String),
}

/// How long a command waits for a server that does not exist (yet).
pub const WAIT_FOR_MISSING_SERVER: Duration = Duration::from_secs(120);

/// The verdict for a command whose server is `server` (none: not found)
/// in `phase`, after waiting `waited` since the operator first saw it: a
/// server that may still be starting is waited for as long as its start
/// may take (`start_allowance`); a stopped one fails at once (no start is
/// coming). `phase` none with a server: not reconciled yet.
pub fn server_wait(
    server: Option<&str>,
    phase: Option<ServerPhase>,
    waited: Duration,
    start_allowance: Duration,
) -> ServerWait {
    let Some(server) = server else {
        let msg = "the MinecraftServer it names does not exist in its namespace".to_string();
        return if waited >= WAIT_FOR_MISSING_SERVER {
            ServerWait::Fail("ServerNotFound", msg)
        } else {
            ServerWait::Wait("ServerNotFound", msg)
        };
    };
    let state = match phase {
        None => "has no status yet".to_string(),
        Some(p) => format!("is {p:?}"),
    };
    if phase == Some(ServerPhase::Stopped) {
        return ServerWait::Fail(
            "ServerNotRunning",
            format!("server {server} is Stopped (spec.state): start it, then run the command again"),
        );
    }
    // A command does not wake a sleeping server (a scheduled command would
    // otherwise start every sleeping server it names).
    if phase == Some(ServerPhase::Hibernated) {
        return ServerWait::Fail(
            "ServerAsleep",
            format!(
                "server {server} is asleep (spec.sleep): wake it (kubectl craftplane wake {server}), then run the command again"
            ),
        );
    }
    let limit = humantime(start_allowance);
    if waited >= start_allowance {
        ServerWait::Fail(
            "ServerNotRunning",
            format!("server {server} {state}, not Running, after waiting {limit} (as long as its start may take)"),
        )
    } else {
        ServerWait::Wait(
            "ServerNotRunning",
            format!("waiting for server {server} to be Running (it {state}; up to {limit})"),
        )
    }
}

/// `1h2m3s` style, whole seconds.
fn humantime(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    match (h, m, s) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, m, s) => format!("{h}h{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> MinecraftServerSpec {
        serde_yaml::from_str(&format!("sku: small\neula: true\n{yaml}")).unwrap()
    }

    #[test]
    fn stop_is_always_refused_in_every_spelling() {
        let s = spec("");
        for c in ["stop", "/stop", "  STOP now", "minecraft:stop", "restart"] {
            assert!(check(c, &s, None).is_err(), "{c}");
        }
        assert!(check("list", &s, None).is_ok());
    }

    #[test]
    fn what_the_spec_manages_is_refused_only_when_it_manages_it() {
        let free = spec("");
        let managed = spec("whitelist: [alice]\nops: [alice]\ndifficulty: hard\ngameRules: {keepInventory: \"true\"}");
        for c in ["whitelist add bob", "op bob", "deop alice", "difficulty easy", "gamerule keepInventory false"] {
            assert!(check(c, &free, None).is_ok(), "{c} on a server that does not manage it");
            assert!(check(c, &managed, None).is_err(), "{c} on a server that manages it");
        }
        for c in ["whitelist list", "difficulty", "gamerule keepInventory", "gamerule doFireTick false"] {
            assert!(check(c, &managed, None).is_ok(), "{c} only reads or touches what the spec leaves alone");
        }
    }

    #[test]
    fn sku_deny_wins_over_allow_and_allow_is_a_closed_list() {
        let s = spec("");
        let p = ConsolePolicy { allow: vec!["say".into(), "time".into()], deny: vec!["time set".into()] };
        assert!(check("say hi", &s, Some(&p)).is_ok());
        assert!(check("time query daytime", &s, Some(&p)).is_ok());
        assert!(check("TIME SET day", &s, Some(&p)).unwrap_err().contains("deny"));
        assert!(check("give bob diamond", &s, Some(&p)).unwrap_err().contains("allow"));
        assert!(check("sayx", &s, Some(&p)).is_err(), "entries match whole words");
    }

    /// Issue 30 item 7: what the line really runs is checked, not its
    /// first words.
    #[test]
    fn bypass_attempts_are_refused() {
        let free = spec("");
        let managed = spec("whitelist: [alice]\nops: [alice]\ndifficulty: hard\ngameRules: {keepInventory: \"true\"}");
        let deny = ConsolePolicy {
            allow: vec![],
            deny: vec![
                "reload".into(),
                "plugins".into(),
                "save-off".into(),
                "ban-ip".into(),
                "pardon".into(),
                "give".into(),
            ],
        };
        let always = [
            "execute run stop",
            "/execute run stop",
            "execute as @a run stop",
            "execute as @a at @s run execute if entity @s run stop",
            "execute run execute run execute run restart",
            "minecraft:execute run minecraft:stop",
            "execute as run run stop",
            "execute as @a[name=\"x run stop\"] run stop",
            "execute as @a[name=\"x\"]   run   /stop",
            "execute store result score a b run stop",
            "EXECUTE RUN STOP",
            "execute if score a' obj matches 1 run restart '",
            "return run stop",
            "execute run return run stop",
            "bukkit:stop",
            "minecraft:stop",
            "spigot:restart",
            "paper:stop",
            ":stop",
            "/bukkit:stop now",
            "function ns:evil",
            "minecraft:function ns:evil",
            "schedule function ns:evil 10t",
            "execute if function ns:evil",
            "execute unless function ns:evil run say hi",
            "sudo alice c:stop",
            "essentials:esudo alice stop",
            "setblock ~ ~ ~ command_block{Command:\"stop\",auto:1b}",
            "execute run summon command_block_minecart ~ ~ ~ {Command: \"op bob\"}",
            "give @p command_block[block_entity_data={id:command_block,\"Command\":\"stop\"}]",
            "say hi\nstop",
            "execute run",
            "bukkit:",
            "",
        ];
        for c in always {
            let e = check(c, &free, None).expect_err(c);
            assert!(!e.is_empty(), "{c}");
        }
        let on_managed = [
            "execute as @a run op x",
            "execute run minecraft:deop alice",
            "execute at @p run whitelist add bob",
            "execute run bukkit:whitelist off",
            "execute positioned 0 0 0 run difficulty peaceful",
            "execute in minecraft:overworld run gamerule keepInventory false",
            "minecraft:gamerule keepinventory false",
        ];
        for c in on_managed {
            assert!(check(c, &managed, None).is_err(), "{c} on a server that manages it");
            assert!(check(c, &free, None).is_ok(), "{c} on a server that does not manage it");
        }
        let denied = [
            "rl",
            "rl confirm",
            "bukkit:reload",
            "bukkit:rl",
            "execute run reload",
            "pl",
            "bukkit:plugins",
            "execute as @a run bukkit:pl",
            "minecraft:save-off",
            "execute run save-off",
            "banip 1.2.3.4",
            "essentials:unban bob",
            "execute run minecraft:give @a diamond",
        ];
        for c in denied {
            assert!(check(c, &free, Some(&deny)).unwrap_err().contains("deny"), "{c}");
            assert!(check(c, &free, None).is_ok(), "{c} without a deny list");
        }
        // Deny entries are read the same way: an alias or a namespace names the command.
        let by_alias = ConsolePolicy { allow: vec![], deny: vec!["bukkit:rl".into()] };
        assert!(check("reload", &free, Some(&by_alias)).is_err());
        // An allow list must list every command the line runs.
        let allow = ConsolePolicy { allow: vec!["say".into(), "execute".into()], deny: vec![] };
        assert!(check("execute as @a run say hi", &free, Some(&allow)).is_ok());
        assert!(
            check("execute as @a run give @s diamond", &free, Some(&allow))
                .unwrap_err()
                .contains("`give` (run by `execute`)")
        );
        // Inside `execute` every `run` word is followed (a player or score
        // holder may be called `run`): a text that says `run stop` is
        // refused there, though not on its own.
        assert!(check("execute as @a run say hello run stop", &free, None).is_err());
        assert!(check("say hello run stop", &free, None).is_ok());
        let say_only = ConsolePolicy { allow: vec!["say".into()], deny: vec![] };
        assert!(check("execute run say hi", &free, Some(&say_only)).unwrap_err().contains("allow"));
    }

    #[test]
    fn harmless_commands_are_allowed() {
        let managed = spec("whitelist: [alice]\nops: [alice]\ndifficulty: hard\ngameRules: {keepInventory: \"true\"}");
        let deny = ConsolePolicy { allow: vec![], deny: vec!["reload".into(), "give".into()] };
        for c in [
            "say hello run stop",
            "say execute run stop",
            "me runs away; stop",
            "msg bob don't stop",
            "tell bob function and sudo",
            "tellraw @a {\"text\":\"run stop\"}",
            "kick bob run stop",
            "list",
            "whitelist list",
            "execute as @a run say hi",
            "execute as @a[name=\"x run stop\"] run say hi",
            "execute as @a at @s run tp @s ~ ~1 ~",
            "execute if entity @a[tag=x]",
            "time set day",
            "weather clear",
            "gamerule doFireTick false",
            "/minecraft:list",
            "schedule clear ns:f",
            "setblock ~ ~ ~ stone",
            "summon zombie ~ ~ ~ {CustomName:'\"Bob\"'}",
            "give @p diamond_sword",
            "stopsound @a",
            "restarted-plugin status",
        ] {
            let policy = if c.starts_with("give") { None } else { Some(&deny) };
            assert_eq!(check(c, &managed, policy), Ok(()), "{c}");
        }
    }

    #[test]
    fn a_command_waits_as_long_as_its_server_may_take_to_start() {
        use std::time::Duration;
        let allowance = crate::resources::statefulset::start_allowance();
        assert!(allowance >= Duration::from_secs(30 * 60), "the startup probe allows 30 min: {allowance:?}");
        let min = |m: u64| Duration::from_secs(m * 60);
        // Starting for 10 minutes (a modpack's first start): still waiting.
        for phase in [None, Some(ServerPhase::Pending), Some(ServerPhase::Starting), Some(ServerPhase::Restoring)] {
            match server_wait(Some("survival"), phase, min(10), allowance) {
                ServerWait::Wait("ServerNotRunning", msg) => {
                    assert!(!msg.contains("None") && !msg.contains("Some("), "{msg}");
                    assert!(msg.contains("up to 32m10s"), "{msg}");
                }
                other => panic!("{phase:?} after 10 min: {other:?}"),
            }
        }
        // No status yet: said in words, not as Rust's None.
        let ServerWait::Wait(_, msg) = server_wait(Some("survival"), None, min(0), allowance) else { panic!() };
        assert!(msg.contains("has no status yet"), "{msg}");
        // Past the start allowance: fails, saying how long it waited.
        match server_wait(Some("survival"), Some(ServerPhase::Starting), allowance, allowance) {
            ServerWait::Fail("ServerNotRunning", msg) => {
                assert!(msg.contains("is Starting") && msg.contains("32m10s"), "{msg}")
            }
            other => panic!("{other:?}"),
        }
        // Stopped: no start is coming, fail at once.
        assert!(matches!(
            server_wait(Some("survival"), Some(ServerPhase::Stopped), min(0), allowance),
            ServerWait::Fail("ServerNotRunning", _)
        ));
        // Asleep: a command does not wake it; fail at once, saying how to.
        match server_wait(Some("survival"), Some(ServerPhase::Hibernated), min(0), allowance) {
            ServerWait::Fail("ServerAsleep", msg) => assert!(msg.contains("kubectl craftplane wake survival"), "{msg}"),
            other => panic!("{other:?}"),
        }
        // A missing server: two minutes, then not found.
        assert!(matches!(
            server_wait(None, None, Duration::from_secs(60), allowance),
            ServerWait::Wait("ServerNotFound", _)
        ));
        assert!(matches!(
            server_wait(None, None, WAIT_FOR_MISSING_SERVER, allowance),
            ServerWait::Fail("ServerNotFound", _)
        ));
    }
}
