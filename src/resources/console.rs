//! Which console commands a tenant may run (ConsoleCommand): pure.

use crate::api::server::MinecraftServerSpec;
use crate::api::sku::ConsolePolicy;

/// The command's words, lowercased, without a leading `/` or a
/// `minecraft:` namespace on the command name (so `/minecraft:stop` is
/// `stop`).
fn words(command: &str) -> Vec<String> {
    let mut w: Vec<String> = command.trim().trim_start_matches('/').split_whitespace().map(str::to_lowercase).collect();
    if let Some(first) = w.first_mut()
        && let Some(bare) = first.strip_prefix("minecraft:")
    {
        *first = bare.to_string();
    }
    w
}

/// Whether `entry` (a command with optional leading arguments) matches the
/// command's words.
fn matches(entry: &str, cmd: &[String]) -> bool {
    let e = words(entry);
    !e.is_empty() && e.len() <= cmd.len() && e.iter().zip(cmd).all(|(a, b)| a == b)
}

/// Why the command may not run, or `Ok`. Always refused: `stop`/`restart`
/// (the spec's `state` decides whether the server runs) and commands that
/// change what the spec manages (the whitelist when `spec.whitelist` is set,
/// `op`/`deop` when `spec.ops` is, `difficulty <value>` when
/// `spec.difficulty` is, `gamerule <rule> <value>` for rules in
/// `spec.gameRules`): the operator would undo them, or they would undo the
/// spec. Then the SKU's `deny`, then its `allow`.
pub fn check(command: &str, spec: &MinecraftServerSpec, policy: Option<&ConsolePolicy>) -> Result<(), String> {
    let cmd = words(command);
    let Some(name) = cmd.first() else {
        return Err("the command is empty".into());
    };
    let managed = match name.as_str() {
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
    };
    if let Some(why) = managed {
        return Err(format!("`{name}` is not run through ConsoleCommand: {why}"));
    }
    let Some(p) = policy else {
        return Ok(());
    };
    if let Some(d) = p.deny.iter().find(|d| matches(d, &cmd)) {
        return Err(format!("the SKU's consoleCommands.deny refuses `{d}`"));
    }
    if !p.allow.is_empty() && !p.allow.iter().any(|a| matches(a, &cmd)) {
        return Err(format!("the SKU's consoleCommands.allow does not list `{name}`"));
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
}
