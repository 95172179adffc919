//! Text output of `kubectl craftplane` (pure).

use k8s_openapi::jiff::Timestamp;

use crate::api::{BackupSnapshot, MinecraftServer, PluginInstallation};

fn age(t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> String {
    let Some(t) = t else { return "-".into() };
    let secs = Timestamp::now().duration_since(t.0).as_secs().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> =
        (0..cols).map(|c| rows.iter().map(|r| r.get(c).map_or(0, |s| s.chars().count())).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r.iter().enumerate().map(|(i, s)| format!("{s:<w$}", w = widths[i])).collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}

/// Every server of a namespace, one line each.
pub fn server_table(servers: &[MinecraftServer]) -> String {
    if servers.is_empty() {
        return "No MinecraftServers in this namespace.\n".into();
    }
    let mut rows = vec![["NAME", "PHASE", "PLAYERS", "VERSION", "SKU", "ADDRESS", "AGE"].map(String::from).to_vec()];
    for s in servers {
        let s = &printable_copy(s);
        let st = s.status.clone().unwrap_or_default();
        rows.push(vec![
            s.metadata.name.clone().unwrap_or_default(),
            st.phase.map(|p| format!("{p:?}")).unwrap_or_else(|| "-".into()),
            st.players.as_ref().map(|p| format!("{}/{}", p.online, p.max)).unwrap_or_else(|| "-".into()),
            st.version.clone().unwrap_or_else(|| s.spec.version.clone()),
            s.spec.sku.clone(),
            st.address.clone().unwrap_or_else(|| "-".into()),
            age(s.metadata.creation_timestamp.as_ref()),
        ]);
    }
    table(&rows)
}

fn paint(text: &str, ok: Option<bool>, colour: bool) -> String {
    match (colour, ok) {
        (true, Some(true)) => format!("\x1b[32m{text}\x1b[0m"),
        (true, Some(false)) => format!("\x1b[31m{text}\x1b[0m"),
        (true, None) => format!("\x1b[33m{text}\x1b[0m"),
        (false, _) => text.to_string(),
    }
}

/// One server on one screen.
pub fn server(s: &MinecraftServer, plugins: &[PluginInstallation], colour: bool) -> String {
    use crate::api::server::ServerPhase::*;
    let s = &printable_copy(s);
    let plugins = &printable_copy(&plugins.to_vec());
    let st = s.status.clone().unwrap_or_default();
    let name = s.metadata.name.clone().unwrap_or_default();
    let phase = st.phase.map(|p| format!("{p:?}")).unwrap_or_else(|| "Pending".into());
    let health = match st.phase {
        Some(Running) | Some(Stopped) | Some(Hibernated) => Some(true),
        Some(Failed) => Some(false),
        _ => None,
    };
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<14}{v}\n"));
    line("Server:", format!("{name} (namespace {})", s.metadata.namespace.clone().unwrap_or_default()));
    line("Phase:", paint(&phase, health, colour));
    line("Address:", st.address.clone().unwrap_or_else(|| "-".into()));
    if st.hostnames.len() > 1 {
        line("Hostnames:", st.hostnames.join(", "));
    }
    if let Some(c) = st.conditions.iter().find(|c| c.type_ == "Hostname" && c.status == "False") {
        line("Hostname:", paint(&format!("{}: {}", c.reason, c.message), Some(false), colour));
    }
    let players = match &st.players {
        Some(p) if p.names.is_empty() => format!("{}/{}", p.online, p.max),
        Some(p) => format!("{}/{} ({})", p.online, p.max, p.names.join(", ")),
        None => "-".into(),
    };
    line("Players:", players);
    let version = match (&st.version, &st.resolved_version) {
        (Some(v), _) => v.clone(),
        (None, Some(r)) => format!("{} ({} resolved)", r.version, r.from),
        (None, None) => s.spec.version.clone(),
    };
    line("Version:", format!("{version} ({:?})", s.spec.server_type));
    line("SKU:", s.spec.sku.clone());
    line("Desired:", format!("{:?}", s.spec.state));
    if let Some(sl) = &st.sleep {
        let state = match (&sl.asleep_since, &sl.idle_since) {
            (Some(t), _) => format!("asleep for {}", age(Some(t))),
            (None, Some(t)) => format!("awake, no player for {}", age(Some(t))),
            (None, None) => "awake".into(),
        };
        let wakes = match &sl.last_wake {
            Some(t) => format!(
                "; woken {} times, last {} ago by {}",
                sl.wake_count,
                age(Some(t)),
                sl.last_wake_by.as_deref().unwrap_or("-")
            ),
            None => String::new(),
        };
        line("Sleep:", format!("{state}{wakes}"));
    }
    if let Some(l) = &st.live {
        line(
            "Live config:",
            format!("{} on pod {}", l.revision.clone().unwrap_or_default(), l.pod.clone().unwrap_or_default()),
        );
    }
    match &st.last_backup {
        Some(b) => line("Last backup:", format!("{} ({} ago)", b.name, age(b.completed_at.as_ref()))),
        None => line("Last backup:", "none".into()),
    }
    if let Some(b) = &s.spec.backup {
        let next = st.backup_schedule.as_ref().and_then(|x| x.next_scheduled_time.as_ref()).map(|t| t.0.to_string());
        line("Schedule:", format!("{} (next {})", b.schedule, next.unwrap_or_else(|| "-".into())));
    }
    for t in &s.spec.tasks {
        let ts = st.tasks.iter().find(|x| x.name == t.name);
        let result = ts.and_then(|x| x.result).map(|r| format!("{r:?}")).unwrap_or_else(|| "never ran".into());
        let next =
            ts.and_then(|x| x.next_schedule_time.as_ref()).map(|t| t.0.to_string()).unwrap_or_else(|| "-".into());
        line(
            "Task:",
            format!(
                "{} `{}` {}: last {result}, next {next}",
                t.name,
                t.schedule,
                t.time_zone.as_deref().unwrap_or("UTC")
            ),
        );
    }
    if plugins.is_empty() {
        line("Plugins:", "none".into());
    }
    for p in plugins {
        let ps = p.status.clone().unwrap_or_default();
        let phase = ps.phase.map(|x| format!("{x:?}")).unwrap_or_else(|| "Pending".into());
        let ok = match phase.as_str() {
            "Installed" => Some(true),
            "Failed" => Some(false),
            _ => None,
        };
        line("Plugin:", format!("{} {}", p.metadata.name.clone().unwrap_or_default(), paint(&phase, ok, colour)));
    }
    out.push_str("Conditions:\n");
    for c in &st.conditions {
        let good = match c.type_.as_str() {
            "Reconciling" | "Stalled" => c.status != "True",
            _ => c.status == "True",
        };
        out.push_str(&format!(
            "  {:<12} {:<6} {:<20} {}\n",
            c.type_,
            paint(&c.status, Some(good), colour),
            c.reason,
            c.message
        ));
    }
    out
}

/// A server's snapshots, newest first.
pub fn backups(list: &[BackupSnapshot]) -> String {
    if list.is_empty() {
        return "No BackupSnapshots of this server.\n".into();
    }
    let mut sorted: Vec<&BackupSnapshot> = list.iter().collect();
    sorted.sort_by_key(|b| std::cmp::Reverse(b.metadata.creation_timestamp.as_ref().map(|t| t.0)));
    let mut rows = vec![["NAME", "PHASE", "SIZE", "AGE", "RETAINED", "REASON"].map(String::from).to_vec()];
    for b in sorted {
        let b = &printable_copy(b);
        let st = b.status.clone().unwrap_or_default();
        rows.push(vec![
            b.metadata.name.clone().unwrap_or_default(),
            st.phase.map(|p| format!("{p:?}")).unwrap_or_else(|| "Pending".into()),
            st.bytes.map(size).unwrap_or_else(|| "-".into()),
            age(b.metadata.creation_timestamp.as_ref()),
            if b.spec.retain { "yes" } else { "no" }.into(),
            format!("{:?}", b.spec.reason),
        ]);
    }
    table(&rows)
}

fn size(b: i64) -> String {
    let b = b as f64;
    match b {
        b if b >= 1024.0 * 1024.0 * 1024.0 => format!("{:.1} GiB", b / 1024.0 / 1024.0 / 1024.0),
        b if b >= 1024.0 * 1024.0 => format!("{:.1} MiB", b / 1024.0 / 1024.0),
        b if b >= 1024.0 => format!("{:.1} KiB", b / 1024.0),
        b => format!("{b} B"),
    }
}

/// Server-supplied text made safe for a terminal: control characters
/// (ESC, BEL, carriage return, DEL, C1 controls, bidirectional overrides)
/// are written as escapes (`\x1b`, `\u{202e}`), so a status message, a
/// console answer or a log line cannot move the cursor, retitle or clear
/// the terminal. Newlines are kept only when `multiline` (an answer or a
/// report meant to span lines), tabs always.
pub fn printable(text: &str, multiline: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' if multiline => out.push('\n'),
            '\t' => out.push('\t'),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c == '\x7f' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') => {
                out.push_str(&format!("\\u{{{:x}}}", c as u32))
            }
            c => out.push(c),
        }
    }
    out
}

