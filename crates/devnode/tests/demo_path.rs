//! The demo's job path on a small slice of the real corpus (the first 100 KJV verses),
//! through the real control plane, the controller, two development nodes (each with its node
//! agent's simulated GPUs and device plugin) and the TorchScript worker: apply the demo's
//! `InferenceJob` (2 replicas), wait for `Succeeded`, and check the outputs with the demo's
//! own checker (every line exactly once, agreement with sentence-transformers, a query).
//!
//! Prerequisites are built by `hack/demo.sh prereqs` (called here; cached, so seconds when
//! warm): control-plane tools, the torch venv, the worker, controller and node agent
//! binaries (dev profile), the exported model and the corpus.
//!
//! The controller is confined to this test's namespace (`--namespace`) and the job to this
//! test's nodes (`placement.nodeSelector` on a node label), so neither other tests' jobs nor
//! other nodes are involved.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use autoglm_testkit::{ChildGuard, TestNamespace, repo_root};

const LINES: usize = 100;

/// Runs `script` with bash in the checkout, its output in `log`; stopped on drop.
fn sh(script: &str, log: &Path, name: &'static str) -> ChildGuard {
    let mut command = Command::new("bash");
    command.arg("-c").arg(script).current_dir(repo_root());
    ChildGuard::spawn_logged(name, &mut command, log)
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
}

fn cache_dir() -> PathBuf {
    std::env::var_os("AUTOGLM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/open-autoglm")
        })
}

