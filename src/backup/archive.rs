//! Creating, checking and unpacking snapshot archives.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::buffered::BufWriter;
use sha2::{Digest, Sha256};
use tokio_util::io::{StreamReader, SyncIoBridge};

use super::store::{Location, MANIFEST};
use super::{
    ArchiveInfo, BackupError, Compression, FORMAT, FileEntry, Manifest, PART_SIZE, ServerInfo, Totals,
    UPLOAD_CONCURRENCY, hex, selected,
};

/// What to back up.
#[derive(Clone, Debug)]
pub struct CreateOptions {
    pub compression: Compression,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub server: Option<ServerInfo>,
}

/// Writes through to `inner`, hashing and counting, and remembers the
/// first write error (so a store failure is told from a read failure).
struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
    error: Option<String>,
}

impl<W> HashWriter<W> {
    /// After the first failure the writer is fused: the store's upload
    /// writer must not be polled again (a compressor's finish on drop would
    /// poll its finished future, a panic), so every later call fails with
    /// the first error.
    fn fused(&self) -> std::io::Result<()> {
        match &self.error {
            Some(e) => Err(std::io::Error::other(e.clone())),
            None => Ok(()),
        }
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.fused()?;
        match self.inner.write(buf) {
            Ok(n) => {
                self.hasher.update(&buf[..n]);
                self.bytes += n as u64;
                Ok(n)
            }
            Err(e) => {
                self.error.get_or_insert_with(|| e.to_string());
                Err(e)
            }
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.fused()?;
        self.inner.flush().inspect_err(|e| {
            self.error.get_or_insert_with(|| e.to_string());
        })
    }
}

/// Reads through from `inner`, hashing and counting.
struct HashReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// A file or directory to archive.
struct Item {
    rel: String,
    abs: PathBuf,
    dir: bool,
    size: u64,
}

/// Walks `root` in a stable order (sorted per directory), returning the
/// selected directories and regular files. Symbolic links are skipped.
fn collect(root: &Path, include: &[String], exclude: &[String]) -> std::io::Result<Vec<Item>> {
    let mut out = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        let mut subdirs = Vec::new();
        for e in entries {
            let name = e.file_name().to_string_lossy().into_owned();
            let r = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
            let meta = std::fs::symlink_metadata(e.path())?;
            if meta.is_dir() {
                // A directory is walked when it or something below it can be selected.
                let maybe = selected(&r, include, exclude)
                    || include.iter().any(|i| i.trim_end_matches('/').starts_with(&format!("{r}/")));
                if maybe && !r.starts_with(".craftplane") {
                    if selected(&r, include, exclude) {
                        out.push(Item { rel: r.clone(), abs: e.path(), dir: true, size: 0 });
                    }
                    subdirs.push((e.path(), r));
                }
            } else if meta.is_file() && selected(&r, include, exclude) {
                out.push(Item { rel: r, abs: e.path(), dir: false, size: meta.len() });
            } else if meta.file_type().is_symlink() {
                eprintln!("backup: skipping symbolic link {r}");
            }
        }
        // Depth-first, in name order.
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(out)
}

/// Tars `items` into `w`, returning each file's entry.
fn write_tar<W: Write>(w: W, items: &[Item]) -> Result<(W, Vec<FileEntry>), std::io::Error> {
    let mut tar = tar::Builder::new(w);
    tar.mode(tar::HeaderMode::Deterministic);
    let mut files = Vec::with_capacity(items.len());
    for it in items {
        let mut header = tar::Header::new_gnu();
        if it.dir {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            tar.append_data(&mut header, format!("{}/", it.rel), std::io::empty())?;
            continue;
        }
        let file = std::fs::File::open(&it.abs)?;
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(it.size);
        let mut reader = HashReader { inner: file.take(it.size), hasher: Sha256::new(), bytes: 0 };
        tar.append_data(&mut header, &it.rel, &mut reader)?;
        if reader.bytes != it.size {
            return Err(std::io::Error::other(format!("{} changed size while being read", it.rel)));
        }
        files.push(FileEntry { path: it.rel.clone(), size: it.size, sha256: hex(&reader.hasher.finalize()) });
    }
    Ok((tar.into_inner()?, files))
}

/// Compresses a tar of `items` into `sink`.
fn write_compressed<W: Write>(sink: &mut W, items: &[Item], c: Compression) -> std::io::Result<Vec<FileEntry>> {
    match c {
        Compression::Zstd => {
            let mut enc = zstd::Encoder::new(sink, 3)?;
            let threads = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1);
            if threads > 1 {
                enc.multithread(threads)?;
            }
            let (enc, files) = write_tar(enc, items)?;
            enc.finish()?;
            Ok(files)
        }
        Compression::Gzip => {
            let enc = flate2::write::GzEncoder::new(sink, flate2::Compression::fast());
            let (enc, files) = write_tar(enc, items)?;
            enc.finish()?;
            Ok(files)
        }
        Compression::None => Ok(write_tar(sink, items)?.1),
    }
}

fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

/// Streams the world under `data_dir` into `loc`: the archive by multipart
/// upload, then the manifest. Returns the manifest and its sha256. On any
/// failure the upload is aborted and no manifest is written, so a partial
/// archive is never a snapshot.
pub async fn create(loc: &Location, data_dir: &Path, opts: &CreateOptions) -> Result<(Manifest, String), BackupError> {
    let created_at = now_rfc3339();
    let name = opts.compression.archive_name();
    let root = data_dir.to_path_buf();
    let (include, exclude) = (opts.include.clone(), opts.exclude.clone());
    let items = tokio::task::spawn_blocking(move || collect(&root, &include, &exclude))
        .await
        .map_err(|e| BackupError::ReadFailed(e.to_string()))?
        .map_err(|e| BackupError::ReadFailed(format!("cannot list {}: {e}", data_dir.display())))?;

    let writer =
        BufWriter::with_capacity(loc.store.clone(), loc.key(&name), PART_SIZE).with_max_concurrency(UPLOAD_CONCURRENCY);
    let handle = tokio::runtime::Handle::current();
    let compression = opts.compression;
    let (bridge, shut, result) = tokio::task::spawn_blocking(move || {
        let mut sink = HashWriter {
            inner: SyncIoBridge::new_with_handle(writer, handle),
            hasher: Sha256::new(),
            bytes: 0,
            error: None,
        };
        let mut shut = false;
        let written = write_compressed(&mut sink, &items, compression).and_then(|files| {
            shut = true;
            sink.inner.shutdown().inspect_err(|e| {
                sink.error.get_or_insert_with(|| e.to_string());
            })?;
            Ok(files)
        });
        let result = match written {
            Ok(files) => Ok((files, sink.bytes, hex(&sink.hasher.clone().finalize()))),
            Err(e) => Err(match &sink.error {
                Some(store) => BackupError::StoreFailed(format!("uploading the archive failed: {store}")),
                None => BackupError::ReadFailed(format!("reading the world failed: {e}")),
            }),
        };
        (sink.inner.into_inner(), shut, result)
    })
    .await
    .map_err(|e| BackupError::WriteFailed(e.to_string()))?;
    let (files, bytes, sha256) = match result {
        Ok(r) => r,
        Err(e) => {
            // Abort a multipart upload still in progress (a failed shutdown
            // has already cleaned up after itself).
            if !shut {
                let mut w = bridge;
                let _ = w.abort().await;
            }
            return Err(e);
        }
    };
    let totals = Totals { files: files.len() as u64, bytes: files.iter().map(|f| f.size).sum() };
    let manifest = Manifest {
        format: FORMAT,
        created_at,
        craftplane_version: env!("CARGO_PKG_VERSION").into(),
        server: opts.server.clone(),
        compression: opts.compression.as_str().into(),
        include: opts.include.clone(),
        exclude: opts.exclude.clone(),
        archive: ArchiveInfo { name, bytes, sha256 },
        totals,
        files,
    };
    let sha = put_manifest(loc, &manifest).await?;
    Ok((manifest, sha))
}

async fn put_manifest(loc: &Location, manifest: &Manifest) -> Result<String, BackupError> {
    let body = serde_json::to_vec_pretty(manifest).map_err(|e| BackupError::WriteFailed(e.to_string()))?;
    let sha = hex(&Sha256::digest(&body));
    loc.store
        .put(&loc.key(MANIFEST), body.into())
        .await
        .map_err(|e| BackupError::StoreFailed(format!("writing the manifest failed: {e}")))?;
    Ok(sha)
}

/// Reads a snapshot's manifest; returns it and its sha256.
pub async fn read_manifest(loc: &Location) -> Result<(Manifest, String), BackupError> {
    let key = loc.key(MANIFEST);
    let body = match loc.store.get(&key).await {
        Ok(r) => r.bytes().await.map_err(|e| BackupError::StoreFailed(format!("reading {key}: {e}")))?,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(BackupError::SnapshotNotFound(format!("no snapshot at {} (no {MANIFEST})", loc.url)));
        }
        Err(e) => return Err(BackupError::StoreFailed(format!("reading {key}: {e}"))),
    };
    let manifest: Manifest = serde_json::from_slice(&body)
        .map_err(|e| BackupError::VerificationFailed(format!("{key} is not a craftplane manifest: {e}")))?;
    if manifest.format != FORMAT {
        return Err(BackupError::VerificationFailed(format!("unsupported manifest format {}", manifest.format)));
    }
    Ok((manifest, hex(&Sha256::digest(&body))))
}

