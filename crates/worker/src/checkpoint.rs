//! Exactly-once output: part files, the checkpoint that names them, resume, and the manifest.
//!
//! # Layout
//! ```text
//! <output>/replica-<i>/part-00000.parquet   items [first_item, first_item + items) of the shard
//! <output>/replica-<i>/part-00001.parquet   (or .jsonl), in shard order, one record per item
//! <output>/replica-<i>/checkpoint.json      {"checkpoint": {...}, "sha256": "<hex>"}
//! <output>/replica-<i>/manifest.json        written once, after the last item
//! ```
//!
//! # Guarantees
//! - A part is fully written and fsynced (renamed into place, folder fsynced) before a
//!   checkpoint names it; the checkpoint is replaced atomically the same way.
//! - Parts cover consecutive shard ranges: part `k` starts where part `k - 1` ends, and the
//!   checkpoint's `nextItem` is where the last one ends. On start the worker verifies every
//!   named part (size and SHA-256), deletes files named `part-*` or `.*.tmp` that the
//!   checkpoint does not name (written after the last checkpoint by a killed run), and
//!   resumes at `nextItem`. Every item is therefore in exactly one named part.
//! - A checkpoint that does not verify (its own SHA-256 over the raw `checkpoint` JSON, its
//!   format version, the replica it belongs to, or any named part's size or SHA-256) is
//!   refused with an error naming what failed, and nothing is deleted.
//!
//! # Assumptions
//! The input does not change between restarts, and only one process writes a replica folder
//! at a time (the controller runs one pod per replica).
//!
//! # Caveats
//! Resuming reads every committed part back to check its SHA-256: O(output) per restart.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::store::{OutputDir, StoreError};

/// Version of the checkpoint and manifest format.
pub const FORMAT_VERSION: u32 = 1;
/// The checkpoint's file name in the replica folder.
pub const CHECKPOINT_FILE: &str = "checkpoint.json";
/// The manifest's file name in the replica folder.
pub const MANIFEST_FILE: &str = "manifest.json";

/// A committed part file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PartRecord {
    /// File name in the replica folder, `part-NNNNN.<ext>`.
    pub name: String,
    /// Shard position of its first item (0-based).
    pub first_item: u64,
    /// Records in it.
    pub items: u64,
    /// Size in bytes.
    pub bytes: u64,
    /// SHA-256 of its bytes, lowercase hex.
    pub sha256: String,
}

/// Which replica and output a checkpoint belongs to; a resume refuses a mismatch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Identity {
    /// `--replica-index`.
    pub replica_index: u32,
    /// `--replicas`.
    pub replicas: u32,
    /// `parquet` or `jsonl`.
    pub output_format: String,
}

/// The replica's committed progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Checkpoint {
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// The replica.
    pub identity: Identity,
    /// Shard position of the first item not yet committed (= items committed).
    pub next_item: u64,
    /// Committed items whose record is an error.
    pub items_failed: u64,
    /// Committed parts, in shard order.
    pub parts: Vec<PartRecord>,
    /// When it was written (RFC 3339, UTC).
    pub updated_at: String,
}

/// Written after the last item: what the replica produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Manifest {
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// The replica.
    pub identity: Identity,
    /// Items in the shard (records written, errors included).
    pub items: u64,
    /// Records that are errors.
    pub items_failed: u64,
    /// All parts, in shard order.
    pub parts: Vec<PartRecord>,
    /// When it was written (RFC 3339, UTC).
    pub completed_at: String,
}

/// Why a checkpoint could not be written, read or trusted.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The checkpoint file is not what this worker wrote.
    #[error(
        "refusing checkpoint {path}: {reason}; nothing was deleted (inspect it, or remove the replica folder to start over)"
    )]
    Corrupt {
        /// The checkpoint file.
        path: String,
        /// What failed to verify.
        reason: String,
    },
    /// A part the checkpoint names is missing or differs from what was committed.
    #[error("refusing checkpoint {path}: part {part} {reason}; nothing was deleted")]
    PartMismatch {
        /// The checkpoint file.
        path: String,
        /// The part's name.
        part: String,
        /// What differs.
        reason: String,
    },
    /// The checkpoint belongs to another replica or output format.
    #[error(
        "refusing checkpoint {path}: it belongs to {found:?}, this worker is {expected:?}; nothing was deleted"
    )]
    WrongReplica {
        /// The checkpoint file.
        path: String,
        /// What the checkpoint says.
        found: Identity,
        /// What this worker was started as.
        expected: Identity,
    },
    /// JSON encoding failed (not expected for these types).
    #[error("failed to encode {what}: {source}")]
    Encode {
        /// The file.
        what: &'static str,
        /// The serializer's error.
        source: serde_json::Error,
    },
}

