//! Admission tests against a REAL kube-apiserver (started by `autoglm-testkit`): the CRDs
//! install, the examples are admitted, `kubectl explain` and `kubectl get` show the docs and
//! printer columns, and bad jobs are rejected at admission with a message naming the field.
//!
//! Each test uses its own namespace. The CRDs are cluster-scoped and shared with other test
//! binaries, so they are installed with server-side apply and `--force-conflicts`
//! (idempotent, safe when several processes do it at once).

use std::path::PathBuf;
use std::sync::Once;

use autoglm_testkit::{TestNamespace, kubectl, kubectl_ok, kubectl_stdin, repo_root};
use serde_json::{Value, json};

static CRDS: Once = Once::new();

/// `kubectl apply --server-side -f crds/` once per process, then wait until established.
fn install_crds() {
    CRDS.call_once(|| {
        let dir = checkout_dir("crds");
        let dir = dir.to_str().expect("checkout path is UTF-8");
        kubectl_ok(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=autoglm-crds",
            "-f",
            dir,
        ]);
        kubectl_ok(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/inferencejobs.autoglm.io",
            "crd/gpunodes.autoglm.io",
        ]);
    });
}

/// `<checkout>/<name>`, symlinks resolved (kubectl does not follow a symlinked directory).
fn checkout_dir(name: &str) -> PathBuf {
    let path = repo_root().join(name);
    std::fs::canonicalize(&path).unwrap_or(path)
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// kubectl with retries for what the API server publishes a moment after a CRD is
/// established (discovery, OpenAPI for `kubectl explain`). Bounded: 30 tries, 1 s apart.
fn kubectl_eventually(args: &[&str]) -> String {
    let mut last = String::new();
    for _ in 0..30 {
        let out = kubectl(args);
        if out.status.success() {
            return stdout(&out);
        }
        last = stderr(&out);
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    panic!("kubectl {} kept failing: {last}", args.join(" "));
}

/// A valid job; each invalid case changes one thing.
fn valid_job(name: &str) -> Value {
    json!({
        "apiVersion": "autoglm.io/v1alpha1",
        "kind": "InferenceJob",
        "metadata": {"name": name},
        "spec": {
            "model": {
                "uri": "s3://models/minilm/model.pt",
                "tokenizerUri": "s3://models/minilm/tokenizer.json",
                "task": "embedding"
            },
            "input": {"uri": "s3://data/in.jsonl", "textField": "text"},
            "output": {"uri": "s3://data/out/"},
            "replicas": 2,
            "resources": {"gpu": {"count": 1}, "cpu": "1", "memory": "2Gi"},
            "batching": {"maxBatchSize": 32, "maxDelayMs": 10},
            "retryPolicy": {"maxRetries": 3, "backoff": {"initialSeconds": 10, "maxSeconds": 300}},
            "checkpoint": {"everyItems": 1000}
        }
    })
}

/// `job` with the value at JSON pointer `path` set to `value` (`None`: removed).
fn with(mut job: Value, path: &str, value: Option<Value>) -> Value {
    let (parent, key) = path.rsplit_once('/').expect("pointer has a parent");
    let parent = job
        .pointer_mut(parent)
        .unwrap_or_else(|| panic!("no {parent} in job"));
    let obj = parent.as_object_mut().expect("parent is an object");
    match value {
        Some(v) => {
            obj.insert(key.to_owned(), v);
        }
        None => {
            obj.remove(key);
        }
    }
    job
}

#[tokio::test]
async fn examples_are_admitted_and_listed_with_printer_columns() {
    install_crds();
    let ns = TestNamespace::new("api-examples").await;
    let examples = checkout_dir("examples");
    kubectl_ok(&["apply", "-n", ns.name(), "-f", examples.to_str().unwrap()]);

    let table = kubectl_eventually(&["get", "ij", "-n", ns.name()]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "PHASE", "PROGRESS", "READY", "AGE"],
        "{table}"
    );
    for name in [
        "corpus-embed",
        "faq-embed-sliced",
        "ticket-language",
        "ticket-embed",
    ] {
        assert!(
            table.lines().any(|l| l.starts_with(name)),
            "{name} missing:\n{table}"
        );
    }

    // Status values show up in the columns (-o wide adds Items/s and Message).
    kubectl_ok(&[
        "patch",
        "ij",
        "corpus-embed",
        "-n",
        ns.name(),
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Running","progress":"1234/5000","ready":"2/4","itemsPerSecond":812.5,"message":"replica 3 waits for a GPU"}}"#,
    ]);
    let wide = kubectl_ok(&["get", "ij", "corpus-embed", "-n", ns.name(), "-o", "wide"]);
    let mut lines = wide.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME", "PHASE", "PROGRESS", "READY", "ITEMS/S", "MESSAGE", "AGE"
        ],
        "{wide}"
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        &row[..5],
        ["corpus-embed", "Running", "1234/5000", "2/4", "812.5"],
        "{wide}"
    );
    assert!(wide.contains("replica 3 waits for a GPU"), "{wide}");
}