/// A blocking reader of an object's bytes.
async fn object_reader(loc: &Location, name: &str) -> Result<impl Read + Send + 'static, BackupError> {
    let key = loc.key(name);
    let get = match loc.store.get(&key).await {
        Ok(g) => g,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(BackupError::SnapshotNotFound(format!("the archive {key} is missing")));
        }
        Err(e) => return Err(BackupError::StoreFailed(format!("reading {key}: {e}"))),
    };
    let stream = get.into_stream().map_err(std::io::Error::other);
    Ok(SyncIoBridge::new_with_handle(StreamReader::new(stream), tokio::runtime::Handle::current()))
}

/// Where unpacked files go.
enum Sink<'a> {
    /// Only hash (verify).
    Discard,
    /// Write under this directory (restore staging).
    Dir(&'a Path),
}

/// Reads a whole archive: every file is hashed (and written, for a
/// restore) and checked against the manifest; the compressed bytes are
/// checked against the manifest's archive checksum.
fn unpack<R: Read>(raw: R, manifest: &Manifest, sink: Sink<'_>) -> Result<(), BackupError> {
    let fail = |m: String| BackupError::VerificationFailed(m);
    let c = Compression::parse(&manifest.compression)
        .ok_or_else(|| fail(format!("unknown compression {:?}", manifest.compression)))?;
    let mut raw = HashReader { inner: raw, hasher: Sha256::new(), bytes: 0 };
    let mut seen: BTreeMap<String, (u64, String)> = BTreeMap::new();
    {
        let reader: Box<dyn Read + '_> = match c {
            Compression::Zstd => Box::new(zstd::Decoder::new(&mut raw).map_err(|e| fail(format!("archive: {e}")))?),
            Compression::Gzip => Box::new(flate2::read::GzDecoder::new(&mut raw)),
            Compression::None => Box::new(&mut raw),
        };
        let mut archive = tar::Archive::new(reader);
        let entries = archive.entries().map_err(|e| fail(format!("archive: {e}")))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| fail(format!("archive is corrupt: {e}")))?;
            let path =
                entry.path().map_err(|e| fail(format!("archive entry path: {e}")))?.to_string_lossy().into_owned();
            let rel = safe_relative(&path)
                .ok_or_else(|| fail(format!("archive entry {path:?} leaves the world directory")))?;
            // A restore replaces what the snapshot covers and nothing else.
            if !selected(&rel, &manifest.include, &manifest.exclude) {
                return Err(fail(format!("archive entry {rel} is outside the paths the snapshot covers")));
            }
            match entry.header().entry_type() {
                tar::EntryType::Directory => {
                    if let Sink::Dir(root) = sink {
                        std::fs::create_dir_all(root.join(&rel))
                            .map_err(|e| BackupError::WriteFailed(e.to_string()))?;
                    }
                }
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let mut h = Sha256::new();
                    let mut size = 0u64;
                    let mut out = match sink {
                        Sink::Dir(root) => {
                            let p = root.join(&rel);
                            if let Some(parent) = p.parent() {
                                std::fs::create_dir_all(parent).map_err(|e| BackupError::WriteFailed(e.to_string()))?;
                            }
                            Some(std::io::BufWriter::new(
                                std::fs::File::create_new(&p)
                                    .map_err(|e| BackupError::WriteFailed(format!("{}: {e}", p.display())))?,
                            ))
                        }
                        Sink::Discard => None,
                    };
                    let mut buf = vec![0u8; 128 * 1024];
                    loop {
                        let n = entry.read(&mut buf).map_err(|e| fail(format!("archive is corrupt at {rel}: {e}")))?;
                        if n == 0 {
                            break;
                        }
                        h.update(&buf[..n]);
                        size += n as u64;
                        if let Some(o) = out.as_mut() {
                            o.write_all(&buf[..n]).map_err(|e| BackupError::WriteFailed(e.to_string()))?;
                        }
                    }
                    if let Some(mut o) = out {
                        o.flush().map_err(|e| BackupError::WriteFailed(e.to_string()))?;
                    }
                    if seen.insert(rel.clone(), (size, hex(&h.finalize()))).is_some() {
                        return Err(fail(format!("{rel} appears twice in the archive")));
                    }
                }
                other => return Err(fail(format!("archive entry {rel} has unsupported type {other:?}"))),
            }
        }
        // Read what follows the last entry too, so the checksum covers every byte.
        let mut rest = archive.into_inner();
        std::io::copy(&mut rest, &mut std::io::sink()).map_err(|e| fail(format!("archive is corrupt: {e}")))?;
    }
    std::io::copy(&mut raw, &mut std::io::sink()).map_err(|e| fail(format!("archive: {e}")))?;
    let sha = hex(&raw.hasher.finalize());
    if sha != manifest.archive.sha256 || raw.bytes != manifest.archive.bytes {
        return Err(fail(format!(
            "archive checksum mismatch: {} bytes with sha256 {sha}, manifest says {} bytes with sha256 {}",
            raw.bytes, manifest.archive.bytes, manifest.archive.sha256
        )));
    }
    for f in &manifest.files {
        match seen.remove(&f.path) {
            None => return Err(fail(format!("{} is in the manifest but not in the archive", f.path))),
            Some((size, sha)) if size != f.size || sha != f.sha256 => {
                return Err(fail(format!(
                    "{}: {size} bytes with sha256 {sha}, manifest says {} bytes with sha256 {}",
                    f.path, f.size, f.sha256
                )));
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = seen.keys().next() {
        return Err(fail(format!("{extra} is in the archive but not in the manifest")));
    }
    Ok(())
}

/// A tar path as a safe relative path (no absolute paths, no `..`).
fn safe_relative(path: &str) -> Option<String> {
    let trimmed = path.trim_end_matches('/');
    let parts: Vec<&str> = trimmed.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    if path.starts_with('/') || parts.is_empty() || parts.contains(&"..") {
        return None;
    }
    Some(parts.join("/"))
}

/// Checks a snapshot: manifest, archive checksum, every file's size and
/// sha256. Returns the manifest and its sha256.
pub async fn verify(loc: &Location) -> Result<(Manifest, String), BackupError> {
    let (manifest, sha) = read_manifest(loc).await?;
    let reader = object_reader(loc, &manifest.archive.name).await?;
    let m = manifest.clone();
    tokio::task::spawn_blocking(move || unpack(reader, &m, Sink::Discard))
        .await
        .map_err(|e| BackupError::ReadFailed(e.to_string()))??;
    Ok((manifest, sha))
}

/// Restores a snapshot into `data_dir`: unpacks and verifies everything in
/// a staging directory on the same volume first; only then moves the
/// current world aside, moves the restored one in, and deletes the old one.
/// Any failure before the swap leaves `data_dir` exactly as it was.
pub async fn restore(loc: &Location, data_dir: &Path) -> Result<Manifest, BackupError> {
    let (manifest, _) = read_manifest(loc).await?;
    let reader = object_reader(loc, &manifest.archive.name).await?;
    let tag = crate::resources::secret::generate_password().chars().take(8).collect::<String>().to_lowercase();
    let staging = data_dir.join(format!(".craftplane-restore-{tag}"));
    let previous = data_dir.join(format!(".craftplane-previous-{tag}"));
    let m = manifest.clone();
    let (st, dd, prev) = (staging.clone(), data_dir.to_path_buf(), previous.clone());
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&st).map_err(|e| BackupError::WriteFailed(format!("{}: {e}", st.display())))?;
        if let Err(e) = unpack(reader, &m, Sink::Dir(&st)) {
            let _ = std::fs::remove_dir_all(&st);
            return Err(e);
        }
        swap(&dd, &st, &prev, &m)
    })
    .await
    .map_err(|e| BackupError::WriteFailed(e.to_string()))??;
    Ok(manifest)
}