/// Lowercase hex SHA-256 of `bytes`.
#[must_use]
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Serialises a checkpoint as `{"checkpoint":<json>,"sha256":"<hex of the json's bytes>"}`.
///
/// # Errors
/// [`CheckpointError::Encode`] (not expected).
pub fn encode(cp: &Checkpoint) -> Result<Vec<u8>, CheckpointError> {
    let raw = serde_json::to_string(cp).map_err(|source| CheckpointError::Encode {
        what: CHECKPOINT_FILE,
        source,
    })?;
    let sha = sha256_hex(raw.as_bytes());
    Ok(format!("{{\"checkpoint\":{raw},\"sha256\":\"{sha}\"}}\n").into_bytes())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<'a> {
    #[serde(borrow)]
    checkpoint: &'a RawValue,
    sha256: String,
}

/// Parses and verifies a checkpoint file's bytes (`path` only names it in errors).
///
/// # Errors
/// [`CheckpointError::Corrupt`] when it is not valid JSON of the expected shape, its SHA-256
/// does not match the raw `checkpoint` bytes, or its format version is unknown.
pub fn decode(bytes: &[u8], path: &str) -> Result<Checkpoint, CheckpointError> {
    let corrupt = |reason: String| CheckpointError::Corrupt {
        path: path.to_string(),
        reason,
    };
    let text = std::str::from_utf8(bytes).map_err(|e| corrupt(format!("not UTF-8: {e}")))?;
    let env: Envelope<'_> = serde_json::from_str(text)
        .map_err(|e| corrupt(format!("not a checkpoint envelope: {e}")))?;
    let actual = sha256_hex(env.checkpoint.get().as_bytes());
    if actual != env.sha256 {
        return Err(corrupt(format!(
            "SHA-256 mismatch: the file says {}, its checkpoint hashes to {actual}",
            env.sha256
        )));
    }
    let cp: Checkpoint = serde_json::from_str(env.checkpoint.get())
        .map_err(|e| corrupt(format!("invalid checkpoint: {e}")))?;
    if cp.format_version != FORMAT_VERSION {
        return Err(corrupt(format!(
            "format version {} (this worker reads {FORMAT_VERSION})",
            cp.format_version
        )));
    }
    Ok(cp)
}

/// What [`resume`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    /// The verified checkpoint; `None` for a fresh start.
    pub checkpoint: Option<Checkpoint>,
    /// Files it deleted (parts and temp files no checkpoint names).
    pub removed: Vec<String>,
    /// Whether the manifest exists (the replica already finished).
    pub finished: bool,
}

/// Verifies the replica folder's checkpoint and cleans up what a killed run left behind.
///
/// # Errors
/// [`CheckpointError::Corrupt`], [`CheckpointError::PartMismatch`] or
/// [`CheckpointError::WrongReplica`] (nothing is deleted then); [`CheckpointError::Store`].
pub fn resume(dir: &OutputDir, expected: &Identity) -> Result<Resume, CheckpointError> {
    let path = dir.describe(CHECKPOINT_FILE);
    let checkpoint = match dir.get(CHECKPOINT_FILE)? {
        None => None,
        Some(bytes) => {
            let cp = decode(&bytes, &path)?;
            if &cp.identity != expected {
                return Err(CheckpointError::WrongReplica {
                    path,
                    found: cp.identity,
                    expected: expected.clone(),
                });
            }
            verify_parts(dir, &cp, &path)?;
            Some(cp)
        }
    };
    let named: Vec<&str> = checkpoint
        .as_ref()
        .map(|cp| cp.parts.iter().map(|p| p.name.as_str()).collect())
        .unwrap_or_default();
    let mut removed = Vec::new();
    let mut finished = false;
    for name in dir.list()? {
        if name == MANIFEST_FILE {
            finished = checkpoint.is_some();
        }
        let stray_part = name.starts_with("part-") && !named.contains(&name.as_str());
        let temp = name.starts_with('.') && name.ends_with(".tmp");
        if stray_part || temp {
            dir.delete(&name)?;
            removed.push(name);
        }
    }
    Ok(Resume {
        checkpoint,
        removed,
        finished,
    })
}

