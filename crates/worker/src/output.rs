//! Output records and their part-file encodings (Parquet through arrow-rs, or JSONL).
//!
//! One record per input item, in shard order:
//!
//! | column      | Parquet type          | JSONL key   | when                                   |
//! |-------------|-----------------------|-------------|----------------------------------------|
//! | `line`      | UInt64, not null      | `line`      | always: 1-based line in the input file |
//! | `id`        | Utf8, nullable        | `id`        | with `--id-field` (numbers as text)    |
//! | `embedding` | List<Float32>         | `embedding` | task `embedding`, item succeeded       |
//! | `label`     | Utf8                  | `label`     | task `classification`, item succeeded  |
//! | `scores`    | List<Float32>         | `scores`    | task `classification`, item succeeded  |
//! | `error`     | Utf8, nullable        | `error`     | the item failed (bad JSON, no field)   |

#[cfg(feature = "parquet")]
use std::sync::Arc;

#[cfg(feature = "parquet")]
use arrow::array::{ArrayRef, Float32Builder, ListBuilder, StringBuilder, UInt64Builder};
#[cfg(feature = "parquet")]
use arrow::datatypes::{DataType, Field, Schema};
#[cfg(feature = "parquet")]
use arrow::record_batch::RecordBatch;
#[cfg(feature = "parquet")]
use parquet::arrow::ArrowWriter;
#[cfg(feature = "parquet")]
use parquet::basic::Compression;
#[cfg(feature = "parquet")]
use parquet::file::properties::WriterProperties;
use serde_json::Value;

use crate::model::{Prediction, Task};

/// The result for one item.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputRecord {
    /// 1-based line number in the input file.
    pub line: u64,
    /// The item's id (`--id-field`), if any.
    pub id: Option<String>,
    /// The prediction, or why the item failed.
    pub result: Result<Prediction, String>,
}

/// Part file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Apache Parquet (snappy), one row group per part.
    Parquet,
    /// One JSON object per line.
    Jsonl,
}

impl OutputFormat {
    /// The file extension (and the name in checkpoints).
    #[must_use]
    pub fn ext(self) -> &'static str {
        match self {
            Self::Parquet => "parquet",
            Self::Jsonl => "jsonl",
        }
    }
}

/// Why a part could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// Arrow or Parquet failed.
    #[error("failed to encode a {format} part: {message}")]
    Encode {
        /// The format.
        format: &'static str,
        /// The library's message.
        message: String,
    },
}

/// Encodes `records` as one part file.
///
/// # Errors
/// [`EncodeError`] when Arrow/Parquet rejects the data (not expected).
pub fn encode_part(
    format: OutputFormat,
    task: Task,
    records: &[OutputRecord],
) -> Result<Vec<u8>, EncodeError> {
    match format {
        OutputFormat::Jsonl => Ok(encode_jsonl(records)),
        OutputFormat::Parquet => {
            encode_parquet(task, records).map_err(|message| EncodeError::Encode {
                format: "parquet",
                message,
            })
        }
    }
}

#[cfg(not(feature = "parquet"))]
fn encode_parquet(_: Task, _: &[OutputRecord]) -> Result<Vec<u8>, String> {
    Err(NO_PARQUET.to_string())
}

#[cfg(not(feature = "parquet"))]
fn decode_parquet(_: Task, _: &[u8]) -> Result<Vec<OutputRecord>, String> {
    Err(NO_PARQUET.to_string())
}

#[cfg(not(feature = "parquet"))]
const NO_PARQUET: &str = "this autoglm-worker was built without the `parquet` feature";

#[derive(serde::Serialize)]
struct JsonRecord<'a> {
    line: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    embedding: Option<&'a [f32]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scores: Option<&'a [f32]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