/// How much of a path of the world a snapshot covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cover {
    /// The path and everything below it.
    All,
    /// Something below it (a directory holding included or excluded paths).
    Part,
    /// Nothing.
    None,
}

/// What a snapshot with `include`/`exclude` covers of the path `rel`: the
/// same selection [`selected`] made when the archive was written.
fn cover(rel: &str, include: &[String], exclude: &[String]) -> Cover {
    let below = |list: &[String]| list.iter().any(|p| p.trim_end_matches('/').starts_with(&format!("{rel}/")));
    match selected(rel, include, exclude) {
        true if below(exclude) => Cover::Part,
        true => Cover::All,
        false if below(include) => Cover::Part,
        false => Cover::None,
    }
}

/// The moves of a restore, as paths relative to the world.
#[derive(Debug, Default, PartialEq)]
struct Plan {
    /// Paths of the current world the snapshot covers entirely: moved aside.
    aside: Vec<String>,
    /// Paths of the restored world moved in (none exists once `aside` is moved).
    bring: Vec<String>,
}

/// The entries of the directory `rel` of `root` (relative to `root`, with
/// their metadata, links not followed) in name order; craftplane's own
/// top-level bookkeeping (`.craftplane*`) is never part of a world.
fn entries(root: &Path, rel: &str) -> std::io::Result<Vec<(String, std::fs::Metadata)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(root.join(rel))? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if rel.is_empty() && name.starts_with(".craftplane") {
            continue;
        }
        let r = if rel.is_empty() { name } else { format!("{rel}/{name}") };
        let meta = std::fs::symlink_metadata(root.join(&r))?;
        out.push((r, meta));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Works out a restore without changing anything: every path of the
