//! `kubectl craftplane`: day-2 work on craftplane servers in one command,
//! with the user's kubeconfig and only the user's permissions. Everything
//! goes through the objects (spec changes, BackupSnapshots,
//! ConsoleCommands), never around them.

mod redact;
mod render;

use render::printable;

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use futures::{AsyncBufReadExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, LogParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::api::backup::BackupPhase;
use crate::api::command::CommandPhase;
use crate::api::server::RestorePhase;
use crate::api::{BackupSnapshot, ConsoleCommand, MinecraftServer, PluginInstallation};

// The annotation is an API contract (the operator reads it): it lives in the API.
pub use crate::api::contract::RESTARTED_AT;

/// `kubectl craftplane`: craftplane servers from the command line.
#[derive(Parser, Debug)]
#[command(name = "kubectl-craftplane", version, about)]
pub struct Cli {
    /// Namespace (default: the kubeconfig context's).
    #[arg(short, long, global = true)]
    pub namespace: Option<String>,
    /// Kubeconfig context to use.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Act as this user (impersonation, as `kubectl --as`).
    #[arg(long = "as", global = true)]
    pub as_user: Option<String>,
    /// Groups to act as (with --as; repeatable).
    #[arg(long = "as-group", global = true)]
    pub as_groups: Vec<String>,
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// One server on one screen (or every server of the namespace).
    Status {
        server: Option<String>,
        /// Output format: text (default), json or yaml.
        #[arg(short, long, default_value = "text")]
        output: String,
    },
    /// Take a backup (a BackupSnapshot) now.
    Backup {
        server: String,
        /// Name of the snapshot (default: <server>-manual-<time>).
        #[arg(long)]
        name: Option<String>,
        /// Wait until it is Completed or Failed, showing its progress.
        #[arg(long)]
        wait: bool,
    },
    /// Restore a server's world from one of its snapshots.
    Restore {
        server: String,
        snapshot: String,
        /// Wait until the restore is Completed or Failed.
        #[arg(long)]
        wait: bool,
    },
    /// A server's snapshots: phase, size, age, retained.
    Backups { server: String },
    /// Start a server (spec.state: Running).
    Start { server: String },
    /// Stop a server (spec.state: Stopped; the world is saved and kept).
    Stop { server: String },
    /// Restart a server cleanly (the operator rolls its pod).
    Restart { server: String },
    /// Wake a sleeping server (spec.sleep), even one whose joins do not.
    Wake { server: String },
    /// Run a console command (a ConsoleCommand) and print the answer.
    Console {
        server: String,
        /// The command, e.g. `-- say hello`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// The server's log.
    Logs {
        server: String,
        /// Follow the log.
        #[arg(short, long)]
        follow: bool,
        /// Lines from the end.
        #[arg(long)]
        tail: Option<i64>,
    },
    /// A support bundle: the craftplane objects, conditions and Events of the
    /// namespace and the operator's log, as far as you may read them
    /// (Secrets are never included; credentials in the objects, embedded
    /// config files, URLs and log lines are redacted; control characters
    /// are escaped).
    Report {
        /// Namespace the operator runs in.
        #[arg(long, default_value = "craftplane-system")]
        operator_namespace: String,
    },
}

/// Runs the plugin; the process exit code is the result.
pub async fn run(cli: Cli) -> Result<()> {
    let options = kube::config::KubeConfigOptions { context: cli.context.clone(), ..Default::default() };
    let mut config = kube::Config::from_kubeconfig(&options)
        .await
        .or_else(|_| kube::Config::incluster())
        .context("no usable kubeconfig (set KUBECONFIG or use --context)")?;
    if let Some(user) = &cli.as_user {
        config.auth_info.impersonate = Some(user.clone());
        if !cli.as_groups.is_empty() {
            config.auth_info.impersonate_groups = Some(cli.as_groups.clone());
        }
    }
    let ns = cli.namespace.clone().unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).context("cannot build a Kubernetes client")?;
    let k = Kube { client, ns, colour: std::io::stdout().is_terminal() };
    match cli.command {
        Cmd::Status { server, output } => k.status(server.as_deref(), &output).await,
        Cmd::Backup { server, name, wait } => k.backup(&server, name, wait).await,
        Cmd::Restore { server, snapshot, wait } => k.restore(&server, &snapshot, wait).await,
        Cmd::Backups { server } => k.backups(&server).await,
        Cmd::Start { server } => k.set_state(&server, "Running").await,
        Cmd::Stop { server } => k.set_state(&server, "Stopped").await,
        Cmd::Restart { server } => k.restart(&server).await,
        Cmd::Wake { server } => k.wake(&server).await,
        Cmd::Console { server, command } => k.console(&server, &command.join(" ")).await,
        Cmd::Logs { server, follow, tail } => k.logs(&server, follow, tail).await,
        Cmd::Report { operator_namespace } => k.report(&operator_namespace).await,
    }
}

struct Kube {
    client: Client,
    ns: String,
    colour: bool,
}

/// An API error in words: a refusal says what was refused.
fn explain(what: &str, e: kube::Error) -> anyhow::Error {
    match e {
        kube::Error::Api(s) if s.code == 403 => {
            anyhow::anyhow!("refused: you may not {what} (RBAC or an admission policy): {}", s.message)
        }
        kube::Error::Api(s) if s.code == 404 => anyhow::anyhow!("not found: {what}: {}", s.message),
        kube::Error::Api(s) if s.code == 422 || s.code == 400 => anyhow::anyhow!("refused: {what}: {}", s.message),
        e => anyhow::anyhow!("{what}: {e}"),
    }
}

fn stamp() -> String {
    let z = Timestamp::now().to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC);
    format!("{:04}{:02}{:02}{:02}{:02}{:02}", z.year(), z.month(), z.day(), z.hour(), z.minute(), z.second())
}