fn tails(dir: &Path) -> String {
    let mut s = String::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(30);
        s.push_str(&format!(
            "---- {}\n{}\n",
            entry.path().display(),
            lines[from..].join("\n")
        ));
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_job_path_embeds_a_corpus_slice_exactly_once() {
    let root = repo_root();
    let mut prereqs = Command::new(root.join("hack/demo.sh"));
    prereqs.arg("prereqs").stdout(Stdio::inherit());
    // The variables cargo sets for this test binary (CARGO_PKG_NAME, CARGO_MANIFEST_DIR, ...)
    // are tracked by some build scripts (ring's `rerun-if-env-changed`): left in place they
    // make the nested `cargo build` rerun them and recompile everything above ring (rustls,
    // reqwest, kube, object_store), minutes on every run.
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_MANIFEST_")
            || k.starts_with("CARGO_BIN_")
            || [
                "CARGO_CRATE_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "OUT_DIR",
            ]
            .contains(&k.as_ref())
        {
            prereqs.env_remove(&key);
        }
    }
    let status = prereqs.status().unwrap();
    assert!(status.success(), "hack/demo.sh prereqs failed");

    let ns = TestNamespace::new("demo-path").await;
    let kubeconfig = ns.kubeconfig().to_path_buf();
    let kubectl = autoglm_testkit::kubectl_path();
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    // Where `hack/demo.sh prereqs` left the binaries (it honours the same variable).
    let rel = std::env::var_os("AUTOGLM_DEMO_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("debug"));
    let model_dir = cache_dir().join("models/all-MiniLM-L6-v2");
    let corpus = cache_dir().join("corpus/kjv-nt.jsonl");

    // CRDs (idempotent; other tests may have installed them already).
    let out = Command::new(&kubectl)
        .args(["apply", "--server-side", "--force-conflicts", "-f"])
        .arg(root.join("crds"))
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl apply crds: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The corpus slice.
    let text = std::fs::read_to_string(&corpus).unwrap();
    let slice: Vec<&str> = text.lines().take(LINES).collect();
    assert_eq!(slice.len(), LINES);
    let input = tmp.path().join("input.jsonl");
    std::fs::write(&input, slice.join("\n") + "\n").unwrap();
    let output = tmp.path().join("out");

    // Two devnodes with their node agents, labelled for this test only.
    let pool = format!("pool={}", ns.name());
    let mut procs = Vec::new();
    for (n, gpus) in [
        (
            "a",
            "{ product: NVIDIA A100-SXM4-40GB, memoryMiB: 40960, count: 2 }",
        ),
        ("b", "{ product: Tesla T4, memoryMiB: 15360, count: 1 }"),
    ] {
        let node = format!("{}-{n}", ns.name());
        let gpu_file = tmp.path().join(format!("gpus-{n}.yaml"));
        std::fs::write(&gpu_file, format!("gpus:\n  - {gpus}\n")).unwrap();
        let script = format!(
            "eval \"$(hack/torch-env.sh env)\"; export KUBECONFIG='{kc}'; exec '{devnode}' \
             --node-name '{node}' --state-dir '{state}' --label '{pool}' \
             --image '*open-autoglm/*worker*={rel}/autoglm-worker' \
             --container-env 'AUTOGLM_ADMIN_ADDR=127.0.0.1:{{free-port}}' \
             --container-env AUTOGLM_THREADS=1 --container-env OMP_WAIT_POLICY=passive \
             --node-agent '{rel}/autoglm-node-agent' --node-agent-arg=--inventory=simulated \
             --node-agent-arg='--simulated-config={gpu_file}' \
             --node-agent-arg='--device-plugin-dir={{device-plugin-dir}}' \
             --node-agent-arg=--admin-addr=127.0.0.1:0",
            kc = kubeconfig.display(),
            devnode = env!("CARGO_BIN_EXE_autoglm-devnode"),
            state = tmp.path().join(&node).display(),
            rel = rel.display(),
            gpu_file = gpu_file.display(),
        );
        procs.push(sh(
            &script,
            &logs.join(format!("devnode-{n}.log")),
            "devnode",
        ));
    }
    let controller = format!(
        "export KUBECONFIG='{kc}'; exec '{rel}/autoglm-controller' --admin-addr 127.0.0.1:0 \
         --namespace '{ns}'",
        kc = kubeconfig.display(),
        rel = rel.display(),
        ns = ns.name(),
    );
    procs.push(sh(&controller, &logs.join("controller.log"), "controller"));

    // The demo's InferenceJob, with this test's paths.
    let yaml = std::fs::read_to_string(root.join("examples/demo/inferencejob.yaml"))
        .unwrap()
        .replace("@NAME@", "demo-path")
        .replace("@MODEL_DIR@", &model_dir.to_string_lossy())
        .replace("@INPUT@", &input.to_string_lossy())
        .replace("@OUTPUT@", &output.to_string_lossy())
        // Only this test's nodes (the controller's --node-selector would also filter the
        // GpuNodes, which do not carry Node labels).
        .replace(
            "    policy: spread",
            &format!(
                "    policy: spread\n    nodeSelector: {{pool: {}}}",
                ns.name()
            ),
        );
    let job_file = tmp.path().join("job.yaml");
    std::fs::write(&job_file, yaml).unwrap();
    let out = ns.kubectl(&["apply", "-f", &job_file.to_string_lossy()]);
    assert!(
        out.status.success(),
        "apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let out = ns.kubectl(&["get", "ij", "demo-path", "-o", "jsonpath={.status.phase}"]);
        let phase = String::from_utf8_lossy(&out.stdout).to_string();
        if phase == "Succeeded" {
            break;
        }
        assert!(
            phase != "Failed" && Instant::now() < deadline,
            "job phase {phase:?}\n{}\n{}",
            ns.dump(),
            tails(&logs)
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    // Both replicas ran, on development nodes of this test.
    let out = ns.kubectl(&[
        "get",
        "pods",
        "-l",
        "autoglm.io/job=demo-path",
        "-o",
        "jsonpath={range .items[*]}{.spec.nodeName} {.status.phase}{\"\\n\"}{end}",
    ]);
    let pods = String::from_utf8_lossy(&out.stdout).to_string();
    let succeeded: Vec<&str> = pods.lines().filter(|l| l.ends_with(" Succeeded")).collect();
    assert_eq!(succeeded.len(), 2, "pods:\n{pods}");
    assert!(
        succeeded.iter().all(|l| l.starts_with(ns.name())),
        "pods:\n{pods}"
    );

    // Exactly one output per input line, embeddings that agree with sentence-transformers.
    let check = format!(
        "eval \"$(hack/torch-env.sh env)\"; python hack/demo/check.py --input '{}' --output '{}' \
         --model-dir '{}' --query 'the birth of Jesus'",
        input.display(),
        output.display(),
        model_dir.display()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&check)
        .current_dir(&root)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "check.py failed:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        report.contains(&format!(
            "exactly-once: {LINES}/{LINES} lines, 0 missing, 0 duplicated, 0 errors"
        )),
        "{report}"
    );
    drop(procs);
}