/// current world the snapshot covers (at any depth) goes aside, every path
/// it does not cover stays where it is, and the restored paths go where
/// nothing is left. A restored path that would land on a path the snapshot
/// does not cover is an error.
fn plan(data_dir: &Path, staging: &Path, include: &[String], exclude: &[String]) -> std::io::Result<Plan> {
    let mut plan = Plan::default();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        for (r, meta) in entries(data_dir, &rel)? {
            match cover(&r, include, exclude) {
                Cover::All => plan.aside.push(r),
                // Symbolic links are never followed (a backup skips them too).
                Cover::Part if meta.is_dir() => stack.push(r),
                Cover::Part | Cover::None => {}
            }
        }
    }
    let aside: std::collections::BTreeSet<&String> = plan.aside.iter().collect();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        for (r, meta) in entries(staging, &rel)? {
            match std::fs::symlink_metadata(data_dir.join(&r)) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => plan.bring.push(r),
                Err(e) => return Err(e),
                Ok(_) if aside.contains(&r) => plan.bring.push(r),
                Ok(cur) if cur.is_dir() && meta.is_dir() => stack.push(r),
                Ok(_) => {
                    return Err(std::io::Error::other(format!(
                        "the snapshot holds {r}, which would replace a path it does not cover"
                    )));
                }
            }
        }
    }
    plan.aside.sort();
    plan.bring.sort();
    Ok(plan)
}

/// Replaces what the snapshot covers with the restored world in `staging`:
/// moves the covered paths aside into `previous`, moves the restored ones
/// in, then deletes both directories. Paths the snapshot does not cover are
/// never touched. When a move fails, the moves done are undone so the world
/// is as it was (or, when even that fails, the error says where its files
/// are).
fn swap(data_dir: &Path, staging: &Path, previous: &Path, manifest: &Manifest) -> Result<(), BackupError> {
    let w = |e: std::io::Error| BackupError::WriteFailed(format!("swapping in the restored world: {e}"));
    let left_as_it_was = |what: String| {
        let _ = std::fs::remove_dir_all(staging);
        let _ = std::fs::remove_dir_all(previous);
        BackupError::WriteFailed(format!(
            "swapping in the restored world: {what}; the current world was left as it was"
        ))
    };
    let plan =
        plan(data_dir, staging, &manifest.include, &manifest.exclude).map_err(|e| left_as_it_was(e.to_string()))?;
    std::fs::create_dir_all(previous).map_err(|e| left_as_it_was(e.to_string()))?;
    let moves = plan
        .aside
        .iter()
        .map(|r| (data_dir.join(r), previous.join(r)))
        .chain(plan.bring.iter().map(|r| (staging.join(r), data_dir.join(r))));
    let mut done: Vec<(PathBuf, PathBuf)> = Vec::new();
    for (from, to) in moves {
        let moved = to.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| std::fs::rename(&from, &to));
        if let Err(e) = moved {
            let undone = done.iter().rev().all(|(from, to)| std::fs::rename(to, from).is_ok());
            let what = format!("moving {} to {}: {e}", from.display(), to.display());
            if undone {
                return Err(left_as_it_was(what));
            }
            return Err(BackupError::WriteFailed(format!(
                "swapping in the restored world: {what}; undoing failed too: files of the current world are in {}",
                previous.display()
            )));
        }
        done.push((from, to));
    }
    std::fs::remove_dir_all(staging).map_err(w)?;
    std::fs::remove_dir_all(previous).map_err(w)?;
    Ok(())
}

