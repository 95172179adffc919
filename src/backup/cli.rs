//! `craftplane backup` and `craftplane restore`: Job entrypoints and tools
//! for people (verify, export, import, delete).

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::archive::{self, CreateOptions};
use super::{BackupError, Compression, Location, ServerInfo};
use crate::minecraft::rcon::Rcon;

/// `craftplane backup`: without a subcommand, back up a world (the Job).
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BackupArgs {
    #[command(subcommand)]
    pub command: Option<BackupCommand>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum BackupCommand {
    /// Check a snapshot: manifest, archive checksum, every file's sha256.
    Verify {
        /// Snapshot location, e.g. s3://bucket/tenants/acme/survival/2026-11-25-0400
        location: String,
    },
    /// Download a snapshot's archive (unpack it with `tar -x --zstd`).
    Export {
        location: String,
        /// Output file.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Store an archive (tar, tar.zst or tar.gz of a world) as a new snapshot.
    Import {
        /// The archive file.
        file: PathBuf,
        /// Where the new snapshot goes.
        location: String,
    },
    /// Delete a snapshot's objects.
    Delete { location: String },
}

/// Flags of the backup Job.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Where the snapshot goes (its own prefix in the store).
    #[arg(long)]
    pub to: Option<String>,
    /// The world volume.
    #[arg(long, default_value = "/data")]
    pub data_dir: PathBuf,
    #[arg(long, value_enum, default_value_t = Compression::Zstd)]
    pub compression: Compression,
    /// Only these paths (repeatable).
    #[arg(long)]
    pub include: Vec<String>,
    /// Leave out these paths (repeatable).
    #[arg(long)]
    pub exclude: Vec<String>,
    /// RCON host:port of the running server: save-off and save-all flush
    /// before, save-on after (always). Without it the world must be idle.
    #[arg(long)]
    pub rcon_address: Option<String>,
    /// File holding the RCON password.
    #[arg(long)]
    pub rcon_password_file: Option<PathBuf>,
    /// Server identity recorded in the manifest: namespace/name/TYPE/version.
    #[arg(long)]
    pub server: Option<String>,
    /// The result (JSON) or the failure reason is also written here.
    #[arg(long, default_value = "/dev/termination-log")]
    pub termination_log: PathBuf,
}

/// `craftplane restore`: the restore Job.
#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// Snapshot location.
    #[arg(long)]
    pub from: String,
    /// The world volume.
    #[arg(long, default_value = "/data")]
    pub data_dir: PathBuf,
    #[arg(long, default_value = "/dev/termination-log")]
    pub termination_log: PathBuf,
}

/// What a backup Job reports (termination message, one JSON line).
#[derive(Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BackupResult {
    pub location: String,
    pub bytes: u64,
    pub files: u64,
    pub manifest_sha256: String,
}

fn write_termination(path: &std::path::Path, text: &str) {
    if path.parent().is_some_and(|p| p.exists()) {
        let _ = std::fs::write(path, text);
    }
}

/// Runs `craftplane backup …`; returns the line to print.
pub async fn backup(args: BackupArgs) -> Result<String, BackupError> {
    match args.command {
        Some(BackupCommand::Verify { location }) => {
            let loc = Location::open(&location)?;
            let (m, sha) = archive::verify(&loc).await?;
            Ok(format!(
                "ok: {} files, {} bytes in a {} byte {} archive; manifest sha256 {sha}",
                m.totals.files, m.totals.bytes, m.archive.bytes, m.compression
            ))
        }
        Some(BackupCommand::Export { location, output }) => {
            let loc = Location::open(&location)?;
            let m = archive::export(&loc, &output).await?;
            Ok(format!("wrote {} ({} bytes, sha256 {})", output.display(), m.archive.bytes, m.archive.sha256))
        }
        Some(BackupCommand::Import { file, location }) => {
            let loc = Location::open(&location)?;
            let (m, sha) = archive::import(&file, &loc, None).await?;
            Ok(format!("imported {} files into {}; manifest sha256 {sha}", m.totals.files, loc.url))
        }
        Some(BackupCommand::Delete { location }) => {
            let loc = Location::open(&location)?;
            archive::delete(&loc).await?;
            Ok(format!("deleted {}", loc.url))
        }
        None => {
            let log = args.run.termination_log.clone();
            let r = run(args.run).await;
            match &r {
                Ok(line) => write_termination(&log, line),
                Err(e) => write_termination(&log, &format!("{}: {e}", e.reason())),
            }
            r
        }
    }
}

