//! The `craftplane` binary: one image, several roles.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use craftplane::controller::{self, ControllerArgs};
use craftplane::telemetry::{self, LogFormat};

/// craftplane: a Kubernetes operator that hosts Minecraft servers for many tenants.
#[derive(Parser)]
#[command(name = "craftplane", version, about, long_about = None)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Json, env = "CRAFTPLANE_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the reconcilers (connects with the in-cluster config or KUBECONFIG).
    Controller(ControllerArgs),
    /// Run the player gateway: one address for every server, routed by the
    /// hostname in the client's handshake.
    Gateway(craftplane::gateway::GatewayArgs),
    /// Print the CustomResourceDefinitions as YAML.
    Crds,
    /// Print the rules of the operator's ClusterRole (what the chart grants).
    Rbac,
    /// Print the objects craftplane would create for MinecraftServers
    /// (like `helm template`): PVC, ConfigMap, Services, StatefulSet, Secret.
    Render(RenderArgs),
    /// Install the plugins a server's manifest lists (the server pod's
    /// init-container): download, verify checksums, swap in all at once.
    FetchPlugins(craftplane::plugins::fetch::FetchArgs),
    /// Back up a world to object storage (the backup Job), or verify,
    /// export, import or delete a snapshot.
    Backup(craftplane::backup::cli::BackupArgs),
    /// Restore a world from a snapshot (the restore Job): verified in a
    /// staging directory first, then swapped in.
    Restore(craftplane::backup::cli::RestoreArgs),
}

#[derive(clap::Args)]
struct RenderArgs {
    /// YAML file with one or more MinecraftServers.
    #[arg(long)]
    servers: std::path::PathBuf,
    /// YAML file with the Sku(s) they name.
    #[arg(long)]
    skus: std::path::PathBuf,
    /// Leave out owner references (objects managed without the operator).
    #[arg(long)]
    no_owner: bool,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
            }
            // One line, no usage dump: "error: unexpected argument '--x' found".
            let rendered = e.render().to_string();
            let first = rendered.lines().find(|l| !l.trim().is_empty()).unwrap_or("invalid arguments");
            eprintln!("craftplane: {} (see --help)", first.trim_start_matches("error: ").trim());
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Crds => {
            print!("{}", craftplane::api::crds_yaml());
            ExitCode::SUCCESS
        }
        Command::Rbac => {
            print!("{}", craftplane::controller::rbac::rules_yaml());
            ExitCode::SUCCESS
        }
        Command::Render(args) => match render(&args) {
            Ok(out) => {
                print!("{out}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("craftplane: error: {}", one_line(&e));
                ExitCode::FAILURE
            }
        },
        Command::FetchPlugins(args) => {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("craftplane: error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(craftplane::plugins::fetch::run(&args)) {
                Ok(s) => {
                    println!(
                        "fetch-plugins: {} installed, {} unchanged, {} removed, {} config files",
                        s.installed.len(),
                        s.unchanged.len(),
                        s.removed.len(),
                        s.config_files
                    );
                    for f in &s.installed {
                        println!("installed {f}");
                    }
                    for f in &s.removed {
                        println!("removed {f}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("craftplane: fetch-plugins failed: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Backup(args) => block_on(craftplane::backup::cli::backup(args)),
        Command::Restore(args) => block_on(craftplane::backup::cli::restore(args)),
        Command::Gateway(args) => {
            telemetry::init(cli.log_format);
            let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("craftplane: error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(craftplane::gateway::run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("craftplane: error: {}", one_line(&format!("{e:#}")));
                    ExitCode::FAILURE
                }
            }
        }
        Command::Controller(args) => {
            telemetry::init(cli.log_format);
            let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("craftplane: error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(controller::run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("craftplane: error: {}", one_line(&format!("{e:#}")));
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Runs a backup/restore command on a runtime; prints its result line or
/// "Reason: message" and exits non-zero.
fn block_on(f: impl std::future::Future<Output = Result<String, craftplane::backup::BackupError>>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("craftplane: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(f) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("craftplane: {}: {}", e.reason(), one_line(&e.to_string()));
            ExitCode::FAILURE
        }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn docs<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<Vec<T>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v: serde_yaml::Value =
            serde::Deserialize::deserialize(doc).map_err(|e| format!("{}: {e}", path.display()))?;
        if v.is_null() {
            continue;
        }
        out.push(serde_yaml::from_value(v).map_err(|e| format!("{}: {e}", path.display()))?);
    }
    Ok(out)
}

fn render(args: &RenderArgs) -> Result<String, String> {
    use craftplane::api::{MinecraftServer, Sku};
    use craftplane::resources::{self, config_map, pvc, secret, service, statefulset};
    let servers: Vec<MinecraftServer> = docs(&args.servers)?;
    let skus: Vec<Sku> = docs(&args.skus)?;
    let mut out = String::new();
    for s in &servers {
        let name = s.metadata.name.clone().unwrap_or_default();
        let sku = skus.iter().find(|k| k.metadata.name.as_deref() == Some(s.spec.sku.as_str()));
        let m = resources::validate(s, sku, None, None).map_err(|e| format!("{name}: {e}"))?;
        let mut objects = vec![
            serde_json::to_value(pvc::build(&m, true)),
            serde_json::to_value(config_map::build(&m)),
            serde_json::to_value(secret::build(&m, &secret::generate_password())),
            serde_json::to_value(service::game(&m)),
            serde_json::to_value(statefulset::build(&m)),
        ];
        for o in &mut objects {
            let o = o.as_mut().map_err(|e| e.to_string())?;
            if args.no_owner {
                o["metadata"].as_object_mut().map(|m| m.remove("ownerReferences"));
            }
            out.push_str("---\n");
            out.push_str(&serde_yaml::to_string(o).map_err(|e| e.to_string())?);
        }
    }
    Ok(out)
}