/// Downloads a snapshot's archive to `out` (a `.tar.zst` a person can
/// unpack with `tar`), checking its size and sha256 against the manifest.
pub async fn export(loc: &Location, out: &Path) -> Result<Manifest, BackupError> {
    let (manifest, _) = read_manifest(loc).await?;
    let mut reader = object_reader(loc, &manifest.archive.name).await?;
    let tmp = out.with_extension("part");
    let (m, t, o) = (manifest.clone(), tmp.clone(), out.to_path_buf());
    tokio::task::spawn_blocking(move || {
        let file = std::fs::File::create(&t).map_err(|e| BackupError::WriteFailed(format!("{}: {e}", t.display())))?;
        let mut w = HashWriter { inner: std::io::BufWriter::new(file), hasher: Sha256::new(), bytes: 0, error: None };
        let copied = std::io::copy(&mut reader, &mut w).and_then(|_| w.flush());
        let check = match copied {
            Err(e) => Err(BackupError::StoreFailed(format!("downloading the archive: {e}"))),
            Ok(()) => {
                let sha = hex(&w.hasher.clone().finalize());
                if sha != m.archive.sha256 || w.bytes != m.archive.bytes {
                    Err(BackupError::VerificationFailed(format!(
                        "archive checksum mismatch: {} bytes with sha256 {sha}, manifest says {} bytes with sha256 {}",
                        w.bytes, m.archive.bytes, m.archive.sha256
                    )))
                } else {
                    Ok(())
                }
            }
        };
        match check {
            Ok(()) => std::fs::rename(&t, &o).map_err(|e| BackupError::WriteFailed(e.to_string())),
            Err(e) => {
                let _ = std::fs::remove_file(&t);
                Err(e)
            }
        }
    })
    .await
    .map_err(|e| BackupError::WriteFailed(e.to_string()))??;
    Ok(manifest)
}

/// Stores an archive file (tar, optionally zstd or gzip) as a new snapshot
/// at `loc`: its files are listed and hashed into a manifest first; the
/// archive is uploaded unchanged.
pub async fn import(
    file: &Path,
    loc: &Location,
    server: Option<ServerInfo>,
) -> Result<(Manifest, String), BackupError> {
    let r = |e: std::io::Error| BackupError::ReadFailed(format!("{}: {e}", file.display()));
    let mut head = [0u8; 4];
    let n = std::fs::File::open(file).and_then(|mut f| f.read(&mut head)).map_err(r)?;
    let compression = Compression::sniff(&head[..n]);
    let path = file.to_path_buf();
    // First pass: list and hash; the archive's own checksum comes with it.
    let scanned = tokio::task::spawn_blocking(move || -> Result<(Vec<FileEntry>, u64, String), BackupError> {
        let f = std::fs::File::open(&path).map_err(|e| BackupError::ReadFailed(e.to_string()))?;
        let size = f.metadata().map_err(|e| BackupError::ReadFailed(e.to_string()))?.len();
        let sha = {
            let mut h = Sha256::new();
            std::io::copy(&mut std::fs::File::open(&path).map_err(|e| BackupError::ReadFailed(e.to_string()))?, &mut h)
                .map_err(|e| BackupError::ReadFailed(e.to_string()))?;
            hex(&h.finalize())
        };
        // Reuse the verifier with a manifest that lists nothing, collecting what it sees.
        let files = list(f, compression)?;
        Ok((files, size, sha))
    })
    .await
    .map_err(|e| BackupError::ReadFailed(e.to_string()))??;
    let (files, bytes, sha256) = scanned;
    let name = compression.archive_name();
    let mut upload =
        BufWriter::with_capacity(loc.store.clone(), loc.key(&name), PART_SIZE).with_max_concurrency(UPLOAD_CONCURRENCY);
    let mut src = tokio::fs::File::open(file).await.map_err(r)?;
    if let Err(e) = tokio::io::copy(&mut src, &mut upload).await {
        let _ = upload.abort().await;
        return Err(BackupError::StoreFailed(format!("uploading the archive failed: {e}")));
    }
    tokio::io::AsyncWriteExt::shutdown(&mut upload)
        .await
        .map_err(|e| BackupError::StoreFailed(format!("uploading the archive failed: {e}")))?;
    let manifest = Manifest {
        format: FORMAT,
        created_at: now_rfc3339(),
        craftplane_version: env!("CARGO_PKG_VERSION").into(),
        server,
        compression: compression.as_str().into(),
        include: vec![],
        exclude: vec![],
        archive: ArchiveInfo { name, bytes, sha256 },
        totals: Totals { files: files.len() as u64, bytes: files.iter().map(|f| f.size).sum() },
        files,
    };
    let sha = put_manifest(loc, &manifest).await?;
    Ok((manifest, sha))
}

