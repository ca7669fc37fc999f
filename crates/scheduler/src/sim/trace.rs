//! Loading the Alibaba GPU-sharing trace ("openb") node and pod lists.
//!
//! # Source
//! Column meanings and units: `alibaba/clusterdata` `cluster-trace-gpu-v2023/README.md`
//! (see `../shared/data/alibaba-openb.md` in this workspace).

use std::io::Read;
use std::path::Path;

use crate::model::{GpuRequest, NodeState, PodRequest};

/// Errors loading a trace file.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The file could not be opened or read.
    #[error("failed to read {path}: {source}")]
    Read {
        /// File path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The CSV is malformed.
    #[error("failed to parse {path}: {source}")]
    Csv {
        /// File path.
        path: String,
        /// Cause.
        source: csv::Error,
    },
    /// A required column is missing.
    #[error("failed to load {path}: missing column {column:?} (header: {header})")]
    MissingColumn {
        /// File path.
        path: String,
        /// Column name.
        column: String,
        /// The header found.
        header: String,
    },
    /// A value breaks a rule.
    #[error("failed to load {path} line {line}: column {column} {rule}")]
    BadValue {
        /// File path.
        path: String,
        /// 1-based line number.
        line: u64,
        /// Column name.
        column: String,
        /// The rule broken.
        rule: String,
    },
}

/// GPU memory per GPU model in MiB, for node lists that do not carry it.
///
/// # Source
/// NVIDIA datasheets: Tesla P100 16 GB, Tesla T4 16 GB, V100 16/32 GB, A10 24 GB. `G2`/`G3`
/// are Alibaba's undisclosed codes: 0 MiB, so only requests without GPU MiB land there.
pub fn gpu_mem_mib(model: &str) -> u64 {
    match model {
        "P100" | "T4" | "V100M16" => 16 * 1024,
        "V100M32" => 32 * 1024,
        "A10" => 24 * 1024,
        _ => 0,
    }
}

struct Table {
    path: String,
    header: Vec<String>,
    rows: Vec<csv::StringRecord>,
}

fn read_table(path: &Path) -> Result<Table, TraceError> {
    let shown = path.display().to_string();
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .map_err(|source| TraceError::Read {
            path: shown.clone(),
            source,
        })?;
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let header = reader
        .headers()
        .map_err(|source| TraceError::Csv {
            path: shown.clone(),
            source,
        })?
        .iter()
        .map(str::to_string)
        .collect();
    let rows = reader
        .records()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TraceError::Csv {
            path: shown.clone(),
            source,
        })?;
    Ok(Table {
        path: shown,
        header,
        rows,
    })
}

impl Table {
    fn col(&self, name: &str) -> Result<usize, TraceError> {
        self.header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| TraceError::MissingColumn {
                path: self.path.clone(),
                column: name.into(),
                header: self.header.join(","),
            })
    }
    fn num(&self, row: usize, col: usize) -> Result<u64, TraceError> {
        let cell = self.rows[row].get(col).unwrap_or("");
        cell.parse::<u64>().map_err(|_| TraceError::BadValue {
            path: self.path.clone(),
            line: row as u64 + 2,
            column: self.header[col].clone(),
            rule: format!("must be a non-negative integer, got {cell:?}"),
        })
    }
}

/// Load a node list with columns `sn,cpu_milli,memory_mib,gpu,model` (GPU memory from
/// [`gpu_mem_mib`]).
///
/// # Errors
/// [`TraceError`] naming the file, line and column.
pub fn load_nodes(path: &Path) -> Result<Vec<NodeState>, TraceError> {
    let t = read_table(path)?;
    let (sn, cpu, mem, gpu, model) = (
        t.col("sn")?,
        t.col("cpu_milli")?,
        t.col("memory_mib")?,
        t.col("gpu")?,
        t.col("model")?,
    );
    let mut nodes = Vec::with_capacity(t.rows.len());
    for i in 0..t.rows.len() {
        let m = t.rows[i].get(model).unwrap_or("").to_string();
        let gpus = t.num(i, gpu)? as usize;
        let mut node = NodeState::new(
            t.rows[i].get(sn).unwrap_or(""),
            t.num(i, cpu)?,
            t.num(i, mem)?,
            gpus,
            &m,
            gpu_mem_mib(&m),
        );
        if !m.is_empty() && gpus > 0 {
            node.labels.insert("gpu-model".into(), m);
        }
        nodes.push(node);
    }
    Ok(nodes)
}

/// The GPU types of a `gpu_spec` value (`|`-separated): trimmed, without empty names, sorted
/// and without repeats, as the controller keeps `resources.gpu.types` (the published lists
/// repeat some, e.g. `V100M16|V100M32|V100M32`).
pub fn gpu_type_set(spec: &str) -> Vec<String> {
    let mut types: Vec<String> = spec
        .split('|')
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect();
    types.sort();
    types.dedup();
    types
}

/// Load a pod list with at least `name,cpu_milli,memory_mib,num_gpu,gpu_milli`; an optional
/// `gpu_spec` column (`|`-separated GPU types, empty for any; kept sorted and without
/// repeats) is honoured; other columns
/// (qos, phase, times) are ignored.
///
/// # Errors
/// [`TraceError`] naming the file, line and column (e.g. `gpu_milli` over 1000).
pub fn load_pods(path: &Path) -> Result<Vec<PodRequest>, TraceError> {
    let t = read_table(path)?;
    let (name, cpu, mem, ngpu, milli) = (
        t.col("name")?,
        t.col("cpu_milli")?,
        t.col("memory_mib")?,
        t.col("num_gpu")?,
        t.col("gpu_milli")?,
    );
    let spec = t.col("gpu_spec").ok();
    let mut pods = Vec::with_capacity(t.rows.len());
    for i in 0..t.rows.len() {
        let gpu = GpuRequest::from_trace(t.num(i, ngpu)? as u32, t.num(i, milli)? as u32).map_err(
            |e| TraceError::BadValue {
                path: t.path.clone(),
                line: i as u64 + 2,
                column: "gpu_milli".into(),
                rule: e.to_string(),
            },
        )?;
        let mut p = PodRequest::new(
            t.rows[i].get(name).unwrap_or(""),
            t.num(i, cpu)?,
            t.num(i, mem)?,
            gpu,
        );
        if let Some(c) = spec {
            let s = t.rows[i].get(c).unwrap_or("").trim();
            if !s.is_empty() && !s.eq_ignore_ascii_case("nan") && gpu != GpuRequest::None {
                p.gpu_types = gpu_type_set(s);
            }
        }
        pods.push(p);
    }
    Ok(pods)
}
