//! Exactly-once under SIGKILL: the worker is killed at 20 random moments while it processes
//! 2,400 real lines (with three bad ones), restarted each time, and the final output must hold
//! every line exactly once with vectors bit-identical to an uninterrupted run.
//!
//! Random moments: 20 progress targets drawn uniformly from the first 85% of the shard
//! (seeded, printed); for each, the worker is started, the test waits until the checkpoint
//! reaches the target (immediately, when an earlier run already passed it), then sleeps a
//! random 0-400 ms and sends SIGKILL, so kills land during start-up, batching, part writes
//! and checkpoint renames alike. Batches are fixed-size with no delay cut
//! (`--target-p99-ms 0 --max-delay-ms 600000`), one intra-op thread: then batch composition,
//! and so every float, is a deterministic function of the shard (see `batching`).
#![cfg(feature = "libtorch")]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use autoglm_worker::checkpoint;
use autoglm_worker::output::OutputFormat;
use common::{corpus_head, records, worker};
use rand::{Rng, SeedableRng};

const LINES: usize = 2400;
const KILLS: usize = 20;
#[cfg(feature = "parquet")]
const FORMAT: (&str, OutputFormat) = ("parquet", OutputFormat::Parquet);
#[cfg(not(feature = "parquet"))]
const FORMAT: (&str, OutputFormat) = ("jsonl", OutputFormat::Jsonl);
const FLAGS: [&str; 12] = [
    "--output-format",
    FORMAT.0,
    "--max-batch-size",
    "8",
    "--target-p99-ms",
    "0",
    "--max-delay-ms",
    "600000",
    "--checkpoint-every-items",
    "64",
    "--max-failed-items",
    "3",
];

fn committed(output: &Path) -> u64 {
    std::fs::read(output.join("replica-0/checkpoint.json"))
        .ok()
        .and_then(|b| checkpoint::decode(&b, "checkpoint.json").ok())
        .map_or(0, |c| c.next_item)
}

#[test]
fn sigkill_at_20_random_moments_loses_and_duplicates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.jsonl");
    let mut lines = corpus_head(LINES);
    lines[99] = "{\"id\": \"bad\", \"text\": ".into();
    lines[999] = "{\"id\": \"no-text\"}".into();
    lines[1999] = "[\"not\", \"an\", \"object\"]".into();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();

    let clean = tmp.path().join("clean");
    let t0 = Instant::now();
    let status = worker(&input, &clean, &FLAGS).status().unwrap();
    assert!(status.success());
    println!("uninterrupted run: {:.1} s", t0.elapsed().as_secs_f64());

    let seed: u64 = std::env::var("KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("KILL_SEED={seed}");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut targets: Vec<u64> = (0..KILLS)
        .map(|_| rng.random_range(0..(LINES as u64 * 85 / 100)))
        .collect();
    targets.sort_unstable();

    let killed = tmp.path().join("killed");
    let mut kills = 0;
    for target in targets {
        let mut child = worker(&input, &killed, &FLAGS).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(300);
        while committed(&killed) < target {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "worker exited ({status}) before reaching item {target}: after {kills} kills"
                );
            }
            assert!(Instant::now() < deadline, "no progress to item {target}");
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(0..400)));
        if child.try_wait().unwrap().is_some() {
            panic!(
                "worker finished before kill {} (target {target})",
                kills + 1
            );
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        println!(
            "kill {kills}: target {target}, committed {}",
            committed(&killed)
        );
    }
    assert_eq!(kills, KILLS);
    let status = worker(&input, &killed, &FLAGS).status().unwrap();
    assert!(status.success());

    let expected = records(&clean.join("replica-0"), FORMAT.1);
    let got = records(&killed.join("replica-0"), FORMAT.1);
    // every input line exactly once, in order
    assert_eq!(
        got.iter().map(|r| r.line).collect::<Vec<_>>(),
        (1..=LINES as u64).collect::<Vec<_>>()
    );
    assert_eq!(got.iter().filter(|r| r.result.is_err()).count(), 3);
    // bit-identical to the uninterrupted run (PartialEq on f32 vectors, and no NaN here)
    assert_eq!(got.len(), expected.len());
    for (g, e) in got.iter().zip(&expected) {
        assert_eq!(g, e, "line {} differs", g.line);
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(killed.join("replica-0/manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["items"], LINES as u64);
    assert_eq!(manifest["itemsFailed"], 3);
    let leftovers: Vec<String> = std::fs::read_dir(killed.join("replica-0"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