/// Lists and hashes the regular files of an archive (refusing unsafe entries).
fn list<R: Read>(raw: R, c: Compression) -> Result<Vec<FileEntry>, BackupError> {
    let fail = |m: String| BackupError::VerificationFailed(m);
    let reader: Box<dyn Read> = match c {
        Compression::Zstd => Box::new(zstd::Decoder::new(raw).map_err(|e| fail(e.to_string()))?),
        Compression::Gzip => Box::new(flate2::read::GzDecoder::new(raw)),
        Compression::None => Box::new(raw),
    };
    let mut archive = tar::Archive::new(reader);
    let mut files = Vec::new();
    for entry in archive.entries().map_err(|e| fail(format!("not a tar archive: {e}")))? {
        let mut entry = entry.map_err(|e| fail(format!("archive is corrupt: {e}")))?;
        let path = entry.path().map_err(|e| fail(e.to_string()))?.to_string_lossy().into_owned();
        let rel =
            safe_relative(&path).ok_or_else(|| fail(format!("archive entry {path:?} leaves the world directory")))?;
        if !selected(&rel, &[], &[]) {
            return Err(fail(format!("archive entry {rel} is craftplane's own bookkeeping, not part of a world")));
        }
        match entry.header().entry_type() {
            tar::EntryType::Directory => {}
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut h = HashReader { inner: &mut entry, hasher: Sha256::new(), bytes: 0 };
                std::io::copy(&mut h, &mut std::io::sink()).map_err(|e| fail(format!("archive is corrupt: {e}")))?;
                files.push(FileEntry { path: rel, size: h.bytes, sha256: hex(&h.hasher.finalize()) });
            }
            other => return Err(fail(format!("archive entry {rel} has unsupported type {other:?}"))),
        }
    }
    Ok(files)
}