#[tokio::test]
async fn kubectl_explain_shows_the_field_docs() {
    install_crds();
    // kubectl wraps the text at 80 columns: compare with whitespace runs collapsed.
    let flat = |s: String| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let resources = flat(kubectl_eventually(&[
        "explain",
        "inferencejob.spec.resources",
    ]));
    for needle in [
        "What each replica needs: a GPU",
        "gpu <Object>",
        "cpu <Object>",
        "memory <Object>",
        "Default \"1\"",
        "Default \"2Gi\"",
    ] {
        assert!(
            resources.contains(needle),
            "missing {needle:?} in:\n{resources}"
        );
    }
    let gpu = flat(kubectl_eventually(&[
        "explain",
        "inferencejob.spec.resources.gpu",
    ]));
    for needle in [
        "count <integer>",
        "memoryMiB <integer>",
        "computeMilli <integer>",
        "types <[]string>",
        "1000 is a whole GPU's compute",
        "as NVML names them",
        "autoglm.io/gpu-memory-gib",
    ] {
        assert!(gpu.contains(needle), "missing {needle:?} in:\n{gpu}");
    }
    let gpus = flat(kubectl_eventually(&["explain", "gpunode.status.gpus"]));
    for needle in [
        "memoryFreeMiB <integer> -required-",
        "computeCapability <string>",
        "allocations <[]Object>",
        "health <Object>",
    ] {
        assert!(gpus.contains(needle), "missing {needle:?} in:\n{gpus}");
    }
}