/// One record as a JSON line without its newline; floats in their shortest f32 form.
#[must_use]
pub fn record_json(r: &OutputRecord) -> String {
    let mut j = JsonRecord {
        line: r.line,
        id: r.id.as_deref(),
        embedding: None,
        label: None,
        scores: None,
        error: None,
    };
    match &r.result {
        Ok(Prediction::Embedding(v)) => j.embedding = Some(v),
        Ok(Prediction::Classification { label, scores }) => {
            j.label = Some(label);
            j.scores = Some(scores);
        }
        Err(e) => j.error = Some(e),
    }
    // Serialising plain strings, numbers and slices cannot fail.
    serde_json::to_string(&j).unwrap_or_default()
}

fn encode_jsonl(records: &[OutputRecord]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        out.extend(record_json(r).into_bytes());
        out.push(b'\n');
    }
    out
}

/// The Parquet schema for a task.
#[cfg(feature = "parquet")]
#[must_use]
pub fn schema(task: Task) -> Schema {
    let list = || DataType::List(Arc::new(Field::new("item", DataType::Float32, false)));
    let mut fields = vec![
        Field::new("line", DataType::UInt64, false),
        Field::new("id", DataType::Utf8, true),
    ];
    match task {
        Task::Embedding => fields.push(Field::new("embedding", list(), true)),
        Task::Classification => {
            fields.push(Field::new("label", DataType::Utf8, true));
            fields.push(Field::new("scores", list(), true));
        }
    }
    fields.push(Field::new("error", DataType::Utf8, true));
    Schema::new(fields)
}

#[cfg(feature = "parquet")]
fn encode_parquet(task: Task, records: &[OutputRecord]) -> Result<Vec<u8>, String> {
    let schema = Arc::new(schema(task));
    let mut line = UInt64Builder::with_capacity(records.len());
    let mut id = StringBuilder::new();
    let mut label = StringBuilder::new();
    let mut error = StringBuilder::new();
    let item = Field::new("item", DataType::Float32, false);
    let mut vectors = ListBuilder::new(Float32Builder::new()).with_field(Arc::new(item));
    for r in records {
        line.append_value(r.line);
        id.append_option(r.id.as_deref());
        match &r.result {
            Ok(Prediction::Embedding(v)) => {
                vectors.values().append_slice(v);
                vectors.append(true);
                label.append_null();
                error.append_null();
            }
            Ok(Prediction::Classification { label: l, scores }) => {
                vectors.values().append_slice(scores);
                vectors.append(true);
                label.append_value(l);
                error.append_null();
            }
            Err(e) => {
                vectors.append(false);
                label.append_null();
                error.append_value(e);
            }
        }
    }
    let mut columns: Vec<ArrayRef> = vec![Arc::new(line.finish()), Arc::new(id.finish())];
    match task {
        Task::Embedding => columns.push(Arc::new(vectors.finish())),
        Task::Classification => {
            columns.push(Arc::new(label.finish()));
            columns.push(Arc::new(vectors.finish()));
        }
    }
    columns.push(Arc::new(error.finish()));
    let batch = RecordBatch::try_new(schema.clone(), columns).map_err(|e| e.to_string())?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut buf = Vec::new();
    let mut writer =
        ArrowWriter::try_new(&mut buf, schema, Some(props)).map_err(|e| e.to_string())?;
    writer.write(&batch).map_err(|e| e.to_string())?;
    writer.close().map_err(|e| e.to_string())?;
    Ok(buf)
}

/// Reads a part back into records (tests, the bench, and the exactly-once check).
///
/// # Errors
/// A message when the bytes are not a part of this format.
pub fn decode_part(
    format: OutputFormat,
    task: Task,
    bytes: &[u8],
) -> Result<Vec<OutputRecord>, String> {
    match format {
        OutputFormat::Jsonl => bytes
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                let v: Value = serde_json::from_slice(l).map_err(|e| e.to_string())?;
                record_from_json(&v)
            })
            .collect(),
        OutputFormat::Parquet => decode_parquet(task, bytes),
    }
}

