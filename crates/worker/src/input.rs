//! The replica's input: JSONL lines from a local path or object store, its shard, and
//! per-line parsing into items or per-item errors.
//!
//! # Sharding
//! Line `n` (1-based, counting every line of the file) belongs to replica
//! `(n - 1) mod replicas`. Each replica reads the whole file and keeps its lines, so shards
//! are disjoint, cover the file, differ in size by at most one line, and need no line count
//! up front. Lines that are empty or only whitespace are not items (no record). An item's
//! *shard position* (`seq`) is its 0-based index among its replica's items; checkpoints count
//! in shard positions.

use futures::StreamExt;
use object_store::ObjectStoreExt;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::store::{StoreError, open_uri};

/// The replica's slice of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This replica, `0..count`.
    pub index: u32,
    /// Replicas in the job, at least 1.
    pub count: u32,
}

impl Shard {
    /// Whether 1-based line `line` is this replica's.
    #[must_use]
    pub fn owns(&self, line: u64) -> bool {
        line >= 1 && (line - 1) % u64::from(self.count.max(1)) == u64::from(self.index)
    }
}

/// One line of the shard, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawItem {
    /// Shard position (0-based).
    pub seq: u64,
    /// 1-based line number in the file.
    pub line: u64,
    /// The id field's value, when configured and present (numbers as text).
    pub id: Option<String>,
    /// The text, or why the line is not a valid item.
    pub text: Result<String, String>,
}

/// Which JSON fields to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields {
    /// The field holding the text (`--text-field`).
    pub text: String,
    /// The field holding the item id (`--id-field`), optional.
    pub id: Option<String>,
}

/// Why the input could not be read (per-line problems are item errors instead).
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// Opening or reading the object failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Streaming the object failed part-way.
    #[error("failed to read input {uri}: {source}")]
    Read {
        /// The input URI.
        uri: String,
        /// The store's error.
        source: object_store::Error,
    },
}

/// Parses one non-blank line into (id, text or error message naming the line and field).
pub fn parse_line(
    line: u64,
    bytes: &[u8],
    fields: &Fields,
) -> (Option<String>, Result<String, String>) {
    let value: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => return (None, Err(format!("line {line}: not valid JSON: {e}"))),
    };
    let Value::Object(obj) = value else {
        return (None, Err(format!("line {line}: not a JSON object")));
    };
    let id = fields.id.as_ref().and_then(|f| match obj.get(f) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    });
    if let Some(f) = &fields.id
        && id.is_none()
    {
        let why = if obj.contains_key(f) {
            "must be a string or a number"
        } else {
            "is missing"
        };
        return (None, Err(format!("line {line}: field `{f}` {why}")));
    }
    let text = match obj.get(&fields.text) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(format!(
            "line {line}: field `{}` must be a string, got {}",
            fields.text,
            kind(other)
        )),
        None => Err(format!("line {line}: field `{}` is missing", fields.text)),
    };
    (id, text)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Splits a byte stream into lines (`\n`, a trailing `\r` is dropped; a last line without
/// a newline counts).
#[derive(Debug, Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Feeds a chunk; calls `emit` with each completed line.
    pub fn push(&mut self, chunk: &[u8], mut emit: impl FnMut(&[u8])) {
        let mut rest = chunk;
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            if self.pending.is_empty() {
                emit(trim_cr(&rest[..pos]));
            } else {
                self.pending.extend_from_slice(&rest[..pos]);
                let line = std::mem::take(&mut self.pending);
                emit(trim_cr(&line));
            }
            rest = &rest[pos + 1..];
        }
        self.pending.extend_from_slice(rest);
    }

    /// Ends the stream; emits the last line if it had no newline.
    pub fn finish(self, mut emit: impl FnMut(&[u8])) {
        if !self.pending.is_empty() {
            emit(trim_cr(&self.pending));
        }
    }
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Streams the shard of `uri` to `tx`, skipping shard positions below `skip` (already
/// committed). Returns the number of items in the whole shard. Stops early, returning what
/// it counted so far, when `tx` is closed.
///
/// # Errors
/// [`InputError`] when the object cannot be opened or read.
pub async fn read_shard(
    uri: &str,
    shard: Shard,
    skip: u64,
    fields: &Fields,
    tx: mpsc::Sender<RawItem>,
) -> Result<u64, InputError> {
    let mut stream = open_chunks(uri).await?;
    let mut splitter = LineSplitter::default();
    let mut state = ShardCursor {
        shard,
        skip,
        line_no: 0,
        seq: 0,
    };
    let mut ready: Vec<RawItem> = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        splitter.push(&chunk, |l| ready.extend(state.next(l, fields)));
        for item in ready.drain(..) {
            if tx.send(item).await.is_err() {
                return Ok(state.seq);
            }
        }
    }
    splitter.finish(|l| ready.extend(state.next(l, fields)));
    for item in ready.drain(..) {
        if tx.send(item).await.is_err() {
            break;
        }
    }
    Ok(state.seq)
}

/// Opens `uri` as a stream of byte chunks; open and read errors name the URI.
async fn open_chunks(
    uri: &str,
) -> Result<impl futures::Stream<Item = Result<bytes::Bytes, InputError>> + Unpin, InputError> {
    let (store, path) = open_uri(uri)?;
    let read_err = |source| InputError::Read {
        uri: uri.to_string(),
        source,
    };
    let stream = store.get(&path).await.map_err(read_err)?.into_stream();
    let uri = uri.to_string();
    Ok(stream.map(move |chunk| {
        chunk.map_err(|source| InputError::Read {
            uri: uri.clone(),
            source,
        })
    }))
}

