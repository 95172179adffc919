//! Live settings: what a running server takes over RCON without a restart
//! (whitelist, ops, difficulty, game rules), and the commands that bring a
//! server from what it reports to what the spec asks. Pure: the reconciler
//! does the RCON I/O (`controller::server::live`).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::short_hash;
use crate::api::server::Difficulty;

/// The live part of a server's spec.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LiveSettings {
    /// Whitelisted players; empty turns the whitelist off.
    pub whitelist: Vec<String>,
    /// Server operators.
    pub ops: Vec<String>,
    /// Difficulty; `None` leaves the server's own.
    pub difficulty: Option<Difficulty>,
    /// Game rules by name.
    pub game_rules: BTreeMap<String, String>,
}

impl LiveSettings {
    /// Hash of the settings: `status.live.revision` once applied.
    pub fn revision(&self) -> String {
        short_hash(serde_json::to_string(self).unwrap_or_default().as_bytes())
    }

    /// server.properties lines these settings own (rendered into the
    /// ConfigMap the image reads at start, so a restart keeps what was
    /// applied live).
    pub fn properties(&self) -> BTreeMap<String, String> {
        let on = !self.whitelist.is_empty();
        let mut p = BTreeMap::from([
            ("white-list".to_string(), on.to_string()),
            ("enforce-whitelist".to_string(), on.to_string()),
        ]);
        if let Some(d) = self.difficulty {
            p.insert("difficulty".into(), d.as_str().into());
        }
        p
    }
}

fn is_uuid(s: &str) -> bool {
    s.len() >= 32 && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

/// Names in the answer to `whitelist list` (vanilla: `There are 2
/// whitelisted player(s): alice, bob`, or `There are no whitelisted
/// players`). `None` when the answer has neither shape.
pub fn parse_whitelist(answer: &str) -> Option<Vec<String>> {
    let a = answer.trim();
    if a.starts_with("There are no whitelisted players") {
        return Some(vec![]);
    }
    let (head, names) = a.split_once(':')?;
    if !head.starts_with("There are") || !head.contains("whitelisted") {
        return None;
    }
    Some(names.split(',').map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).collect())
}

/// Whether a command's answer says it failed (vanilla's and the common
/// server implementations' wording).
pub fn failed(answer: &str) -> bool {
    let a = answer.trim_start();
    [
        "Unknown",
        "Incorrect argument",
        "Invalid",
        "Usage:",
        "An error occurred",
        "Expected",
        "That player does not exist",
    ]
    .iter()
    .any(|p| a.starts_with(p))
}

/// The commands that make the server match `want`, given the names it
/// whitelists now (`whitelisted`, from `whitelist list`) and the ops
/// craftplane applied before (`applied_ops`: an op it did not add is never
/// removed). Names compare case-insensitively; when the spec lists UUIDs,
/// whitelisted names are only added, never removed (a UUID cannot be
/// matched to a name here).
pub fn commands(want: &LiveSettings, whitelisted: &[String], applied_ops: &[String]) -> Vec<String> {
    let lower = |v: &[String]| v.iter().map(|s| s.to_lowercase()).collect::<BTreeSet<_>>();
    let mut out = Vec::new();
    if want.whitelist.is_empty() {
        out.push("whitelist off".to_string());
    } else {
        let have = lower(whitelisted);
        let wanted = lower(&want.whitelist);
        for n in &want.whitelist {
            if !have.contains(&n.to_lowercase()) {
                out.push(format!("whitelist add {n}"));
            }
        }
        if !want.whitelist.iter().any(|n| is_uuid(n)) {
            for n in whitelisted {
                if !wanted.contains(&n.to_lowercase()) {
                    out.push(format!("whitelist remove {n}"));
                }
            }
        }
        out.push("whitelist on".to_string());
    }
    let ops = lower(&want.ops);
    for n in &want.ops {
        out.push(format!("op {n}"));
    }
    for n in applied_ops {
        if !ops.contains(&n.to_lowercase()) {
            out.push(format!("deop {n}"));
        }
    }
    if let Some(d) = want.difficulty {
        out.push(format!("difficulty {}", d.as_str()));
    }
    for (k, v) in &want.game_rules {
        out.push(format!("gamerule {k} {v}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_whitelist_answers() {
        assert_eq!(parse_whitelist("There are no whitelisted players"), Some(vec![]));
        assert_eq!(parse_whitelist("There are 2 whitelisted player(s): alice, Bob"), Some(names(&["alice", "Bob"])));
        assert_eq!(parse_whitelist("Unknown command"), None);
    }

    #[test]
    fn whitelist_diff_adds_and_removes_case_insensitively() {
        let want = LiveSettings { whitelist: names(&["Alice", "bob"]), ..Default::default() };
        let cmds = commands(&want, &names(&["alice", "carol"]), &[]);
        assert_eq!(cmds, names(&["whitelist add bob", "whitelist remove carol", "whitelist on"]));
    }

    #[test]
    fn uuids_in_the_spec_never_remove_names() {
        let want = LiveSettings { whitelist: names(&["069a79f4-44e9-4726-a5be-fca90e38aaf5"]), ..Default::default() };
        let cmds = commands(&want, &names(&["carol"]), &[]);
        assert_eq!(cmds, names(&["whitelist add 069a79f4-44e9-4726-a5be-fca90e38aaf5", "whitelist on"]));
    }

    #[test]
    fn empty_whitelist_turns_it_off_and_only_applied_ops_are_removed() {
        let want = LiveSettings {
            ops: names(&["alice"]),
            difficulty: Some(Difficulty::Hard),
            game_rules: BTreeMap::from([("keepInventory".to_string(), "true".to_string())]),
            ..Default::default()
        };
        let cmds = commands(&want, &names(&["x"]), &names(&["ALICE", "dave"]));
        assert_eq!(
            cmds,
            names(&["whitelist off", "op alice", "deop dave", "difficulty hard", "gamerule keepInventory true"])
        );
    }

    #[test]
    fn failure_answers_are_recognised() {
        assert!(failed("Unknown game rule: nope"));
        assert!(failed("Incorrect argument for command"));
        assert!(!failed("Gamerule keepInventory is now set to: true"));
        assert!(!failed("Nothing changed. The player already is an operator"));
    }

    #[test]
    fn properties_keep_live_settings_across_restarts() {
        let on =
            LiveSettings { whitelist: names(&["a"]), difficulty: Some(Difficulty::Peaceful), ..Default::default() };
        let p = on.properties();
        assert_eq!(p["white-list"], "true");
        assert_eq!(p["difficulty"], "peaceful");
        assert_eq!(LiveSettings::default().properties()["white-list"], "false");
        assert_ne!(on.revision(), LiveSettings::default().revision());
    }
}
