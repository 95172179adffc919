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

/// Blanks values that look like credentials (a report is shared with
/// support): `password`, `secret`, `token` or `key` names followed by a value.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let lower = line.to_lowercase();
        let sensitive =
            ["password", "secret_access", "token", "apikey", "api_key", "private"].iter().any(|w| lower.contains(w));
        match line.split_once([':', '=']) {
            Some((k, v)) if sensitive && !v.trim().is_empty() && !k.trim().is_empty() => {
                out.push_str(k);
                out.push_str(&line[k.len()..k.len() + 1]);
                out.push_str(" <redacted>");
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_redacted() {
        let r = redact("name: x\nRCON_PASSWORD: hunter2\npassword=abc\nAWS_SECRET_ACCESS_KEY: k\n");
        assert!(!r.contains("hunter2") && !r.contains("abc") && !r.contains(": k"), "{r}");
        assert!(r.contains("name: x"));
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