/// Counts the items of `uri`'s shard (its owned, non-blank lines, bad ones included) without
/// parsing them: one streaming pass, run beside the pipeline so the worker can report
/// `itemsTotal` early instead of only once the reader reaches the end.
///
/// # Errors
/// [`InputError`] when the object cannot be opened or read.
pub async fn count_shard(uri: &str, shard: Shard) -> Result<u64, InputError> {
    let mut stream = open_chunks(uri).await?;
    let mut splitter = LineSplitter::default();
    let (mut line_no, mut count) = (0u64, 0u64);
    let mut tally = |l: &[u8]| {
        line_no += 1;
        if shard.owns(line_no) && !is_blank(l) {
            count += 1;
        }
    };
    while let Some(chunk) = stream.next().await {
        splitter.push(&chunk?, &mut tally);
    }
    splitter.finish(&mut tally);
    Ok(count)
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

/// Numbers lines and shard positions as lines go by.
struct ShardCursor {
    shard: Shard,
    skip: u64,
    line_no: u64,
    seq: u64,
}

impl ShardCursor {
    fn next(&mut self, bytes: &[u8], fields: &Fields) -> Option<RawItem> {
        self.line_no += 1;
        if !self.shard.owns(self.line_no) || is_blank(bytes) {
            return None;
        }
        let seq = self.seq;
        self.seq += 1;
        if seq < self.skip {
            return None;
        }
        let (id, text) = parse_line(self.line_no, bytes, fields);
        Some(RawItem {
            seq,
            line: self.line_no,
            id,
            text,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> Fields {
        Fields {
            text: "text".into(),
            id: Some("id".into()),
        }
    }

    #[test]
    fn shards_are_line_mod_replicas() {
        let s = Shard { index: 1, count: 3 };
        let owned: Vec<u64> = (1..=9).filter(|&l| s.owns(l)).collect();
        assert_eq!(owned, vec![2, 5, 8]);
        assert!(Shard { index: 0, count: 1 }.owns(7));
    }

    #[test]
    fn bad_lines_name_line_and_field() {
        let f = fields();
        assert_eq!(
            parse_line(4, br#"{"id": 7, "text": "hi"}"#, &f),
            (Some("7".into()), Ok("hi".into()))
        );
        assert_eq!(
            parse_line(5, br#"{"id": "a"}"#, &f).1,
            Err("line 5: field `text` is missing".into())
        );
        assert_eq!(
            parse_line(6, br#"{"id": "a", "text": 3}"#, &f).1,
            Err("line 6: field `text` must be a string, got a number".into())
        );
        assert_eq!(
            parse_line(7, b"[1]", &f).1,
            Err("line 7: not a JSON object".into())
        );
        assert_eq!(
            parse_line(8, br#"{"text": "x"}"#, &f).1,
            Err("line 8: field `id` is missing".into())
        );
        let (_, r) = parse_line(9, b"{not json", &f);
        assert!(r.unwrap_err().starts_with("line 9: not valid JSON: "));
    }

    #[test]
    fn splitter_handles_chunk_boundaries_crlf_and_last_line() {
        let mut lines = Vec::new();
        let mut s = LineSplitter::default();
        s.push(b"ab\r\nc", |l| lines.push(l.to_vec()));
        s.push(b"d\n\nef", |l| lines.push(l.to_vec()));
        s.finish(|l| lines.push(l.to_vec()));
        assert_eq!(
            lines,
            vec![b"ab".to_vec(), b"cd".to_vec(), b"".to_vec(), b"ef".to_vec()]
        );
    }

    #[tokio::test]
    async fn reads_a_shard_from_a_local_file_skipping_committed_items() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        let body = "{\"id\":1,\"text\":\"a\"}\n{\"id\":2,\"text\":\"b\"}\n\n{\"id\":4,\"text\":\"d\"}\n{\"id\":5}\n{\"id\":6,\"text\":\"f\"}";
        std::fs::write(&path, body).unwrap();
        // replica 0 of 2 owns lines 1, 3 (blank: not an item), 5; replica 1 owns 2, 4, 6
        let (tx, mut rx) = mpsc::channel(16);
        let uri = format!("file://{}", path.display());
        let total = read_shard(&uri, Shard { index: 0, count: 2 }, 1, &fields(), tx)
            .await
            .unwrap();
        assert_eq!(total, 2);
        let got = rx.recv().await.unwrap();
        assert_eq!(got.seq, 1);
        assert_eq!(got.line, 5);
        assert_eq!(got.text, Err("line 5: field `text` is missing".into()));
        assert!(rx.recv().await.is_none());
        let (tx, mut rx) = mpsc::channel(16);
        let total = read_shard(
            path.to_str().unwrap(),
            Shard { index: 1, count: 2 },
            0,
            &fields(),
            tx,
        )
        .await
        .unwrap();
        assert_eq!(total, 3);
        let mut lines = Vec::new();
        while let Some(i) = rx.recv().await {
            lines.push((i.seq, i.line, i.id.unwrap()));
        }
        assert_eq!(
            lines,
            vec![(0, 2, "2".into()), (1, 4, "4".into()), (2, 6, "6".into())]
        );
        // The counting pass agrees: lines 1 and 5 (line 3 is blank), and 2, 4, 6.
        assert_eq!(
            count_shard(&uri, Shard { index: 0, count: 2 })
                .await
                .unwrap(),
            2
        );
        assert_eq!(
            count_shard(&uri, Shard { index: 1, count: 2 })
                .await
                .unwrap(),
            3
        );
        assert_eq!(
            count_shard(&uri, Shard { index: 0, count: 1 })
                .await
                .unwrap(),
            5
        );
    }
}
