//! Offline tests: every example parses into the Rust types and round-trips through YAML
//! unchanged; defaults are the documented ones; the committed CRD YAML is what the code
//! generates.

use std::path::{Path, PathBuf};

use autoglm_api::{
    Backoff, BatchingSpec, CheckpointSpec, GpuRequest, InferenceJob, InputFormat, OutputFormat,
    PlacementPolicy,
};
use serde::Deserialize as _;
use serde_yaml::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/api has two ancestors")
        .to_path_buf()
}

/// Every YAML document of every file directly under examples/, with its file name.
/// (Subfolders hold templates filled in by scripts, e.g. examples/demo for `make demo`.)
fn example_documents() -> Vec<(String, Value)> {
    let dir = repo_root().join("examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("failed to read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 3,
        "expected at least 3 examples, found {files:?}"
    );
    let mut docs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = Value::deserialize(doc).unwrap();
            if !value.is_null() {
                docs.push((
                    file.file_name().unwrap().to_string_lossy().into_owned(),
                    value,
                ));
            }
        }
    }
    docs
}

/// True when every key and value of `original` appears in `reserialized` (which may have
/// more: the defaults).
fn is_subset(original: &Value, reserialized: &Value, path: &str, errors: &mut Vec<String>) {
    match (original, reserialized) {
        (Value::Mapping(a), Value::Mapping(b)) => {
            for (k, v) in a {
                let key = k.as_str().unwrap_or("?");
                match b.get(k) {
                    Some(w) => is_subset(v, w, &format!("{path}.{key}"), errors),
                    None => errors.push(format!("{path}.{key} was dropped")),
                }
            }
        }
        (Value::Sequence(a), Value::Sequence(b)) if a.len() == b.len() => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                is_subset(v, w, &format!("{path}[{i}]"), errors);
            }
        }
        (a, b) if a == b => {}
        (a, b) => errors.push(format!("{path}: {a:?} became {b:?}")),
    }
}

#[test]
fn every_example_round_trips_through_the_rust_types() {
    let docs = example_documents();
    // 3 files, the pipeline holding two jobs.
    assert_eq!(
        docs.len(),
        4,
        "documents: {:?}",
        docs.iter().map(|d| &d.0).collect::<Vec<_>>()
    );
    for (file, original) in docs {
        let job: InferenceJob = serde_yaml::from_value(original.clone())
            .unwrap_or_else(|e| panic!("{file}: failed to parse as InferenceJob: {e}"));
        let first = serde_yaml::to_string(&job).unwrap();
        let again: InferenceJob = serde_yaml::from_str(&first).unwrap();
        assert_eq!(
            again, job,
            "{file}: YAML -> Rust -> YAML -> Rust changed the value"
        );
        let second = serde_yaml::to_string(&again).unwrap();
        assert_eq!(second, first, "{file}: serialization is not stable");

        let mut errors = Vec::new();
        is_subset(
            &original,
            &serde_yaml::from_str(&first).unwrap(),
            "",
            &mut errors,
        );
        assert!(
            errors.is_empty(),
            "{file}: fields lost or changed: {errors:#?}"
        );
    }
}

#[test]
fn examples_use_what_they_say() {
    let docs = example_documents();
    let jobs: Vec<(String, InferenceJob)> = docs
        .into_iter()
        .map(|(f, v)| (f, serde_yaml::from_value(v).unwrap()))
        .collect();
    let by_name = |n: &str| {
        &jobs
            .iter()
            .find(|(_, j)| j.metadata.name.as_deref() == Some(n))
            .unwrap()
            .1
    };

    let whole = by_name("corpus-embed");
    assert_eq!(whole.spec.resources.gpu.count, Some(1));
    assert_eq!(whole.spec.replicas, 4);
    assert_eq!(whole.spec.placement.policy, PlacementPolicy::Spread);
    assert_eq!(whole.spec.placement.tolerations.len(), 1);

    let sliced = by_name("faq-embed-sliced");
    assert_eq!(sliced.spec.resources.gpu.count, None);
    assert_eq!(sliced.spec.resources.gpu.memory_mib, Some(6144));
    assert_eq!(sliced.spec.resources.gpu.compute_milli, Some(250));
    assert_eq!(sliced.spec.input.format, InputFormat::Jsonl); // defaulted
    assert_eq!(sliced.spec.output.format, OutputFormat::Jsonl);
    assert_eq!(
        sliced.spec.deadline.as_ref().unwrap().0.to_string(),
        "2026-12-31T23:00:00Z"
    );

    let second = by_name("ticket-embed");
    assert_eq!(second.spec.depends_on, vec!["ticket-language".to_owned()]);
    assert!(
        jobs.iter()
            .any(|(_, j)| j.metadata.name.as_deref() == Some("ticket-language"))
    );
}

