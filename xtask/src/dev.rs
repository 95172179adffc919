//! `cargo xtask dev`, the main job: the local control plane with its real
//! node, a local S3 store, examples/ applied with the example server on the
//! real node, and the operator (a debug build) running on this machine in
//! the foreground.
//!
//! examples/ stay what a user applies on a real cluster (the itzg image, no
//! node placement); to run them here dev applies a copy in which every
//! MinecraftServer names the TEST stand-in image and every Sku places its
//! servers on the real node, and says so in its output.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use xshell::{Shell, cmd};

use crate::cluster::Cluster;
use crate::e2e::{Kube, Stopper};
use crate::tools;

const OPERATOR_NS: &str = "craftplane-system";
/// Every example server is `<server>.<namespace>.craftplane.localhost` at
/// the dev gateway.
const BASE_DOMAIN: &str = "craftplane.localhost";

/// How a player reaches the example servers: each server's address
/// (`status.address`), and what the gateway answered for it just now.
fn gateway_report(k: &Kube, port: u16) -> Vec<String> {
    let mut lines = Vec::new();
    let servers = k
        .run(&["get", "mcs", "-A", "-o", "jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name} {.status.hostnames[0]} {.status.address}{\"\\n\"}{end}"])
        .unwrap_or_default();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    for line in servers.lines() {
        let mut it = line.split_whitespace();
        let (Some(server), Some(host)) = (it.next(), it.next()) else { continue };
        let address = it.next().unwrap_or(host);
        let answer = match crate::slp::status(addr, host, port, Duration::from_secs(3)) {
            Ok(st) => format!(
                "the gateway answers {:?}, {}/{} players",
                crate::slp::motd(&st),
                st["players"]["online"],
                st["players"]["max"]
            ),
            Err(e) => format!("no answer through the gateway yet ({e:#})"),
        };
        lines.push(format!("players: {server} is {address}: {answer}"));
    }
    lines.push(format!(
        "players: point a Minecraft client at localhost:{port} (names the gateway does not know reach default/survival), or add \"127.0.0.1 <hostname>\" to /etc/hosts and use the address above"
    ));
    lines
}