impl Kube {
    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    async fn server(&self, name: &str) -> Result<MinecraftServer> {
        self.api::<MinecraftServer>()
            .get(name)
            .await
            .map_err(|e| explain(&format!("get MinecraftServer {name} in namespace {}", self.ns), e))
    }

    /// The server's own `craftplane.io/` labels (e.g. the shard an operator
    /// selects), for the objects made for it — as scheduled snapshots get.
    fn own_labels(server: &MinecraftServer) -> serde_json::Value {
        let labels: serde_json::Map<String, serde_json::Value> = server
            .labels()
            .iter()
            .filter(|(k, _)| k.starts_with(crate::resources::snapshot::OWN_LABEL_PREFIX))
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        serde_json::Value::Object(labels)
    }

    async fn status(&self, server: Option<&str>, output: &str) -> Result<()> {
        let Some(name) = server else {
            let list = self
                .api::<MinecraftServer>()
                .list(&ListParams::default())
                .await
                .map_err(|e| explain(&format!("list MinecraftServers in namespace {}", self.ns), e))?;
            match output {
                "json" => println!("{}", serde_json::to_string_pretty(&list.items)?),
                "yaml" => print!("{}", printable(&serde_yaml::to_string(&list.items)?, true)),
                _ => print!("{}", render::server_table(&list.items)),
            }
            return Ok(());
        };
        let s = self.server(name).await?;
        let plugins: Vec<PluginInstallation> = match self.api::<PluginInstallation>().list(&ListParams::default()).await
        {
            Ok(l) => l.items.into_iter().filter(|p| p.spec.server == name).collect(),
            Err(_) => vec![],
        };
        match output {
            "json" => println!("{}", serde_json::to_string_pretty(&json!({"server": s, "plugins": plugins}))?),
            "yaml" => print!("{}", printable(&serde_yaml::to_string(&json!({"server": s, "plugins": plugins}))?, true)),
            "text" => print!("{}", render::server(&s, &plugins, self.colour)),
            other => bail!("unknown output format {other:?}: text, json or yaml"),
        }
        Ok(())
    }