/// Deletes a snapshot's objects (archive and manifest).
pub async fn delete(loc: &Location) -> Result<(), BackupError> {
    let names: Vec<String> = match read_manifest(loc).await {
        Ok((m, _)) => vec![m.archive.name, MANIFEST.to_string()],
        Err(BackupError::SnapshotNotFound(_)) => {
            [Compression::Zstd, Compression::Gzip, Compression::None].iter().map(|c| c.archive_name()).collect()
        }
        Err(e) => return Err(e),
    };
    for n in names {
        match loc.store.delete(&loc.key(&n)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(BackupError::StoreFailed(format!("deleting {}: {e}", loc.key(&n)))),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory, removed on drop.
    struct Scratch(PathBuf);
    impl Scratch {
        fn new(name: &str) -> Scratch {
            let tag = crate::resources::secret::generate_password().chars().take(10).collect::<String>();
            let p = std::env::temp_dir().join(format!("craftplane-archive-{name}-{}", tag.to_lowercase()));
            std::fs::create_dir_all(&p).unwrap();
            Scratch(p)
        }
    }
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn write(root: &Path, rel: &str, body: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }

    /// Every path under `dir` (directories as "dir", files by sha256).
    fn tree(dir: &Path) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let rel = e.path().strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                if e.file_type().unwrap().is_dir() {
                    out.insert(rel, "dir".into());
                    stack.push(e.path());
                } else {
                    out.insert(rel, hex(&Sha256::digest(std::fs::read(e.path()).unwrap())));
                }
            }
        }
        out
    }

    /// A server's data directory: worlds, plugin data, settings, logs.
    const WORLD: &[&str] = &[
        "world/level.dat",
        "world/region/r.0.0.mca",
        "world/region/r.0.1.mca",
        "world/playerdata/8667ba71.dat",
        "world/playerdata/advancements/8667ba71.json",
        "world/data/raids.dat",
        "world_nether/level.dat",
        "world_nether/DIM-1/region/r.0.0.mca",
        "world_nether/DIM-1/data/map_0.dat",
        "plugins/Essentials/config.yml",
        "plugins/Essentials/userdata/8667ba71.yml",
        "plugins/LuckPerms/luckperms.db",
        "server.properties",
        "logs/latest.log",
    ];

    /// The world as it was when the snapshot was taken, the world later
    /// (every file changed, some deleted, some new), and what a restore of
    /// a snapshot with `include`/`exclude` must leave: inside the
    /// snapshot's scope exactly the snapshot, outside it the later world
    /// byte for byte.
    async fn restore_keeps_what_the_snapshot_does_not_cover(include: &[&str], exclude: &[&str]) {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let (include, exclude) = (s(include), s(exclude));
        let t = Scratch::new("scope");
        let (then, now) = (t.0.join("then"), t.0.join("now"));
        for f in WORLD {
            write(&then, f, &format!("{f} at snapshot time"));
            write(&now, f, &format!("{f} later"));
        }
        std::fs::create_dir_all(then.join("world/empty")).unwrap();
        // Gone since the snapshot (they come back where the snapshot covers them).
        for f in ["world/level.dat", "world_nether/DIM-1/region/r.0.0.mca", "plugins/Essentials/config.yml"] {
            std::fs::remove_file(now.join(f)).unwrap();
        }
        // New since the snapshot (removed where the snapshot covers them).
        for f in [
            "world/region/r.5.5.mca",
            "world/playerdata/new-player.dat",
            "world_nether/DIM-1/region/r.9.9.mca",
            "plugins/Essentials/userdata/new.yml",
            "plugins/NewPlugin/config.yml",
            "world2/level.dat",
        ] {
            write(&now, f, &format!("{f} new"));
        }
        let loc = Location::open(&format!("file://{}", t.0.join("store/snap").display())).unwrap();
        let opts = CreateOptions {
            compression: Compression::Zstd,
            include: include.clone(),
            exclude: exclude.clone(),
            server: None,
        };
        create(&loc, &then, &opts).await.unwrap();
        let (before, source) = (tree(&now), tree(&then));
        restore(&loc, &now).await.unwrap();
        let after = tree(&now);
        let scoped = |m: &BTreeMap<String, String>, inside: bool| -> BTreeMap<String, String> {
            m.iter()
                .filter(|(p, _)| super::super::selected(p, &include, &exclude) == inside)
                .map(|(p, h)| (p.clone(), h.clone()))
                .collect()
        };
        let (outside_before, outside_after) = (scoped(&before, false), scoped(&after, false));
        let digest = |m: &BTreeMap<String, String>| hex(&Sha256::digest(format!("{m:?}")));
        assert_eq!(
            outside_after,
            outside_before,
            "include {include:?} exclude {exclude:?}: paths outside the snapshot changed (tree sha256 {} -> {})",
            digest(&outside_before),
            digest(&outside_after)
        );
        assert_eq!(
            scoped(&after, true),
            scoped(&source, true),
            "include {include:?} exclude {exclude:?}: inside the snapshot"
        );
        assert!(!after.keys().any(|p| p.starts_with(".craftplane")), "staging left behind: {after:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_exclude_snapshot_restores_around_the_excluded_paths() {
        restore_keeps_what_the_snapshot_does_not_cover(&[], &["world/playerdata", "logs"]).await;
        restore_keeps_what_the_snapshot_does_not_cover(
            &[],
            &["world_nether/DIM-1/region/", "plugins/Essentials/userdata"],
        )
        .await;
        restore_keeps_what_the_snapshot_does_not_cover(&["world", "plugins"], &["world/playerdata"]).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restore_that_would_replace_uncovered_paths_leaves_the_world_alone() {
        let t = Scratch::new("conflict");
        let (then, now) = (t.0.join("then"), t.0.join("now"));
        write(&then, "world/region/r.0.0.mca", "region");
        write(&then, "plugins/x.yml", "x");
        // `world` is a file now: the snapshot (world/region) cannot go there.
        write(&now, "world", "a file where the world was");
        write(&now, "server.properties", "motd=now");
        let loc = Location::open(&format!("file://{}", t.0.join("store/snap").display())).unwrap();
        let opts = CreateOptions {
            compression: Compression::Gzip,
            include: vec!["world/region".into()],
            exclude: vec![],
            server: None,
        };
        create(&loc, &then, &opts).await.unwrap();
        let before = tree(&now);
        let err = restore(&loc, &now).await.unwrap_err();
        assert!(matches!(err, BackupError::WriteFailed(_)), "{err:?}");
        assert!(err.to_string().contains("left as it was"), "{err}");
        assert_eq!(tree(&now), before, "the world is untouched and no staging is left");

        // An archive holding paths its manifest says it does not cover is refused.
        let (mut manifest, _) = read_manifest(&loc).await.unwrap();
        manifest.include = vec!["plugins".into()];
        put_manifest(&loc, &manifest).await.unwrap();
        std::fs::remove_file(now.join("world")).unwrap();
        let before = tree(&now);
        let err = restore(&loc, &now).await.unwrap_err();
        assert!(err.to_string().contains("outside the paths the snapshot covers"), "{err}");
        assert_eq!(tree(&now), before);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_include_snapshot_restores_only_the_included_paths() {
        restore_keeps_what_the_snapshot_does_not_cover(&["world/region"], &[]).await;
        restore_keeps_what_the_snapshot_does_not_cover(
            &["world/region", "world_nether/DIM-1/region", "plugins/Essentials/"],
            &[],
        )
        .await;
        restore_keeps_what_the_snapshot_does_not_cover(&["world"], &[]).await;
        restore_keeps_what_the_snapshot_does_not_cover(&[], &[]).await;
    }

    #[test]
    fn unsafe_archive_paths_are_refused() {
        assert_eq!(safe_relative("world/level.dat").as_deref(), Some("world/level.dat"));
        assert_eq!(safe_relative("./world/").as_deref(), Some("world"));
        assert_eq!(safe_relative("/etc/passwd"), None);
        assert_eq!(safe_relative("world/../../x"), None);
        assert_eq!(safe_relative(""), None);
    }
}
