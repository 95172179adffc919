//! `kubectl craftplane`: put this binary on PATH (`cargo install --path .`
//! or copy it) and kubectl finds it as a plugin.

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = craftplane::kubectl::Cli::parse();
    if let Err(e) = craftplane::kubectl::run(cli).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
