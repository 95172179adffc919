//! World backups: a tar archive (zstd, gzip or plain) streamed to object
//! storage with a manifest of every file's path, size and sha256, and the
//! way back (verify, restore into a staging directory, export, import).
//!
//! Data flows through bounded buffers only: files are read in chunks, the
//! compressed stream goes to a multipart upload in parts of [`PART_SIZE`],
//! downloads are streamed the same way. Memory stays flat whatever the size
//! of the world.

pub mod archive;
pub mod cli;
pub mod schedule;
pub mod store;
pub mod stores;

use serde::{Deserialize, Serialize};

pub use store::Location;

/// Multipart upload part size.
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts uploaded at once.
pub const UPLOAD_CONCURRENCY: usize = 4;
/// Manifest format version.
pub const FORMAT: u32 = 1;

/// Why a backup, verification or restore failed. Each variant is a
/// condition reason.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0}")]
    InvalidLocation(String),
    #[error("{0}")]
    StoreFailed(String),
    #[error("{0}")]
    SnapshotNotFound(String),
    #[error("{0}")]
    VerificationFailed(String),
    #[error("{0}")]
    RconFailed(String),
    #[error("{0}")]
    ReadFailed(String),
    #[error("{0}")]
    WriteFailed(String),
}

impl BackupError {
    /// The condition reason (CamelCase).
    pub fn reason(&self) -> &'static str {
        match self {
            BackupError::InvalidLocation(_) => "InvalidLocation",
            BackupError::StoreFailed(_) => "StoreFailed",
            BackupError::SnapshotNotFound(_) => "SnapshotNotFound",
            BackupError::VerificationFailed(_) => "VerificationFailed",
            BackupError::RconFailed(_) => "RconFailed",
            BackupError::ReadFailed(_) => "ReadFailed",
            BackupError::WriteFailed(_) => "WriteFailed",
        }
    }

    /// Parses "Reason: message" (a termination message) back.
    pub fn parse(line: &str) -> Option<(String, String)> {
        let (reason, msg) = line.lines().next()?.split_once(": ")?;
        let known = [
            "InvalidLocation",
            "StoreFailed",
            "SnapshotNotFound",
            "VerificationFailed",
            "RconFailed",
            "ReadFailed",
            "WriteFailed",
        ];
        known.contains(&reason).then(|| (reason.to_string(), msg.to_string()))
    }
}

/// What a snapshot contains; stored next to the archive as `manifest.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub format: u32,
    /// RFC 3339 time the backup started.
    pub created_at: String,
    pub craftplane_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerInfo>,
    /// zstd, gzip or none.
    pub compression: String,
    /// Paths the backup was limited to (empty: everything).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    pub archive: ArchiveInfo,
    pub totals: Totals,
    pub files: Vec<FileEntry>,
}

/// The server a snapshot was taken from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerInfo {
    pub namespace: String,
    pub name: String,
    #[serde(rename = "type")]
    pub server_type: String,
    pub version: String,
}

/// The archive object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveInfo {
    /// Object name inside the snapshot prefix.
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
}

/// Sums over all files.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    pub files: u64,
    pub bytes: u64,
}

/// One file of the world.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// Archive compression.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Compression {
    Zstd,
    Gzip,
    None,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Zstd => "zstd",
            Compression::Gzip => "gzip",
            Compression::None => "none",
        }
    }
    /// Archive object name.
    pub fn archive_name(self) -> String {
        match self {
            Compression::Zstd => format!("{}.zst", store::ARCHIVE),
            Compression::Gzip => format!("{}.gz", store::ARCHIVE),
            Compression::None => store::ARCHIVE.to_string(),
        }
    }
    pub fn parse(s: &str) -> Option<Compression> {
        match s {
            "zstd" => Some(Compression::Zstd),
            "gzip" => Some(Compression::Gzip),
            "none" => Some(Compression::None),
            _ => None,
        }
    }
    /// Recognizes a compressed stream by its first bytes.
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else {
            Compression::None
        }
    }
}

impl From<crate::api::backup::Compression> for Compression {
    fn from(c: crate::api::backup::Compression) -> Compression {
        match c {
            crate::api::backup::Compression::Zstd => Compression::Zstd,
            crate::api::backup::Compression::Gzip => Compression::Gzip,
            crate::api::backup::Compression::None => Compression::None,
        }
    }
}

/// Whether a relative world path is selected by include/exclude lists
/// (a list entry selects itself and everything below it).
pub fn selected(path: &str, include: &[String], exclude: &[String]) -> bool {
    let under = |p: &str| {
        let p = p.trim_end_matches('/');
        path == p || path.starts_with(&format!("{p}/"))
    };
    // Files of craftplane's own bookkeeping (staging, plugin state) never go in.
    if path.split('/').next().is_some_and(|top| top.starts_with(".craftplane")) {
        return false;
    }
    (include.is_empty() || include.iter().any(|i| under(i))) && !exclude.iter().any(|e| under(e))
}

/// Hex encoding.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_and_exclude_select_subtrees() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(selected("world/region/r.0.0.mca", &[], &[]));
        assert!(selected("world/region/r.0.0.mca", &s(&["world"]), &[]));
        assert!(!selected("world_nether/x", &s(&["world"]), &[]));
        assert!(!selected("logs/latest.log", &[], &s(&["logs"])));
        assert!(selected("logsbook.txt", &[], &s(&["logs"])));
        assert!(!selected(".craftplane/installed-plugins.json", &[], &[]));
        assert!(!selected(".craftplane-restore-x/world/level.dat", &[], &[]));
    }

    #[test]
    fn compression_is_recognized_by_magic_bytes() {
        assert_eq!(Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd, 0]), Compression::Zstd);
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(Compression::sniff(b"world/"), Compression::None);
        assert_eq!(
            BackupError::parse("StoreFailed: upload: boom"),
            Some(("StoreFailed".into(), "upload: boom".into()))
        );
        assert_eq!(BackupError::parse("thread panicked"), None);
    }
}
