//! The chart's alert rules and Grafana dashboard, checked by Prometheus' own
//! code (promtool and its PromQL parser, built by the xtask) against what a
//! running operator exports: the rendered PrometheusRule passes `promtool
//! check rules`, its alerts pass the unit tests in tests/data/alerts on
//! synthetic series, and every metric an alert or a dashboard panel queries
//! is one the operator's /metrics lists.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::fixture::Fixture;
use common::operator::Operator;
use serde::Deserialize;
use serde_json::json;
use serde_yaml::Value;

fn tool(env: &str) -> PathBuf {
    std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("{env} is not set: run the tests with `cargo xtask test` (it builds the tool)"))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

/// The chart's monitoring objects as an admin enabling them gets them.
fn rendered() -> Vec<Value> {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = run(Command::new(tool("CRAFTPLANE_HELM")).args([
        "template",
        "craftplane",
        &format!("{root}/charts/craftplane"),
        "--set",
        "metrics.prometheusRule.enabled=true",
        "--set",
        "grafanaDashboard.enabled=true",
        "--show-only",
        "templates/monitoring.yaml",
        "--kube-version",
        "1.36.0",
    ]));
    serde_yaml::Deserializer::from_str(&out).map(|d| Value::deserialize(d).unwrap()).filter(|v| !v.is_null()).collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter().find(|d| d["kind"].as_str() == Some(kind)).unwrap_or_else(|| panic!("the chart renders no {kind}"))
}

/// Every sample name a Prometheus scrape of `text` stores.
fn exported(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut p = rest.split_whitespace();
            let (name, kind) = (p.next().unwrap_or(""), p.next().unwrap_or(""));
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                "info" => &["_info"],
                _ => &[""],
            };
            for s in suffixes {
                names.insert(format!("{name}{s}"));
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_string());
        }
    }
    names
}

/// The metric names each expression selects, by Prometheus' parser.
fn selected(exprs: &[String]) -> Vec<Vec<String>> {
    let input = exprs.iter().map(|e| e.replace('\n', " ")).collect::<Vec<_>>().join("\n") + "\n";
    let mut child = Command::new(tool("CRAFTPLANE_PROMQL_NAMES"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run promql-names");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let lines: Vec<String> = String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect();
    assert_eq!(lines.len(), exprs.len(), "one answer per expression");
    for (e, l) in exprs.iter().zip(&lines) {
        assert!(!l.starts_with("error:"), "Prometheus cannot parse {e:?}: {l}");
    }
    lines.iter().map(|l| l.split_whitespace().map(str::to_string).collect()).collect()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[tokio::test]
async fn alerts_and_dashboard_query_what_the_operator_exports() {
    let docs = rendered();
    let rule = of_kind(&docs, "PrometheusRule");
    let groups = &rule["spec"]["groups"];
    let dir = std::env::temp_dir().join(format!("craftplane-alerts-{}", common::unique_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let rules_file =
        serde_yaml::to_string(&serde_yaml::Mapping::from_iter([("groups".into(), groups.clone())])).unwrap();
    write(&dir, "rules.yaml", &rules_file);
    let promtool = tool("CRAFTPLANE_PROMTOOL");
    let checked = run(Command::new(&promtool).current_dir(&dir).args(["check", "rules", "rules.yaml"]));
    println!("{checked}");
    let tests =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/alerts/rules-test.yaml")).unwrap();
    write(&dir, "rules-test.yaml", &tests);
    let tested = run(Command::new(&promtool).current_dir(&dir).args(["test", "rules", "rules-test.yaml"]));
    println!("{tested}");
    // Every alert has a unit test.
    let alerts: Vec<&str> = groups
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_sequence().into_iter().flatten())
        .filter_map(|r| r["alert"].as_str())
        .collect();
    assert!(!alerts.is_empty());
    for a in &alerts {
        assert!(tests.contains(&format!("alertname: {a}")), "alert {a} has no test in tests/data/alerts");
    }

    // The queries: the alerts' and the dashboard's (as the chart embeds it).
    let mut exprs: Vec<(String, String)> = Vec::new();
    for g in groups.as_sequence().into_iter().flatten() {
        for r in g["rules"].as_sequence().into_iter().flatten() {
            let name = r["alert"].as_str().or(r["record"].as_str()).unwrap_or("?");
            exprs.push((format!("alert {name}"), r["expr"].as_str().unwrap().to_string()));
        }
    }
    let cm = of_kind(&docs, "ConfigMap");
    let dashboard: serde_json::Value = serde_json::from_str(cm["data"]["craftplane.json"].as_str().unwrap()).unwrap();
    for p in dashboard["panels"].as_array().into_iter().flatten() {
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(e) = t["expr"].as_str() {
                exprs.push((format!("panel {:?}", p["title"].as_str().unwrap_or("")), e.to_string()));
            }
        }
    }
    assert!(exprs.len() > alerts.len(), "the dashboard has queries");

    // What a running operator exports, with a server answering Server List
    // Ping (an independent peer) so the per-server families have samples.
    let peer = common::peers::SlpPeer::start(2, 20, "1.21.4");
    let f = Fixture::new("monitoring").await;
    let addr = format!("127.0.0.1:{}", peer.port);
    let op = Operator::start(&f.shard, &["--slp-interval", "1", "--slp-address", &addr]).await;
    f.create_server("mc", json!({})).await;
    f.wait("mc", "players from Server List Ping", &op, |s| {
        s.status.as_ref().and_then(|st| st.players.as_ref()).is_some_and(|p| p.online == 2)
    })
    .await;
    let mut metrics = String::new();
    for _ in 0..50 {
        match op.get("/metrics") {
            Some((200, response)) if response.contains("craftplane_players_online{") => {
                metrics = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
                break;
            }
            _ => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
        }
    }
    op.stop();
    drop(peer);
    f.cleanup().await;
    let have = exported(&metrics);
    assert!(have.contains("craftplane_leader"), "no craftplane metrics scraped:\n{metrics}");
    let names = selected(&exprs.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>());
    let mut unknown = Vec::new();
    for ((what, e), names) in exprs.iter().zip(&names) {
        assert!(!names.is_empty(), "{what}: {e:?} selects no metric by name");
        for n in names {
            if !have.contains(n) {
                unknown.push(format!("{what} queries {n}, which the operator does not export ({e})"));
            }
        }
    }
    assert!(unknown.is_empty(), "{}\nexported: {have:?}", unknown.join("\n"));
    let _ = std::fs::remove_dir_all(&dir);
}
