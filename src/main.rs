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
    /// Print the CustomResourceDefinitions as YAML.
    Crds,
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

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
