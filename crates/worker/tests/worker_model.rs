//! The real model (all-MiniLM-L6-v2 TorchScript through libtorch) end to end through the
//! worker binary: embeddings against sentence-transformers, bad lines, a corrupted checkpoint.
#![cfg(feature = "libtorch")]

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use autoglm_worker::bench::{cosine, read_vectors};
use autoglm_worker::model::Prediction;
use autoglm_worker::output::OutputFormat;
use common::{assets, corpus_head, records, snapshot, worker};

#[test]
fn embeddings_match_sentence_transformers() {
    let a = assets();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("head.jsonl");
    std::fs::write(&input, corpus_head(300).join("\n") + "\n").unwrap();
    // The reference, computed now by sentence-transformers' encode (not pasted in).
    let st_out = tmp.path().join("st.jsonl");
    let out = Command::new(&a.python)
        .arg(a.repo.join("hack/st_reference.py"))
        .arg("--model")
        .arg(a.st_model())
        .arg("--input")
        .arg(&input)
        .args(["--threads", "1", "--batch-size", "32", "--out"])
        .arg(&st_out)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut reference = BTreeMap::new();
    for line in std::fs::read_to_string(&st_out).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let e: Vec<f32> = v["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        reference.insert(v["line"].as_u64().unwrap(), e);
    }
    assert_eq!(reference.len(), 300);

    let output = tmp.path().join("out");
    let status = worker(
        &input,
        &output,
        &["--output-format", "jsonl", "--max-batch-size", "32"],
    )
    .status()
    .unwrap();
    assert!(status.success());
    let ours = read_vectors(&output.join("replica-0")).unwrap();
    assert_eq!(ours.len(), 300);
    let mut worst = (1.0f64, 0u64);
    for (line, v) in &ours {
        assert_eq!(v.len(), 384);
        let c = cosine(v, &reference[line]);
        if c < worst.0 {
            worst = (c, *line);
        }
    }
    println!(
        "worst cosine vs sentence-transformers over 300 verses: {:.7} (line {})",
        worst.0, worst.1
    );
    assert!(worst.0 >= 0.9999, "line {}: cosine {}", worst.1, worst.0);
}

#[test]
fn bad_lines_are_error_records_with_line_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.jsonl");
    let mut lines = corpus_head(6);
    lines[1] = "{\"id\": \"x\", \"text\": ".into();
    lines[3] = "{\"id\": \"Mat1:4\", \"body\": \"no text field\"}".into();
    lines[4] = "{\"id\": \"Mat1:5\", \"text\": 42}".into();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let output = tmp.path().join("out");
    #[cfg(feature = "parquet")]
    let format = ("parquet", OutputFormat::Parquet);
    #[cfg(not(feature = "parquet"))]
    let format = ("jsonl", OutputFormat::Jsonl);
    let out = worker(
        &input,
        &output,
        &[
            "--output-format",
            format.0,
            "--id-field",
            "id",
            "--max-failed-items",
            "3",
        ],
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recs = records(&output.join("replica-0"), format.1);
    assert_eq!(
        recs.iter().map(|r| r.line).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5, 6]
    );
    assert!(
        recs[1]
            .result
            .as_ref()
            .unwrap_err()
            .starts_with("line 2: not valid JSON")
    );
    assert_eq!(
        recs[3].result,
        Err("line 4: field `text` is missing".into())
    );
    assert_eq!(
        recs[4].result,
        Err("line 5: field `text` must be a string, got a number".into())
    );
    assert_eq!(recs[0].id.as_deref(), Some("Mat1:1"));
    assert!(matches!(&recs[5].result, Ok(Prediction::Embedding(v)) if v.len() == 384));

    // The same input with a bound of 2 fails the replica with a clear message.
    let out = worker(
        &input,
        &tmp.path().join("out2"),
        &["--max-failed-items", "2"],
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("3 items failed, more than --max-failed-items 2 (the last: line 5: field `text` must be a string"),
        "{stderr}"
    );
}

#[test]
fn corrupted_checkpoint_is_refused_and_nothing_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.jsonl");
    std::fs::write(&input, corpus_head(120).join("\n") + "\n").unwrap();
    let output = tmp.path().join("out");
    let flags = [
        "--output-format",
        "jsonl",
        "--max-batch-size",
        "8",
        "--checkpoint-every-items",
        "16",
    ];
    assert!(worker(&input, &output, &flags).status().unwrap().success());
    let cp = output.join("replica-0/checkpoint.json");
    // Drop the manifest so the worker would resume (and clean up) if it trusted the checkpoint,
    // and leave a stray part that a trusted resume would delete.
    std::fs::remove_file(output.join("replica-0/manifest.json")).unwrap();
    std::fs::write(output.join("replica-0/part-00099.jsonl"), b"stray\n").unwrap();
    let mut bytes = std::fs::read(&cp).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    std::fs::write(&cp, &bytes).unwrap();
    let before = snapshot(&output);
    let out = worker(&input, &output, &flags).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refusing checkpoint"), "{stderr}");
    assert!(stderr.contains("nothing was deleted"), "{stderr}");
    assert_eq!(
        snapshot(&output),
        before,
        "the refused resume changed the output folder"
    );
}