pub fn run(sh: &Shell) -> Result<()> {
    let t0 = Instant::now();
    let tools = tools::ensure(sh)?;
    // The images the real node runs: the operator's (backup, restore and
    // fetch-plugins Jobs run it) and the TEST stand-in server.
    let operator_image = crate::images::build_operator(sh, crate::images::Profile::Image)?;
    let test_server = crate::images::build_test_server(sh)?;
    let cluster = Cluster::dev();
    cluster.up(sh)?;
    if cluster.node().is_none() {
        bail!("the dev cluster has no real node");
    }
    cluster.import_images(&[&operator_image, &test_server])?;
    let k = Kube { kubectl: tools.kubectl.clone(), kubeconfig: cluster.kubeconfig() };
    let kc = cluster.kubeconfig();
    let kubectl = &tools.kubectl;
    cmd!(sh, "{kubectl} --kubeconfig {kc} apply --server-side -f crds/craftplane.yaml").quiet().run()?;
    cmd!(sh, "{kubectl} --kubeconfig {kc} wait --for=condition=Established crd -l app.kubernetes.io/part-of=craftplane --timeout=60s").quiet().run()?;

    // A local S3 store (s3s-fs) on the host end of the node's veth, where
    // backup Jobs reach it; its data stays in the cluster directory.
    let host = cluster.host_ip();
    let s3s = tools::ensure_s3s_fs(sh)?;
    let s3_root = cluster.dir.join("s3");
    std::fs::create_dir_all(s3_root.join("backups"))?;
    let s3_port = crate::e2e::free_port(&host)?;
    let _s3 = Stopper(
        Command::new(&s3s)
            .args([
                "--host",
                &host,
                "--port",
                &s3_port.to_string(),
                "--access-key",
                "dev",
                "--secret-key",
                "dev-secret",
            ])
            .arg(&s3_root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start s3s-fs")?,
    );
    let stores = cluster.dir.join("backup-stores.yaml");
    std::fs::write(
        &stores,
        format!(
            "defaultStore: local\nstores:\n- name: local\n  url: s3://backups/dev\n  config: {{AWS_ENDPOINT: \"http://{host}:{s3_port}\", AWS_ALLOW_HTTP: \"true\", AWS_REGION: us-east-1}}\n  credentialsSecret: backup-s3\n"
        ),
    )?;
    let secret = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {OPERATOR_NS}}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: backup-s3, namespace: {OPERATOR_NS}}}\nstringData: {{AWS_ACCESS_KEY_ID: dev, AWS_SECRET_ACCESS_KEY: dev-secret}}\n"
    );
    let secret_file = cluster.dir.join("backup-s3.yaml");
    std::fs::write(&secret_file, secret)?;
    k.run(&["apply", "-f", &secret_file.display().to_string()])?;
    eprintln!(
        "xtask: local S3 store: s3s-fs at http://{host}:{s3_port} (bucket backups, files in {}), configured as backup store \"local\" ({})",
        s3_root.display(),
        stores.display()
    );

    // examples/, adapted to this machine (printed, not hidden).
    let out_dir = cluster.dir.join("dev-examples");
    let changes = adapt_examples(&crate::project_root().join("examples"), &out_dir)?;
    eprintln!(
        "xtask: applying examples/ with these substitutions for the local real node (the files in examples/ are unchanged):"
    );
    for c in &changes {
        eprintln!("xtask:   {c}");
    }
    k.run(&["apply", "-R", "-f", &out_dir.display().to_string()])?;

    cmd!(sh, "cargo build --quiet --bin craftplane").run()?;
    // The player gateway beside it, on this machine: it reaches the server
    // pods' addresses (the host routes to the node's pod network).
    let gateway_port =
        if std::net::TcpListener::bind(("0.0.0.0", 25565)).is_ok() { 25565 } else { crate::e2e::free_port("0.0.0.0")? };
    let _gateway = Stopper(
        Command::new(crate::target_dir().join("debug/craftplane"))
            .args(["gateway", "--log-format", "text", "--http-addr", "127.0.0.1:8081"])
            .args(["--listen", &format!("0.0.0.0:{gateway_port}"), "--base-domain", BASE_DOMAIN])
            .args(["--default-server", "default/survival"])
            // Joins of a sleeping server wake it (docs/sleep.md).
            .args(["--wake-namespace", OPERATOR_NS])
            .env("KUBECONFIG", &kc)
            .env("RUST_LOG", "warn")
            .spawn()
            .context("start the gateway")?,
    );
    eprintln!(
        "xtask: the player gateway listens on 0.0.0.0:{gateway_port} (base domain {BASE_DOMAIN}; names it does not know go to default/survival)"
    );
    eprintln!("xtask: starting the operator on this machine (Ctrl-C stops it; the cluster keeps running)");
    let mut operator = Command::new(crate::target_dir().join("debug/craftplane"))
        .args(["controller", "--log-format", "text", "--http-addr", "127.0.0.1:8080"])
        .args(["--base-domain", BASE_DOMAIN, "--gateway-port", &gateway_port.to_string()])
        .args(["--gateway-http", "127.0.0.1:8081"])
        .arg("--backup-stores")
        .arg(&stores)
        .args(["--helper-image", &crate::images::operator_image()])
        .env("KUBECONFIG", &kc)
        .env("RUST_LOG", "warn")
        .spawn()?;
    let report = wait_for_examples(&k, &mut operator, Duration::from_secs(240));
    match report {
        Ok(mut lines) => {
            lines.extend(gateway_report(&k, gateway_port));
            eprintln!("\nxtask: examples after {:.0?}:", t0.elapsed());
            for l in lines {
                eprintln!("xtask:   {l}");
            }
            eprintln!("\n  export KUBECONFIG={}\n  kubectl get craftplane -A\n", kc.display());
        }
        Err(e) => eprintln!("xtask: warning: {e:#}"),
    }
    let status = operator.wait()?;
    if !status.success() {
        bail!("the operator exited: {status}");
    }
    Ok(())
}

/// Copies examples/ into `out`, each MinecraftServer on the TEST stand-in
/// image and each Sku placed on the real node; what it changed, one line each.
fn adapt_examples(examples: &Path, out: &Path) -> Result<Vec<String>> {
    use serde_yaml::Value;
    std::fs::create_dir_all(out)?;
    let mut changes = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(examples)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let test_image = crate::images::test_server_image();
    for file in files {
        let text = std::fs::read_to_string(&file)?;
        let rel = file.strip_prefix(crate::project_root()).unwrap_or(&file).display().to_string();
        let mut docs = Vec::new();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let mut v = Value::deserialize(doc).with_context(|| format!("parse {rel}"))?;
            let kind = v["kind"].as_str().unwrap_or_default().to_string();
            let name = v["metadata"]["name"].as_str().unwrap_or_default().to_string();
            let spec = v.get_mut("spec").and_then(Value::as_mapping_mut);
            match (kind.as_str(), spec) {
                ("MinecraftServer", Some(spec)) => {
                    let was = spec.get("image").and_then(Value::as_str).unwrap_or("the itzg/minecraft-server default");
                    changes.push(format!(
                        "{rel}: MinecraftServer {name}: spec.image {was} → {test_image} (TEST stand-in, tests/images/test-server)"
                    ));
                    spec.insert("image".into(), test_image.clone().into());
                }
                ("Sku", Some(spec)) => {
                    let placement: Value = serde_yaml::from_str(&format!(
                        "{{nodeSelector: {{{l}: {v}}}, tolerations: [{{key: {t}, operator: Exists, effect: NoSchedule}}]}}",
                        l = crate::node::LABEL.0,
                        v = crate::node::LABEL.1,
                        t = crate::node::TAINT_KEY
                    ))?;
                    spec.insert("placement".into(), placement);
                    spec.insert("storageClassName".into(), crate::node::STORAGE_CLASS.into());
                    let repo = test_image.rsplit_once(':').map(|(r, _)| r).unwrap_or(&test_image).to_string();
                    spec.insert("allowedImages".into(), Value::Sequence(vec![repo.clone().into()]));
                    changes.push(format!(
                        "{rel}: Sku {name}: spec.placement → the real node ({}), spec.storageClassName → {}, spec.allowedImages → [{repo}]",
                        crate::node::NODE_NAME,
                        crate::node::STORAGE_CLASS
                    ));
                }
                _ => {}
            }
            if !v.is_null() {
                docs.push(serde_yaml::to_string(&v)?);
            }
        }
        std::fs::write(out.join(file.file_name().context("file name")?), docs.join("---\n"))?;
    }
    Ok(changes)
}

