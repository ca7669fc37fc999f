//! Shared setup for the integration tests: the Python venv (hack/torch-env.sh), the exported
//! model and the corpus, made by the repository's own scripts (idempotent, cached under
//! $AUTOGLM_CACHE).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// Paths the tests use.
pub struct Assets {
    pub repo: PathBuf,
    pub python: PathBuf,
    pub model_dir: PathBuf,
    pub corpus: PathBuf,
}

impl Assets {
    pub fn model(&self) -> PathBuf {
        self.model_dir.join("model.pt")
    }
    pub fn tokenizer(&self) -> PathBuf {
        self.model_dir.join("tokenizer.json")
    }
    pub fn st_model(&self) -> PathBuf {
        self.model_dir.join("st-model")
    }
}

fn cache() -> PathBuf {
    std::env::var_os("AUTOGLM_CACHE").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/open-autoglm"),
        PathBuf::from,
    )
}

fn run_ok(cmd: &mut Command, what: &str) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("failed to start {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs hack/export_model.py and hack/corpus.py once per test binary.
pub fn assets() -> &'static Assets {
    static ASSETS: OnceLock<Assets> = OnceLock::new();
    ASSETS.get_or_init(|| {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .canonicalize()
            .unwrap();
        let venv = std::env::var_os("VIRTUAL_ENV").map_or_else(
            || {
                let out = run_ok(
                    Command::new(repo.join("hack/torch-env.sh")).arg("path"),
                    "hack/torch-env.sh path",
                );
                PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
            },
            PathBuf::from,
        );
        let python = venv.join("bin/python");
        assert!(
            python.exists(),
            "no Python venv at {}: run `make torch` (hack/torch-env.sh setup) first",
            venv.display()
        );
        let model_dir = cache().join("models/all-MiniLM-L6-v2");
        run_ok(
            Command::new(&python)
                .arg(repo.join("hack/export_model.py"))
                .arg("--out")
                .arg(&model_dir),
            "hack/export_model.py",
        );
        let out = run_ok(
            Command::new(&python).arg(repo.join("hack/corpus.py")),
            "hack/corpus.py",
        );
        let corpus = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        Assets {
            repo,
            python,
            model_dir,
            corpus,
        }
    })
}

/// The first `n` lines of the corpus.
pub fn corpus_head(n: usize) -> Vec<String> {
    std::fs::read_to_string(&assets().corpus)
        .unwrap()
        .lines()
        .take(n)
        .map(str::to_string)
        .collect()
}

/// `autoglm-worker run` with the real model and the given extra flags.
pub fn worker(input: &Path, output: &Path, extra: &[&str]) -> Command {
    let a = assets();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_autoglm-worker"));
    cmd.arg("run")
        .arg("--model")
        .arg(a.model())
        .arg("--tokenizer")
        .arg(a.tokenizer())
        .args([
            "--task",
            "embedding",
            "--device",
            "cpu",
            "--threads",
            "1",
            "--admin-addr",
            "",
        ])
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(output)
        .args(extra)
        .env("OMP_WAIT_POLICY", "passive")
        .env_remove("POD_NAME")
        .env("RUST_LOG", "warn");
    cmd
}

/// Every file under `dir` with its bytes, sorted by path.
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                out.push((p, bytes));
            }
        }
    }
    out.sort();
    out
}

/// The records of a replica folder, in part order.
pub fn records(
    replica: &Path,
    format: autoglm_worker::output::OutputFormat,
) -> Vec<autoglm_worker::output::OutputRecord> {
    let mut names: Vec<_> = std::fs::read_dir(replica)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("part-"))
        .collect();
    names.sort();
    names
        .iter()
        .flat_map(|n| {
            autoglm_worker::output::decode_part(
                format,
                autoglm_worker::model::Task::Embedding,
                &std::fs::read(replica.join(n)).unwrap(),
            )
            .unwrap()
        })
        .collect()
}