fn record_from_json(v: &Value) -> Result<OutputRecord, String> {
    let line = v["line"].as_u64().ok_or("record without line")?;
    let id = v.get("id").and_then(Value::as_str).map(str::to_string);
    let floats = |key: &str| -> Option<Vec<f32>> {
        v.get(key)?.as_array().map(|a| {
            a.iter()
                .filter_map(Value::as_f64)
                .map(|x| x as f32)
                .collect()
        })
    };
    let result = if let Some(e) = v.get("error").and_then(Value::as_str) {
        Err(e.to_string())
    } else if let Some(e) = floats("embedding") {
        Ok(Prediction::Embedding(e))
    } else {
        let label = v["label"]
            .as_str()
            .ok_or("record without a result")?
            .to_string();
        Ok(Prediction::Classification {
            label,
            scores: floats("scores").unwrap_or_default(),
        })
    };
    Ok(OutputRecord { line, id, result })
}

#[cfg(feature = "parquet")]
fn decode_parquet(task: Task, bytes: &[u8]) -> Result<Vec<OutputRecord>, String> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Float32Type, UInt64Type};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::copy_from_slice(bytes))
        .and_then(|b| b.build())
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| e.to_string())?;
        let col = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or(format!("no column {name}"))
        };
        let line = col("line")?.as_primitive::<UInt64Type>().clone();
        let id = col("id")?.as_string::<i32>().clone();
        let error = col("error")?.as_string::<i32>().clone();
        let vec_col = match task {
            Task::Embedding => "embedding",
            Task::Classification => "scores",
        };
        let vectors = col(vec_col)?.as_list::<i32>().clone();
        let labels = match task {
            Task::Classification => Some(col("label")?.as_string::<i32>().clone()),
            Task::Embedding => None,
        };
        for i in 0..batch.num_rows() {
            let result = if error.is_valid(i) {
                Err(error.value(i).to_string())
            } else {
                let v = vectors.value(i);
                let v = v.as_primitive::<Float32Type>().values().to_vec();
                match &labels {
                    None => Ok(Prediction::Embedding(v)),
                    Some(l) => Ok(Prediction::Classification {
                        label: l.value(i).to_string(),
                        scores: v,
                    }),
                }
            };
            out.push(OutputRecord {
                line: line.value(i),
                id: id.is_valid(i).then(|| id.value(i).to_string()),
                result,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records() -> Vec<OutputRecord> {
        vec![
            OutputRecord {
                line: 1,
                id: Some("a".into()),
                result: Ok(Prediction::Embedding(vec![0.5, -0.25, 1.0e-7])),
            },
            OutputRecord {
                line: 3,
                id: None,
                result: Err("line 3: field `text` is missing".into()),
            },
        ]
    }

    #[test]
    fn jsonl_lines_are_exact() {
        let bytes = encode_part(OutputFormat::Jsonl, Task::Embedding, &records()).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert_eq!(
            text,
            "{\"line\":1,\"id\":\"a\",\"embedding\":[0.5,-0.25,1e-7]}\n{\"line\":3,\"error\":\"line 3: field `text` is missing\"}\n"
        );
    }

    #[cfg(feature = "parquet")]
    #[test]
    fn parquet_and_jsonl_round_trip_bit_exact() {
        for format in [OutputFormat::Parquet, OutputFormat::Jsonl] {
            let bytes = encode_part(format, Task::Embedding, &records()).unwrap();
            assert_eq!(
                decode_part(format, Task::Embedding, &bytes).unwrap(),
                records(),
                "{format:?}"
            );
        }
        let cls = vec![OutputRecord {
            line: 2,
            id: Some("7".into()),
            result: Ok(Prediction::Classification {
                label: "pos".into(),
                scores: vec![0.25, 0.75],
            }),
        }];
        let bytes = encode_part(OutputFormat::Parquet, Task::Classification, &cls).unwrap();
        assert_eq!(
            decode_part(OutputFormat::Parquet, Task::Classification, &bytes).unwrap(),
            cls
        );
    }
}