#[test]
fn minimal_spec_gets_the_documented_defaults() {
    let job: InferenceJob = serde_yaml::from_str(
        r"
apiVersion: autoglm.io/v1alpha1
kind: InferenceJob
metadata: {name: minimal}
spec:
  model: {uri: file:///m.pt, tokenizerUri: file:///t.json, task: embedding}
  input: {uri: file:///in.jsonl}
  output: {uri: file:///out/}
",
    )
    .unwrap();
    let s = &job.spec;
    assert_eq!(s.replicas, 1);
    assert_eq!(
        s.resources.gpu,
        GpuRequest {
            count: Some(1),
            memory_mib: None,
            compute_milli: None,
            types: Vec::new()
        }
    );
    assert_eq!(s.resources.cpu.0, "1");
    assert_eq!(s.resources.memory.0, "2Gi");
    assert_eq!(
        s.batching,
        BatchingSpec {
            max_batch_size: 32,
            max_delay_ms: 10,
            target_p99_latency_ms: None,
            max_batch_tokens: None
        }
    );
    assert_eq!(s.input.text_field, "text");
    assert_eq!(s.input.format, InputFormat::Jsonl);
    assert_eq!(s.output.format, OutputFormat::Parquet);
    assert_eq!(s.retry_policy.max_retries, 3);
    assert_eq!(
        s.retry_policy.backoff,
        Backoff {
            initial_seconds: 10,
            max_seconds: 300
        }
    );
    assert_eq!(
        s.checkpoint,
        CheckpointSpec {
            every_items: Some(1000),
            every_seconds: Some(60)
        }
    );
    assert_eq!(s.max_failed_items, 0);
    assert_eq!(s.placement.policy, PlacementPolicy::Binpack);
    assert!(!s.suspend);
    assert!(s.depends_on.is_empty());
    assert_eq!(s.priority, None);
    assert_eq!(s.worker_image, autoglm_api::wellknown::DEFAULT_WORKER_IMAGE);
}

#[test]
fn committed_crds_match_the_generated_ones() {
    for dir in ["crds", "charts/open-autoglm/crds"] {
        for crd in autoglm_api::crd::all() {
            let path = repo_root()
                .join(dir)
                .join(autoglm_api::crd::file_name(&crd));
            let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| {
                panic!("failed to read {}: {e}; run `make crds`", path.display())
            });
            assert!(
                committed == autoglm_api::crd::to_yaml(&crd).unwrap(),
                "{} differs from the generated CRD; run `make crds` and commit",
                path.display()
            );
        }
    }
}

/// The CEL rules and schema bounds that admission relies on are present where expected.
#[test]
fn crd_schema_carries_the_admission_rules() {
    let crd = serde_json::to_value(autoglm_api::crd::all().remove(0)).unwrap();
    assert_eq!(crd["metadata"]["name"], "inferencejobs.autoglm.io");
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(crd["spec"]["names"]["shortNames"][0], "ij");
    assert!(version["subresources"]["status"].is_object());
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        ["Phase", "Progress", "Ready", "Items/s", "Message", "Age"]
    );

    let root = &version["schema"]["openAPIV3Schema"];
    let root_rules = root["x-kubernetes-validations"].to_string();
    assert!(root_rules.contains("self.metadata.name"), "{root_rules}");
    let spec = &root["properties"]["spec"];
    assert_eq!(spec["properties"]["replicas"]["minimum"], 1.0);
    for immutable in ["model", "input", "replicas"] {
        let rules = spec["properties"][immutable]["x-kubernetes-validations"].to_string();
        assert!(rules.contains("self == oldSelf"), "{immutable}: {rules}");
    }
    let gpu = &spec["properties"]["resources"]["properties"]["gpu"];
    assert!(
        gpu["x-kubernetes-validations"]
            .to_string()
            .contains("has(self.count) != has(self.memoryMiB)")
    );
    assert_eq!(gpu["properties"]["computeMilli"]["maximum"], 1000.0);
    assert_eq!(gpu["default"]["count"], 1);
    assert_eq!(
        spec["properties"]["dependsOn"]["x-kubernetes-list-type"],
        "set"
    );
    assert_eq!(
        spec["properties"]["batching"]["properties"]["maxDelayMs"]["minimum"],
        0.0
    );

    let gpunode = serde_json::to_value(autoglm_api::crd::all().remove(1)).unwrap();
    assert_eq!(gpunode["spec"]["scope"], "Cluster");
    assert_eq!(gpunode["spec"]["names"]["shortNames"][0], "gn");
}