fn verify_parts(dir: &OutputDir, cp: &Checkpoint, path: &str) -> Result<(), CheckpointError> {
    let mismatch = |part: &str, reason: String| CheckpointError::PartMismatch {
        path: path.to_string(),
        part: part.to_string(),
        reason,
    };
    let mut next = 0;
    for part in &cp.parts {
        if part.first_item != next {
            return Err(mismatch(
                &part.name,
                format!(
                    "starts at item {} but the previous part ends at {next}",
                    part.first_item
                ),
            ));
        }
        next += part.items;
        let Some(bytes) = dir.get(&part.name)? else {
            return Err(mismatch(&part.name, "is missing".to_string()));
        };
        if bytes.len() as u64 != part.bytes {
            return Err(mismatch(
                &part.name,
                format!(
                    "has {} bytes, the checkpoint says {}",
                    bytes.len(),
                    part.bytes
                ),
            ));
        }
        let sha = sha256_hex(&bytes);
        if sha != part.sha256 {
            return Err(mismatch(
                &part.name,
                format!("has SHA-256 {sha}, the checkpoint says {}", part.sha256),
            ));
        }
    }
    if next != cp.next_item {
        return Err(CheckpointError::Corrupt {
            path: path.to_string(),
            reason: format!(
                "its parts hold {next} items but nextItem is {}",
                cp.next_item
            ),
        });
    }
    Ok(())
}

/// Writes `bytes` as the next part and then the checkpoint naming it (in that order).
///
/// # Errors
/// [`CheckpointError::Store`] when either write fails; the previous checkpoint then still
/// stands.
pub fn commit_part(
    dir: &OutputDir,
    cp: &mut Checkpoint,
    ext: &str,
    bytes: &[u8],
    items: u64,
    failed: u64,
) -> Result<(), CheckpointError> {
    let name = format!("part-{:05}.{ext}", cp.parts.len());
    dir.put_atomic(&name, bytes)?;
    let mut next = cp.clone();
    next.parts.push(PartRecord {
        name,
        first_item: cp.next_item,
        items,
        bytes: bytes.len() as u64,
        sha256: sha256_hex(bytes),
    });
    next.next_item += items;
    next.items_failed += failed;
    next.updated_at = now_rfc3339();
    dir.put_atomic(CHECKPOINT_FILE, &encode(&next)?)?;
    *cp = next;
    Ok(())
}

/// Writes the manifest for a finished replica.
///
/// # Errors
/// [`CheckpointError::Store`] when the write fails.
pub fn write_manifest(dir: &OutputDir, cp: &Checkpoint) -> Result<Manifest, CheckpointError> {
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        identity: cp.identity.clone(),
        items: cp.next_item,
        items_failed: cp.items_failed,
        parts: cp.parts.clone(),
        completed_at: now_rfc3339(),
    };
    let mut bytes =
        serde_json::to_vec_pretty(&manifest).map_err(|source| CheckpointError::Encode {
            what: MANIFEST_FILE,
            source,
        })?;
    bytes.push(b'\n');
    dir.put_atomic(MANIFEST_FILE, &bytes)?;
    Ok(manifest)
}

/// A fresh checkpoint at item 0.
#[must_use]
pub fn empty(identity: Identity) -> Checkpoint {
    Checkpoint {
        format_version: FORMAT_VERSION,
        identity,
        next_item: 0,
        items_failed: 0,
        parts: Vec::new(),
        updated_at: now_rfc3339(),
    }
}

