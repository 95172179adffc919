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

use crate::api::server::MinecraftServerSpec;
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
}