/// Escapes every string inside a value (see [`printable`], single line).
fn printable_value(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) => *s = printable(s, false),
        serde_json::Value::Array(items) => items.iter_mut().for_each(printable_value),
        serde_json::Value::Object(map) => map.values_mut().for_each(printable_value),
        _ => {}
    }
}

/// A copy of an object with every string made printable (the text views
/// show status written from what a server reports, and specs).
fn printable_copy<T: serde::Serialize + serde::de::DeserializeOwned + Clone>(o: &T) -> T {
    let mut v = match serde_json::to_value(o) {
        Ok(v) => v,
        Err(_) => return o.clone(),
    };
    printable_value(&mut v);
    serde_json::from_value(v).unwrap_or_else(|_| o.clone())
}

/// The body of `kubectl craftplane report`: every object (managed fields
/// dropped, secrets redacted by structure) as a YAML document, then the
/// operator logs as comment lines (redacted), all printable.
pub fn report(objects: Vec<serde_json::Value>, logs: &[(String, String)]) -> String {
    let mut out = String::new();
    for mut o in objects {
        if let Some(meta) = o.get_mut("metadata").and_then(serde_json::Value::as_object_mut) {
            meta.remove("managedFields");
        }
        super::redact::redact_value(&mut o);
        out.push_str("---\n");
        match serde_yaml::to_string(&o) {
            Ok(y) => out.push_str(&y),
            Err(e) => out.push_str(&format!("# cannot be shown: {e}\n")),
        }
    }
    for (title, log) in logs {
        out.push_str(&format!("--- # {}\n", printable(title, false)));
        for l in log.lines() {
            out.push_str("# ");
            out.push_str(&printable(&super::redact::redact_text(l), false));
            out.push('\n');
        }
    }
    printable(&out, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVIL: &str = "\x1b]0;evil\x07\x1b[2J";

    #[test]
    fn server_text_is_printed_with_control_characters_escaped() {
        assert_eq!(printable(EVIL, false), "\\x1b]0;evil\\x07\\x1b[2J");
        assert_eq!(printable("a\r\nb\tc\u{9b}2J\u{202e}", false), "a\\r\\nb\tc\\u{9b}2J\\u{202e}");
        assert_eq!(printable("line 1\nline 2", true), "line 1\nline 2");
        assert_eq!(printable("Motd §aGreen — ünïcode", false), "Motd §aGreen — ünïcode");

        let mut s = crate::resources::testdata::server("mc", "sku: small\neula: true\n");
        s.status = Some(
            serde_json::from_value(serde_json::json!({
                "phase": "Running",
                "version": format!("Paper 1.21{EVIL}"),
                "address": format!("mc.example{EVIL}:25565"),
                "players": {"online": 1, "max": 20, "names": [format!("alice{EVIL}")]},
                "conditions": [{"type": "Ready", "status": "True", "reason": "Running",
                    "message": format!("ready{EVIL}\nsecond line"), "lastTransitionTime": "2026-01-01T00:00:00Z"}],
            }))
            .unwrap(),
        );
        for colour in [false, true] {
            let text = server(&s, &[], colour);
            assert!(!text.contains('\x07') && !text.contains("\x1b]") && !text.contains("\x1b[2J"), "{text:?}");
            assert!(text.contains("alice\\x1b]0;evil\\x07\\x1b[2J"), "{text}");
            assert!(text.contains("ready\\x1b]0;evil\\x07\\x1b[2J\\nsecond line"), "{text}");
        }
        let table = server_table(std::slice::from_ref(&s));
        assert!(!table.contains('\x1b') && !table.contains('\x07') && table.contains("Paper 1.21\\x1b"), "{table}");
    }

    #[test]
    fn status_shows_the_address_every_hostname_and_a_refused_one() {
        let mut s = crate::resources::testdata::server("mc", "sku: small\neula: true\n");
        s.status = Some(
            serde_json::from_value(serde_json::json!({
                "phase": "Running",
                "address": "play.a.example",
                "hostnames": ["play.a.example", "mc.tenant-a.games.example"],
                "conditions": [{"type": "Hostname", "status": "False", "reason": "HostnameConflict",
                    "message": "hostname \"eu.a.example\" is held by MinecraftServer tenant-b/old, which claimed it first",
                    "lastTransitionTime": "2026-01-01T00:00:00Z"}],
            }))
            .unwrap(),
        );
        let text = server(&s, &[], false);
        assert!(text.contains("Address:      play.a.example\n"), "{text}");
        assert!(text.contains("Hostnames:    play.a.example, mc.tenant-a.games.example\n"), "{text}");
        assert!(
            text.contains("HostnameConflict: hostname \"eu.a.example\" is held by MinecraftServer tenant-b/old"),
            "{text}"
        );
        // One hostname, nothing refused: the address says it all.
        s.status = Some(
            serde_json::from_value(
                serde_json::json!({"address": "mc.ns.games.example", "hostnames": ["mc.ns.games.example"]}),
            )
            .unwrap(),
        );
        let text = server(&s, &[], false);
        assert!(!text.contains("Hostname"), "{text}");
    }

    #[test]
    fn status_shows_sleep_and_wakes() {
        let mut s = crate::resources::testdata::server("mc", "sku: small\neula: true\n");
        let hour_ago = (Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(3600)).to_string();
        s.status = Some(
            serde_json::from_value(serde_json::json!({
                "phase": "Hibernated",
                "sleep": {"asleepSince": hour_ago, "lastWake": hour_ago, "wakeCount": 3,
                          "lastWakeBy": "join of Steve through gw-1"},
            }))
            .unwrap(),
        );
        let text = server(&s, &[], false);
        assert!(
            text.contains("Sleep:        asleep for 60m; woken 3 times, last 60m ago by join of Steve through gw-1\n"),
            "{text}"
        );
        s.status = None;
        assert!(!server(&s, &[], false).contains("Sleep:"));
    }

    #[test]
    fn a_report_holds_no_credentials_and_no_terminal_escapes() {
        use serde_json::json;
        let applied = json!({"spec": {"containers": [{"env": [{"name": "RCON_PASSWORD", "value": "leak-applied"}]}]}});
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "mc-0", "namespace": "acme",
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": applied.to_string()},
                "managedFields": [{"manager": "craftplane", "fieldsV1": {"f:spec": {}}}]},
            "spec": {"containers": [{
                "name": "minecraft", "image": "itzg/minecraft-server:java21",
                "args": ["--rcon.password=leak-arg", "--nogui"],
                "env": [
                    {"name": "RCON_PASSWORD", "value": "leak-env"},
                    {"name": "CF_API_KEY", "value": "leak-cf-key"},
                    {"name": "DISCORD_TOKEN", "value": "leak-discord"},
                    {"name": "DB_PASS", "value": "leak-db-pass"},
                    {"name": "BACKUP_URL", "value": "s3://AKIAEXAMPLE:leak-url-secret@minio.local:9000/worlds"},
                    {"name": "MOTD", "value": "Welcome to acme"},
                    {"name": "RCON_PASSWORD_FILE", "value": "/etc/rcon/password"},
                    {"name": "S3_SECRET", "valueFrom": {"secretKeyRef": {"name": "acme-store", "key": "secret-key"}}},
                ],
            }]},
            "status": {"phase": "Running", "message": format!("pulled{EVIL}")},
        });
        let config_map = json!({
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "mc-config", "namespace": "acme"},
            "data": {
                "server.properties": "motd=Hello acme\nenable-rcon=true\nrcon.password=leak-props\nrcon.port=25575\n",
                "plugins/DiscordSRV/config.yml":
                    "BotToken: leak-bot-token\nbot:\n  token: leak-yaml-token\n  api-key: \"leak-api-key\"\n  passive-mode: true\n  secret: leak-yaml-secret\n  pass: leak-yaml-pass\nDiscordInviteLink: https://discord.gg/acme\n",
                "plugins/Votifier/config.json": "{\"host\": \"0.0.0.0\", \"tokens\": {\"default\": \"leak-json-token\"}}",
            },
        });
        let server = json!({
            "apiVersion": "craftplane.io/v1alpha1", "kind": "MinecraftServer",
            "metadata": {"name": "mc", "namespace": "acme"},
            "spec": {"sku": "small", "properties": {"motd": "A server", "rcon.password": "leak-spec"}},
            "status": {"version": format!("Paper{EVIL}"), "players": {"online": 1, "max": 20, "names": [format!("bob{EVIL}")]},
                "conditions": [{"type": "Ready", "status": "False", "reason": "Pinging", "message": format!("MOTD says {EVIL}")}]},
        });
        let event = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e1", "namespace": "acme"},
            "message": format!("console answered: {EVIL}"), "reason": "Console"});
        let log = format!(
            "2026-12-03T19:00:00Z INFO opened store s3://op:leak-log-url@minio/worlds\n\
             {{\"level\":\"INFO\",\"fields\":{{\"message\":\"rcon\",\"password\":\"leak-log-json\"}}}}\n\
             2026-12-03T19:00:01Z WARN server said {EVIL} token=leak-log-field\n"
        );
        let text = report(vec![pod, config_map, server, event], &[("operator log craftplane-system/op-0".into(), log)]);
        let leaks: Vec<String> =
            text.match_indices("leak-").map(|(i, _)| text[i..].chars().take(20).collect()).collect();
        assert!(leaks.is_empty(), "credentials in the report: {leaks:?}\n{text}");
        assert!(!text.contains('\x1b') && !text.contains('\x07'), "raw escapes in the report:\n{text}");
        assert!(!text.contains("managedFields"), "{text}");
        for kept in [
            "kind: Pod",
            "Welcome to acme",
            "motd=Hello acme",
            "enable-rcon=true",
            "rcon.port=25575",
            "passive-mode: true",
            "https://discord.gg/acme",
            "/etc/rcon/password",
            "acme-store",
            "minio.local:9000/worlds",
            "0.0.0.0",
            "itzg/minecraft-server:java21",
            "A server",
            "evil",
            "--nogui",
        ] {
            assert!(text.contains(kept), "{kept:?} is lost:\n{text}");
        }
    }

    #[test]
    fn plain_text_without_a_terminal() {
        let s = crate::resources::testdata::server("mc", "sku: small\neula: true\n");
        let text = server(&s, &[], false);
        assert!(text.contains("Phase:") && text.contains("Pending") && !text.contains('\x1b'), "{text}");
        assert!(server(&s, &[], true).contains('\x1b'));
        assert!(server_table(&[s]).starts_with("NAME"));
    }
}