/// Now, RFC 3339 in UTC with second precision.
#[must_use]
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity {
            replica_index: 1,
            replicas: 3,
            output_format: "jsonl".into(),
        }
    }

    fn dir(tmp: &tempfile::TempDir, rt: &tokio::runtime::Runtime) -> OutputDir {
        OutputDir::open(
            tmp.path().to_str().unwrap(),
            "replica-1",
            rt.handle().clone(),
        )
        .unwrap()
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    #[test]
    fn sha256_of_abc_is_the_fips_vector() {
        // FIPS 180-2, appendix B.1
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn commit_then_resume_round_trips_and_removes_strays() {
        let (tmp, rt) = (tempfile::tempdir().unwrap(), rt());
        let d = dir(&tmp, &rt);
        let mut cp = empty(identity());
        commit_part(&d, &mut cp, "jsonl", b"a\nb\n", 2, 1).unwrap();
        commit_part(&d, &mut cp, "jsonl", b"c\n", 1, 0).unwrap();
        // a killed run wrote part-00002 and a temp file but no checkpoint naming them
        d.put_atomic("part-00002.jsonl", b"d\n").unwrap();
        std::fs::write(tmp.path().join("replica-1/.checkpoint.json.tmp"), b"x").unwrap();
        let r = resume(&d, &identity()).unwrap();
        let got = r.checkpoint.unwrap();
        assert_eq!(got.next_item, 3);
        assert_eq!(got.items_failed, 1);
        assert_eq!(got.parts[1].first_item, 2);
        assert_eq!(got.parts[0].sha256, sha256_hex(b"a\nb\n"));
        assert_eq!(
            r.removed,
            vec![
                ".checkpoint.json.tmp".to_string(),
                "part-00002.jsonl".to_string()
            ]
        );
        assert!(!r.finished);
        assert_eq!(
            d.list().unwrap(),
            vec!["checkpoint.json", "part-00000.jsonl", "part-00001.jsonl"]
        );
    }

    #[test]
    fn every_flipped_byte_of_a_checkpoint_is_refused_and_nothing_deleted() {
        let (tmp, rt) = (tempfile::tempdir().unwrap(), rt());
        let d = dir(&tmp, &rt);
        let mut cp = empty(identity());
        commit_part(&d, &mut cp, "jsonl", b"a\n", 1, 0).unwrap();
        d.put_atomic("part-00001.jsonl", b"stray\n").unwrap();
        let good = d.get(CHECKPOINT_FILE).unwrap().unwrap();
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            d.put_atomic(CHECKPOINT_FILE, &bad).unwrap();
            let err = resume(&d, &identity()).expect_err(&format!("flip at byte {i} not detected"));
            assert!(err.to_string().contains("refusing checkpoint"), "{err}");
            assert!(err.to_string().contains("nothing was deleted"), "{err}");
            assert_eq!(
                d.list().unwrap().len(),
                3,
                "a file was deleted after a flip at {i}"
            );
        }
    }

    #[test]
    fn a_changed_part_is_refused() {
        let (tmp, rt) = (tempfile::tempdir().unwrap(), rt());
        let d = dir(&tmp, &rt);
        let mut cp = empty(identity());
        commit_part(&d, &mut cp, "jsonl", b"abc\n", 1, 0).unwrap();
        std::fs::write(tmp.path().join("replica-1/part-00000.jsonl"), b"abd\n").unwrap();
        let err = resume(&d, &identity()).unwrap_err().to_string();
        assert!(err.contains("part part-00000.jsonl has SHA-256"), "{err}");
        std::fs::remove_file(tmp.path().join("replica-1/part-00000.jsonl")).unwrap();
        let err = resume(&d, &identity()).unwrap_err().to_string();
        assert!(err.contains("part part-00000.jsonl is missing"), "{err}");
    }

    #[test]
    fn another_replicas_checkpoint_is_refused() {
        let (tmp, rt) = (tempfile::tempdir().unwrap(), rt());
        let d = dir(&tmp, &rt);
        let mut cp = empty(identity());
        commit_part(&d, &mut cp, "jsonl", b"a\n", 1, 0).unwrap();
        let other = Identity {
            replicas: 4,
            ..identity()
        };
        let err = resume(&d, &other).unwrap_err().to_string();
        assert!(err.contains("belongs to"), "{err}");
    }

    #[test]
    fn manifest_marks_finished() {
        let (tmp, rt) = (tempfile::tempdir().unwrap(), rt());
        let d = dir(&tmp, &rt);
        let mut cp = empty(identity());
        commit_part(&d, &mut cp, "jsonl", b"a\n", 1, 0).unwrap();
        let m = write_manifest(&d, &cp).unwrap();
        assert_eq!(m.items, 1);
        assert!(resume(&d, &identity()).unwrap().finished);
    }
}