async fn run(a: RunArgs) -> Result<String, BackupError> {
    let to = a.to.clone().ok_or_else(|| BackupError::InvalidLocation("--to is required".into()))?;
    let loc = Location::open(&to)?;
    let server = match &a.server {
        Some(s) => {
            let p: Vec<&str> = s.splitn(4, '/').collect();
            if p.len() != 4 {
                return Err(BackupError::InvalidLocation(format!("--server {s:?} is not namespace/name/TYPE/version")));
            }
            Some(ServerInfo {
                namespace: p[0].into(),
                name: p[1].into(),
                server_type: p[2].into(),
                version: p[3].into(),
            })
        }
        None => None,
    };
    let mut rcon = match &a.rcon_address {
        Some(addr) => {
            let password = read_password(a.rcon_password_file.as_ref())?;
            let mut c = connect_rcon(addr, &password).await.map_err(BackupError::RconFailed)?;
            c.command("save-off").await.map_err(BackupError::RconFailed)?;
            // From here on save-on is owed, whatever happens.
            let flushed = c.command("save-all flush").await;
            Some((c, addr.clone(), password, flushed))
        }
        None => None,
    };
    let result = match rcon.as_mut().map(|r| r.3.clone()) {
        Some(Err(e)) => Err(BackupError::RconFailed(format!("save-all flush: {e}"))),
        _ => {
            let opts = CreateOptions {
                compression: a.compression,
                include: a.include.clone(),
                exclude: a.exclude.clone(),
                server,
            };
            archive::create(&loc, &a.data_dir, &opts).await
        }
    };
    let save_on = match rcon {
        Some((mut c, addr, password, _)) => match c.command("save-on").await {
            Ok(_) => Ok(()),
            // The connection may have dropped during a long upload: once more on a new one.
            Err(_) => match connect_rcon(&addr, &password).await {
                Ok(mut c2) => c2.command("save-on").await.map(|_| ()),
                Err(e) => Err(e),
            },
        },
        None => Ok(()),
    };
    let (manifest, sha) = result?;
    save_on.map_err(|e| BackupError::RconFailed(format!("the archive is stored but save-on failed: {e}")))?;
    let out = BackupResult {
        location: loc.url.clone(),
        bytes: manifest.archive.bytes,
        files: manifest.totals.files,
        manifest_sha256: sha,
    };
    Ok(serde_json::to_string(&out).unwrap_or_default())
}

/// How long a backup pod keeps trying to reach its server's RCON port. A
/// NetworkPolicy engine lets a new pod's connections through once it has
/// programmed the pod's address, which can take seconds after the pod
/// starts (kube-router: refused until then).
const RCON_CONNECT_DEADLINE: Duration = Duration::from_secs(60);

/// Connects and logs in, retrying failed connects for up to
/// [`RCON_CONNECT_DEADLINE`]; a refused login is final.
async fn connect_rcon(addr: &str, password: &str) -> Result<Rcon, String> {
    let deadline = tokio::time::Instant::now() + RCON_CONNECT_DEADLINE;
    loop {
        match Rcon::connect(addr, password, Duration::from_secs(10)).await {
            Ok(c) => return Ok(c),
            Err(e) if !e.contains("login: ") && tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "RCON not reachable yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

fn read_password(path: Option<&PathBuf>) -> Result<String, BackupError> {
    let p =
        path.ok_or_else(|| BackupError::RconFailed("--rcon-password-file is required with --rcon-address".into()))?;
    std::fs::read_to_string(p)
        .map(|s| s.trim().to_string())
        .map_err(|e| BackupError::RconFailed(format!("cannot read {}: {e}", p.display())))
}

/// Runs `craftplane restore`.
pub async fn restore(a: RestoreArgs) -> Result<String, BackupError> {
    let r: Result<String, BackupError> = async {
        let loc = Location::open(&a.from)?;
        let m = archive::restore(&loc, &a.data_dir).await?;
        Ok(format!("restored {} files ({} bytes) from {}", m.totals.files, m.totals.bytes, loc.url))
    }
    .await;
    match &r {
        Ok(line) => write_termination(&a.termination_log, line),
        Err(e) => write_termination(&a.termination_log, &format!("{}: {e}", e.reason())),
    }
    r
}