/// Waits until every example object settles; one line per object, saying
/// plainly what needs the internet.
fn wait_for_examples(k: &Kube, operator: &mut Child, timeout: Duration) -> Result<Vec<String>> {
    let deadline = Instant::now() + timeout;
    let field = |kind: &str, name: &str, ns: Option<&str>, path: &str| -> String {
        let mut args = vec!["get", kind, name, "-o"];
        let jp = format!("jsonpath={path}");
        args.push(&jp);
        if let Some(ns) = ns {
            args.extend(["-n", ns]);
        }
        k.run(&args).unwrap_or_default()
    };
    loop {
        if let Some(status) = operator.try_wait()? {
            bail!("the operator exited: {status}");
        }
        let server = field("mcs", "survival", Some("default"), "{.status.phase}");
        let backup = field("backup", "survival-before-1-21-5", Some("default"), "{.status.phase}");
        let tenant = field("tenant", "acme", None, "{.status.conditions[?(@.type==\"Ready\")].status}");
        let plugins: Vec<(String, String, String)> = ["luckperms", "chunky"]
            .iter()
            .map(|p| {
                let phase = field("plugin", p, Some("default"), "{.status.phase}");
                let reason = field("plugin", p, Some("default"), "{.status.conditions[?(@.type==\"Ready\")].reason}");
                (p.to_string(), phase, reason)
            })
            .collect();
        let plugins_settled = plugins.iter().all(|(_, phase, _)| matches!(phase.as_str(), "Installed" | "Failed"));
        // Players come from the operator's Server List Ping (from this
        // machine: the host routes to the node's pod network).
        let pinged = !field("mcs", "survival", Some("default"), "{.status.players.max}").is_empty();
        let command = field("consolecommand", "who-is-on", Some("default"), "{.status.phase}");
        let settled = server == "Running"
            && pinged
            && matches!(backup.as_str(), "Completed" | "Failed")
            && plugins_settled
            && matches!(command.as_str(), "Succeeded" | "Failed");
        if settled || Instant::now() > deadline {
            let mut lines = vec![
                format!(
                    "MinecraftServer default/survival: {server} on {} ({})",
                    field("pod", "survival-0", Some("default"), "{.spec.nodeName}"),
                    if pinged {
                        format!(
                            "players {}",
                            field("mcs", "survival", Some("default"), "{.status.players.online}/{.status.players.max}")
                        )
                    } else {
                        "no Server List Ping answer yet".to_string()
                    }
                ),
                format!(
                    "BackupSnapshot default/survival-before-1-21-5: {backup} ({} bytes in the local S3 store)",
                    field("backup", "survival-before-1-21-5", Some("default"), "{.status.bytes}")
                ),
                format!("Tenant acme: Ready={tenant}"),
                format!(
                    "ConsoleCommand default/who-is-on: {command}: {}",
                    field("consolecommand", "who-is-on", Some("default"), "{.status.output}{.status.message}")
                ),
                format!(
                    "MinecraftServer default/survival live settings: {}",
                    field(
                        "mcs",
                        "survival",
                        Some("default"),
                        "{.status.conditions[?(@.type==\"LiveConfig\")].reason}: {.status.conditions[?(@.type==\"LiveConfig\")].message}"
                    )
                ),
            ];
            for (p, phase, reason) in plugins {
                let note = if phase == "Installed" {
                    String::new()
                } else {
                    let msg =
                        field("plugin", &p, Some("default"), "{.status.conditions[?(@.type==\"Ready\")].message}");
                    format!(
                        " — needs the internet: Modrinth (api.modrinth.com) is not reachable from this machine ({reason}: {msg})"
                    )
                };
                lines.push(format!("PluginInstallation default/{p}: {phase}{note}"));
            }
            if !settled {
                lines.push(format!("not settled after {timeout:?}: see `kubectl describe mcs survival`"));
            }
            return Ok(lines);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}