    async fn backup(&self, server: &str, name: Option<String>, wait: bool) -> Result<()> {
        let s = self.server(server).await?;
        let name = name.unwrap_or_else(|| format!("{server}-manual-{}", stamp()));
        let snap: BackupSnapshot = serde_json::from_value(json!({
            "apiVersion": "craftplane.io/v1alpha1", "kind": "BackupSnapshot",
            "metadata": {"name": name, "namespace": self.ns, "labels": Self::own_labels(&s)},
            "spec": {"server": server, "reason": "Manual"},
        }))?;
        self.api::<BackupSnapshot>()
            .create(&PostParams::default(), &snap)
            .await
            .map_err(|e| explain(&format!("create BackupSnapshot {name}"), e))?;
        println!("backupsnapshot/{name} created");
        if !wait {
            return Ok(());
        }
        let mut last = String::new();
        loop {
            let b = self.api::<BackupSnapshot>().get(&name).await.map_err(|e| explain("read the snapshot", e))?;
            let st = b.status.clone().unwrap_or_default();
            let ready = st.conditions.iter().find(|c| c.type_ == "Ready");
            let line = format!(
                "{:?}{}",
                st.phase.unwrap_or(BackupPhase::Pending),
                ready.map(|c| format!(": {}: {}", c.reason, c.message)).unwrap_or_default()
            );
            if line != last {
                println!("{}", printable(&line, false));
                last = line;
            }
            match st.phase {
                Some(BackupPhase::Completed) => {
                    println!(
                        "{} bytes, {} files at {}",
                        st.bytes.unwrap_or(0),
                        st.files.unwrap_or(0),
                        printable(&st.location.unwrap_or_default(), false)
                    );
                    return Ok(());
                }
                Some(BackupPhase::Failed) => bail!("backup {name} failed"),
                _ => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
    }

    async fn restore(&self, server: &str, snapshot: &str, wait: bool) -> Result<()> {
        let patch = json!({"spec": {"restore": {"snapshot": snapshot}}});
        self.api::<MinecraftServer>()
            .patch(server, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| explain(&format!("set spec.restore of MinecraftServer {server}"), e))?;
        println!("minecraftserver/{server}: restore from {snapshot} requested");
        if !wait {
            return Ok(());
        }
        let mut last = String::new();
        loop {
            let s = self.server(server).await?;
            let r = s.status.and_then(|st| st.restore).filter(|r| r.snapshot == snapshot);
            if let Some(r) = r {
                let line =
                    format!("{:?}{}", r.phase, r.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default());
                if line != last {
                    println!("{}", printable(&line, false));
                    last = line;
                }
                match r.phase {
                    RestorePhase::Completed => return Ok(()),
                    RestorePhase::Failed => bail!("restore of {server} from {snapshot} failed"),
                    _ => {}
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn backups(&self, server: &str) -> Result<()> {
        let list = self
            .api::<BackupSnapshot>()
            .list(&ListParams::default())
            .await
            .map_err(|e| explain(&format!("list BackupSnapshots in namespace {}", self.ns), e))?;
        let mine: Vec<BackupSnapshot> = list.items.into_iter().filter(|b| b.spec.server == server).collect();
        print!("{}", render::backups(&mine));
        Ok(())
    }

    async fn set_state(&self, server: &str, state: &str) -> Result<()> {
        let patch = json!({"spec": {"state": state}});
        self.api::<MinecraftServer>()
            .patch(server, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| explain(&format!("set spec.state of MinecraftServer {server}"), e))?;
        println!("minecraftserver/{server}: spec.state {state}");
        Ok(())
    }

    async fn restart(&self, server: &str) -> Result<()> {
        let patch = json!({"metadata": {"annotations": {RESTARTED_AT: Timestamp::now().to_string()}}});
        self.api::<MinecraftServer>()
            .patch(server, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| explain(&format!("annotate MinecraftServer {server} for a restart"), e))?;
        println!("minecraftserver/{server}: restart requested (the operator rolls its pod)");
        Ok(())
    }

    async fn wake(&self, server: &str) -> Result<()> {
        let patch =
            json!({"metadata": {"annotations": {crate::api::sleep::WAKE_ANNOTATION: Timestamp::now().to_string()}}});
        self.api::<MinecraftServer>()
            .patch(server, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| explain(&format!("annotate MinecraftServer {server} for a wake"), e))?;
        println!("minecraftserver/{server}: wake requested (the operator starts it if it sleeps)");
        Ok(())
    }

    async fn console(&self, server: &str, command: &str) -> Result<()> {
        let s = self.server(server).await?;
        let name = format!("{}-{}", server.chars().take(40).collect::<String>(), stamp());
        let cmd: ConsoleCommand = serde_json::from_value(json!({
            "apiVersion": "craftplane.io/v1alpha1", "kind": "ConsoleCommand",
            "metadata": {"name": name, "namespace": self.ns, "labels": Self::own_labels(&s)},
            "spec": {"server": server, "command": command, "ttlSecondsAfterFinished": 600},
        }))?;
        self.api::<ConsoleCommand>()
            .create(&PostParams::default(), &cmd)
            .await
            .map_err(|e| explain(&format!("create a ConsoleCommand for {server}"), e))?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
        loop {
            let c = self.api::<ConsoleCommand>().get(&name).await.map_err(|e| explain("read the command", e))?;
            let st = c.status.unwrap_or_default();
            match st.phase {
                Some(CommandPhase::Succeeded) => {
                    println!("{}", printable(st.output.unwrap_or_default().trim_end(), true));
                    return Ok(());
                }
                Some(CommandPhase::Failed) => {
                    if let Some(out) = st.output.filter(|o| !o.is_empty()) {
                        println!("{}", printable(out.trim_end(), true));
                    }
                    bail!(
                        "{}: {}",
                        printable(&st.reason.unwrap_or_else(|| "Failed".into()), false),
                        printable(&st.message.unwrap_or_default(), false)
                    );
                }
                _ if tokio::time::Instant::now() > deadline => {
                    bail!(
                        "consolecommand/{name} still {:?} after 3 minutes: {}",
                        st.phase,
                        printable(&st.message.unwrap_or_default(), false)
                    )
                }
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }

    async fn logs(&self, server: &str, follow: bool, tail: Option<i64>) -> Result<()> {
        let pod = format!("{server}-0");
        let lp = LogParams {
            container: Some(crate::api::contract::SERVER_CONTAINER.into()),
            follow,
            tail_lines: tail,
            ..Default::default()
        };
        let pods = self.api::<Pod>();
        let stream = pods.log_stream(&pod, &lp).await.map_err(|e| explain(&format!("read the log of pod {pod}"), e))?;
        let mut lines = stream.lines();
        while let Some(line) = lines.try_next().await? {
            println!("{line}");
        }
        Ok(())
    }

    async fn report(&self, operator_ns: &str) -> Result<()> {
        let mut objects = Vec::new();
        let mut logs = Vec::new();
        let mut refused = Vec::new();
        let lp = ListParams::default();
        macro_rules! section {
            ($kind:ty, $label:expr) => {
                match self.api::<$kind>().list(&lp).await {
                    Ok(l) => {
                        for o in l.items {
                            objects.push(serde_json::to_value(&o)?);
                        }
                    }
                    Err(e) => refused.push(format!("{}: {}", $label, explain("list", e))),
                }
            };
        }
        section!(MinecraftServer, "MinecraftServers");
        section!(PluginInstallation, "PluginInstallations");
        section!(BackupSnapshot, "BackupSnapshots");
        section!(ConsoleCommand, "ConsoleCommands");
        section!(k8s_openapi::api::apps::v1::StatefulSet, "StatefulSets");
        section!(Pod, "Pods");
        section!(Event, "Events");
        // The operator's log, when the reader may see it.
        let ops: Api<Pod> = Api::namespaced(self.client.clone(), operator_ns);
        match ops.list(&ListParams::default().labels("app.kubernetes.io/name=craftplane")).await {
            Ok(l) => {
                for p in l.items {
                    let name = p.name_any();
                    let lp = LogParams { tail_lines: Some(500), ..Default::default() };
                    match ops.logs(&name, &lp).await {
                        Ok(log) => logs.push((format!("operator log {operator_ns}/{name} (last 500 lines)"), log)),
                        Err(e) => refused.push(format!("operator log {name}: {}", explain("read", e))),
                    }
                }
            }
            Err(e) => refused.push(format!("operator pods in {operator_ns}: {}", explain("list", e))),
        }
        let header = format!(
            "# craftplane report of namespace {} at {} (Secrets are never included, credentials are redacted)\n{}",
            self.ns,
            Timestamp::now(),
            refused.iter().map(|r| format!("# not included: {}\n", printable(r, false))).collect::<String>()
        );
        print!("{header}{}", render::report(objects, &logs));
        Ok(())
    }
}