/// One broken rule per job; each must be rejected naming the field (and saying why).
#[tokio::test]
async fn invalid_jobs_are_rejected_with_a_message_naming_the_field() {
    install_crds();
    let ns = TestNamespace::new("api-invalid").await;
    let v = |x: Value| Some(x);
    // (name, mutated job, field the message must name, words it must contain)
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        (
            "replicas-zero",
            with(valid_job("replicas-zero"), "/spec/replicas", v(json!(0))),
            "spec.replicas",
            "greater than or equal to 1",
        ),
        (
            "gpu-count-and-slice",
            with(
                valid_job("gpu-count-and-slice"),
                "/spec/resources/gpu",
                v(json!({"count": 1, "memoryMiB": 4096})),
            ),
            "spec.resources.gpu",
            "exactly one",
        ),
        (
            "gpu-neither",
            with(
                valid_job("gpu-neither"),
                "/spec/resources/gpu",
                v(json!({})),
            ),
            "spec.resources.gpu",
            "exactly one",
        ),
        (
            "gpu-count-zero",
            with(
                valid_job("gpu-count-zero"),
                "/spec/resources/gpu",
                v(json!({"count": 0})),
            ),
            "spec.resources.gpu.count",
            "greater than or equal to 1",
        ),
        (
            "memory-mib-zero",
            with(
                valid_job("memory-mib-zero"),
                "/spec/resources/gpu",
                v(json!({"memoryMiB": 0})),
            ),
            "spec.resources.gpu.memoryMiB",
            "greater than or equal to 1",
        ),
        (
            "compute-over-1000",
            with(
                valid_job("compute-over-1000"),
                "/spec/resources/gpu",
                v(json!({"memoryMiB": 4096, "computeMilli": 1001})),
            ),
            "spec.resources.gpu.computeMilli",
            "less than or equal to 1000",
        ),
        (
            "compute-zero",
            with(
                valid_job("compute-zero"),
                "/spec/resources/gpu",
                v(json!({"memoryMiB": 4096, "computeMilli": 0})),
            ),
            "spec.resources.gpu.computeMilli",
            "greater than or equal to 1",
        ),
        (
            "compute-without-slice",
            with(
                valid_job("compute-without-slice"),
                "/spec/resources/gpu",
                v(json!({"count": 1, "computeMilli": 500})),
            ),
            "spec.resources.gpu.computeMilli",
            "only allowed with memoryMiB",
        ),
        (
            "gpu-type-empty",
            with(
                valid_job("gpu-type-empty"),
                "/spec/resources/gpu",
                v(json!({"count": 1, "types": [""]})),
            ),
            "spec.resources.gpu.types[0]",
            "at least 1 chars long",
        ),
        (
            "gpu-type-blank",
            with(
                valid_job("gpu-type-blank"),
                "/spec/resources/gpu",
                v(json!({"count": 1, "types": ["  "]})),
            ),
            "spec.resources.gpu.types[0]",
            "should match",
        ),
        (
            "gpu-type-twice",
            with(
                valid_job("gpu-type-twice"),
                "/spec/resources/gpu",
                v(json!({"count": 1, "types": ["Tesla T4", "Tesla T4"]})),
            ),
            "spec.resources.gpu.types[1]",
            "Duplicate value",
        ),
        (
            "gpu-types-too-many",
            with(
                valid_job("gpu-types-too-many"),
                "/spec/resources/gpu",
                v(
                    json!({"count": 1, "types": (0..17).map(|i| format!("GPU {i}")).collect::<Vec<_>>()}),
                ),
            ),
            "spec.resources.gpu.types",
            "must have at most 16 items",
        ),
        (
            "delay-negative",
            with(
                valid_job("delay-negative"),
                "/spec/batching/maxDelayMs",
                v(json!(-1)),
            ),
            "spec.batching.maxDelayMs",
            "greater than or equal to 0",
        ),
        (
            "p99-below-delay",
            with(
                valid_job("p99-below-delay"),
                "/spec/batching",
                v(json!({"maxDelayMs": 50, "targetP99LatencyMs": 20})),
            ),
            "spec.batching.targetP99LatencyMs",
            "at least maxDelayMs",
        ),
        (
            "backoff-initial-over-max",
            with(
                valid_job("backoff-initial-over-max"),
                "/spec/retryPolicy/backoff",
                v(json!({"initialSeconds": 600, "maxSeconds": 60})),
            ),
            "spec.retryPolicy.backoff.initialSeconds",
            "less than or equal to maxSeconds",
        ),
        (
            "depends-on-self",
            with(
                valid_job("depends-on-self"),
                "/spec/dependsOn",
                v(json!(["a", "depends-on-self"])),
            ),
            "spec.dependsOn",
            "cannot depend on itself",
        ),
        (
            "depends-on-bad-name",
            with(
                valid_job("depends-on-bad-name"),
                "/spec/dependsOn",
                v(json!(["Step_One"])),
            ),
            "spec.dependsOn[0]",
            "should match",
        ),
        (
            "depends-on-duplicate",
            with(
                valid_job("depends-on-duplicate"),
                "/spec/dependsOn",
                v(json!(["a", "a"])),
            ),
            "spec.dependsOn[1]",
            "Duplicate value",
        ),
        (
            "deadline-not-rfc3339",
            with(
                valid_job("deadline-not-rfc3339"),
                "/spec/deadline",
                v(json!("next tuesday")),
            ),
            "spec.deadline",
            "date-time",
        ),
        (
            "model-uri-empty",
            with(
                valid_job("model-uri-empty"),
                "/spec/model/uri",
                v(json!("")),
            ),
            "spec.model.uri",
            "must be a URI with scheme",
        ),
        (
            "input-uri-bad-scheme",
            with(
                valid_job("input-uri-bad-scheme"),
                "/spec/input/uri",
                v(json!("ftp://host/in.jsonl")),
            ),
            "spec.input.uri",
            "must be a URI with scheme",
        ),
        (
            "tokenizer-uri-no-scheme",
            with(
                valid_job("tokenizer-uri-no-scheme"),
                "/spec/model/tokenizerUri",
                v(json!("/models/t.json")),
            ),
            "spec.model.tokenizerUri",
            "must be a URI with scheme",
        ),
        (
            "task-unknown",
            with(
                valid_job("task-unknown"),
                "/spec/model/task",
                v(json!("translation")),
            ),
            "spec.model.task",
            "Unsupported value",
        ),
        (
            "labels-without-classification",
            with(
                valid_job("labels-without-classification"),
                "/spec/model/labels",
                v(json!(["a", "b"])),
            ),
            "spec.model.labels",
            "only allowed when task is classification",
        ),
        (
            "output-format-csv",
            with(
                valid_job("output-format-csv"),
                "/spec/output/format",
                v(json!("csv")),
            ),
            "spec.output.format",
            "Unsupported value",
        ),
        (
            "input-format-csv",
            with(
                valid_job("input-format-csv"),
                "/spec/input/format",
                v(json!("csv")),
            ),
            "spec.input.format",
            "Unsupported value",
        ),
        (
            "policy-unknown",
            with(
                valid_job("policy-unknown"),
                "/spec/placement",
                v(json!({"policy": "random"})),
            ),
            "spec.placement.policy",
            "Unsupported value",
        ),
        (
            "priority-and-class",
            with(
                with(
                    valid_job("priority-and-class"),
                    "/spec/priority",
                    v(json!(10)),
                ),
                "/spec/priorityClassName",
                v(json!("high")),
            ),
            "spec.priorityClassName",
            "either priority or priorityClassName",
        ),
        (
            "checkpoint-empty",
            with(
                valid_job("checkpoint-empty"),
                "/spec/checkpoint",
                v(json!({})),
            ),
            "spec.checkpoint",
            "everyItems, everySeconds or both",
        ),
        (
            "max-failed-negative",
            with(
                valid_job("max-failed-negative"),
                "/spec/maxFailedItems",
                v(json!(-1)),
            ),
            "spec.maxFailedItems",
            "greater than or equal to 0",
        ),
        (
            "retries-over-100",
            with(
                valid_job("retries-over-100"),
                "/spec/retryPolicy/maxRetries",
                v(json!(101)),
            ),
            "spec.retryPolicy.maxRetries",
            "less than or equal to 100",
        ),
        (
            "model-missing",
            with(valid_job("model-missing"), "/spec/model", None),
            "spec.model",
            "Required value",
        ),
        (
            "batch-size-zero",
            with(
                valid_job("batch-size-zero"),
                "/spec/batching/maxBatchSize",
                v(json!(0)),
            ),
            "spec.batching.maxBatchSize",
            "greater than or equal to 1",
        ),
    ];
    assert!(cases.len() >= 15);

    // Sanity: the base job itself is admitted (server-side dry run).
    let base = valid_job("base").to_string();
    let out = kubectl_stdin(
        &["create", "--dry-run=server", "-n", ns.name(), "-f", "-"],
        &base,
    );
    assert!(
        out.status.success(),
        "the valid base job was rejected: {}",
        stderr(&out)
    );

    let mut failures = Vec::new();
    for (name, job, field, words) in &cases {
        let out = kubectl_stdin(&["create", "-n", ns.name(), "-f", "-"], &job.to_string());
        let err = stderr(&out);
        if out.status.success() {
            failures.push(format!(
                "{name}: was ADMITTED, expected rejection naming {field}"
            ));
            continue;
        }
        // The API server prefixes each cause with the field path, e.g.
        // `spec.replicas: Invalid value: 0: ...`.
        let names_field = err.contains(&format!("{field}: ")) || err.contains(&format!("{field}:"));
        if !(names_field && err.contains(words)) {
            failures.push(format!(
                "{name}: expected {field:?} and {words:?} in: {}",
                err.trim()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn immutable_fields_are_rejected_on_update() {
    install_crds();
    let ns = TestNamespace::new("api-immutable").await;
    let job = valid_job("frozen").to_string();
    let out = kubectl_stdin(&["create", "-n", ns.name(), "-f", "-"], &job);
    assert!(out.status.success(), "create failed: {}", stderr(&out));

    let patch = |p: &str| {
        kubectl(&[
            "patch",
            "ij",
            "frozen",
            "-n",
            ns.name(),
            "--type=merge",
            "-p",
            p,
        ])
    };
    for (p, field, words) in [
        (
            r#"{"spec":{"replicas":3}}"#,
            "spec.replicas",
            "replicas is immutable",
        ),
        (
            r#"{"spec":{"model":{"uri":"s3://models/other.pt"}}}"#,
            "spec.model",
            "model is immutable",
        ),
        (
            r#"{"spec":{"input":{"textField":"body"}}}"#,
            "spec.input",
            "input is immutable",
        ),
    ] {
        let out = patch(p);
        let err = stderr(&out);
        assert!(!out.status.success(), "patch {p} was admitted");
        assert!(
            err.contains(&format!("{field}: ")) && err.contains(words),
            "patch {p}: {err}"
        );
    }

    // Mutable fields still change.
    let out = patch(r#"{"spec":{"suspend":true,"batching":{"maxBatchSize":64},"priority":5}}"#);
    assert!(
        out.status.success(),
        "mutable patch rejected: {}",
        stderr(&out)
    );
    let got = kubectl_ok(&[
        "get",
        "ij",
        "frozen",
        "-n",
        ns.name(),
        "-o",
        "jsonpath={.spec.suspend} {.spec.batching.maxBatchSize} {.spec.replicas}",
    ]);
    assert_eq!(got, "true 64 2");
}

#[tokio::test]
async fn server_fills_in_schema_defaults() {
    install_crds();
    let ns = TestNamespace::new("api-defaults").await;
    let minimal = json!({
        "apiVersion": "autoglm.io/v1alpha1",
        "kind": "InferenceJob",
        "metadata": {"name": "minimal"},
        "spec": {
            "model": {"uri": "file:///m.pt", "tokenizerUri": "file:///t.json", "task": "embedding"},
            "input": {"uri": "file:///in.jsonl"},
            "output": {"uri": "file:///out/"}
        }
    });
    let out = kubectl_stdin(
        &["create", "-n", ns.name(), "-f", "-", "-o", "json"],
        &minimal.to_string(),
    );
    assert!(out.status.success(), "create failed: {}", stderr(&out));
    let stored: Value = serde_json::from_slice(&out.stdout).unwrap();
    let spec = &stored["spec"];
    assert_eq!(spec["replicas"], 1);
    assert_eq!(spec["resources"]["gpu"], json!({"count": 1}));
    assert_eq!(spec["resources"]["cpu"], "1");
    assert_eq!(spec["resources"]["memory"], "2Gi");
    assert_eq!(
        spec["batching"],
        json!({"maxBatchSize": 32, "maxDelayMs": 10})
    );
    assert_eq!(spec["input"]["format"], "jsonl");
    assert_eq!(spec["input"]["textField"], "text");
    assert_eq!(spec["output"]["format"], "parquet");
    assert_eq!(
        spec["retryPolicy"],
        json!({"maxRetries": 3, "backoff": {"initialSeconds": 10, "maxSeconds": 300}})
    );
    assert_eq!(
        spec["checkpoint"],
        json!({"everyItems": 1000, "everySeconds": 60})
    );
    assert_eq!(spec["placement"]["policy"], "binpack");
    assert_eq!(spec["suspend"], false);
    assert_eq!(spec["maxFailedItems"], 0);
    assert_eq!(
        spec["workerImage"],
        autoglm_api::wellknown::DEFAULT_WORKER_IMAGE
    );
    // The stored object parses into the Rust type with the same defaults.
    let job: autoglm_api::InferenceJob = serde_json::from_value(stored).unwrap();
    assert_eq!(job.spec.replicas, 1);
}

#[tokio::test]
async fn gpunode_is_cluster_scoped_with_printer_columns() {
    install_crds();
    // Cluster-scoped: a unique name per run so concurrent runs do not collide.
    let ns = TestNamespace::new("api-gpunode").await;
    let name = format!("sim-{}", ns.name());
    let node = json!({
        "apiVersion": "autoglm.io/v1alpha1",
        "kind": "GpuNode",
        "metadata": {"name": name},
        "spec": {"unschedulable": true}
    });
    let out = kubectl_stdin(&["create", "-f", "-"], &node.to_string());
    assert!(out.status.success(), "create failed: {}", stderr(&out));
    let status = json!({"status": {
    "source": "simulated", "heartbeatTime": "2026-11-30T09:00:00Z", "agentVersion": "0.1.0",
    "gpuCount": 2, "product": "NVIDIA-H100-80GB-HBM3", "freeMemoryMiB": 150000,
    "gpus": [
        {"index": 0, "uuid": "SIM-0", "productName": "NVIDIA H100 80GB HBM3",
         "memoryTotalMiB": 81559, "memoryUsedMiB": 6559, "memoryFreeMiB": 75000,
         "computeCapability": "9.0", "migMode": "Disabled", "health": {"status": "Healthy"},
         "allocations": [{"namespace": "ns", "pod": "p", "memoryMiB": 6144, "computeMilli": 250}]},
        {"index": 1, "uuid": "SIM-1", "productName": "NVIDIA H100 80GB HBM3",
         "memoryTotalMiB": 81559, "memoryUsedMiB": 6559, "memoryFreeMiB": 75000,
         "health": {"status": "Unhealthy", "reason": "XID 79"}}
    ]}});
    kubectl_ok(&[
        "patch",
        "gpunode",
        &name,
        "--subresource=status",
        "--type=merge",
        "-p",
        &status.to_string(),
    ]);
    let table = kubectl_eventually(&["get", "gn", &name]);
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    assert!(
        header.split_whitespace().collect::<Vec<_>>()
            == [
                "NAME",
                "GPUS",
                "PRODUCT",
                "FREE",
                "MIB",
                "SOURCE",
                "HEARTBEAT",
                "AGE"
            ],
        "{table}"
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        &row[..5],
        [
            name.as_str(),
            "2",
            "NVIDIA-H100-80GB-HBM3",
            "150000",
            "simulated"
        ],
        "{table}"
    );
    let stored: autoglm_api::GpuNode =
        serde_json::from_str(&kubectl_ok(&["get", "gpunode", &name, "-o", "json"])).unwrap();
    let gpus = &stored.status.unwrap().gpus;
    assert_eq!(gpus[1].health.status, autoglm_api::HealthStatus::Unhealthy);
    assert_eq!(gpus[0].allocations[0].compute_milli, 250);
    kubectl_ok(&["delete", "gpunode", &name, "--wait=false"]);
}
