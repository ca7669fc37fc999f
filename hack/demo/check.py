#!/usr/bin/env python3
"""Check an InferenceJob's embedding outputs (part of `make demo`, issue 8).

  check.py --input CORPUS.jsonl --output OUT_DIR --model-dir MODEL_DIR [--query TEXT]...

1. Exactly once: every input line 1..N appears in exactly one output record over all
   `replica-*/part-*.jsonl` files named by the replicas' checkpoints (no line missing, none
   twice), and no record has an error. Printed as `exactly-once: N/N lines, 0 missing, 0
   duplicated`.
2. Agreement: for 8 evenly spaced lines, cosine(worker embedding, sentence-transformers
   embedding of the same text) computed here with the shipped model; printed as the minimum.
3. Semantic search: each --query is embedded with sentence-transformers and its 3 nearest
   lines (cosine over the worker's embeddings) are printed with their ids.

Exit status 1 when (1) fails or the agreement is below 0.99; 0 otherwise.
Needs the torch venv (numpy, sentence-transformers); never touches the network.
"""
import argparse
import json
import os
import pathlib
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# No progress bars from the model loading in the demo's output.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np  # noqa: E402


def load_input(path):
    items = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            items.append(json.loads(line))
    return items


def committed_parts(out_dir):
    """Part files named by each replica's checkpoint (what the worker guarantees), in order."""
    parts = []
    for rep in sorted(out_dir.glob("replica-*")):
        ck = rep / "checkpoint.json"
        if not ck.exists():
            continue
        names = [p["name"] for p in json.loads(ck.read_text())["checkpoint"]["parts"]]
        parts.extend(rep / n for n in names)
    return parts


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--input", required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--query", action="append", default=[])
    ap.add_argument("--top", type=int, default=3)
    a = ap.parse_args()

    items = load_input(a.input)
    n = len(items)
    out_dir = pathlib.Path(a.output)
    parts = committed_parts(out_dir)
    seen = {}
    errors = 0
    for part in parts:
        with open(part, encoding="utf-8") as f:
            for line in f:
                rec = json.loads(line)
                ln = rec["line"]
                if rec.get("error"):
                    errors += 1
                    continue
                seen.setdefault(ln, []).append(rec["embedding"])
    missing = [ln for ln in range(1, n + 1) if ln not in seen]
    dup = [ln for ln, embs in seen.items() if len(embs) > 1]
    extra = [ln for ln in seen if ln < 1 or ln > n]
    print(f"outputs: {len(parts)} part files under {out_dir}/replica-*/")
    print(
        f"exactly-once: {len(seen) - len(extra)}/{n} lines, {len(missing)} missing, "
        f"{len(dup)} duplicated, {errors} errors"
    )
    ok = not missing and not dup and not extra and errors == 0
    if not ok:
        print(f"exactly-once FAILED: missing {missing[:10]} duplicated {dup[:10]} out of range {extra[:10]}")

    lines = sorted(ln for ln in seen if 1 <= ln <= n)
    if not lines:
        print("no embeddings to check")
        return 1
    emb = np.asarray([seen[ln][0] for ln in lines], dtype=np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)

    from sentence_transformers import SentenceTransformer  # noqa: E402

    st = SentenceTransformer(str(pathlib.Path(a.model_dir) / "st-model"), device="cpu")
    sample = [lines[i * (len(lines) - 1) // 7] for i in range(8)] if len(lines) >= 8 else lines
    ref = st.encode([items[ln - 1]["text"] for ln in sample], normalize_embeddings=True)
    idx = {ln: i for i, ln in enumerate(lines)}
    cos = [float(np.dot(emb[idx[ln]], ref[j])) for j, ln in enumerate(sample)]
    agree = min(cos) if cos else 0.0
    print(f"agreement with sentence-transformers on {len(sample)} lines: min cosine {agree:.5f}")
    if agree < 0.99:
        ok = False
        print("agreement FAILED: the worker's embeddings differ from the reference model")

    for q in a.query:
        qv = st.encode([q], normalize_embeddings=True)[0]
        scores = emb @ qv
        best = np.argsort(-scores)[: a.top]
        print(f'query: "{q}"')
        for b in best:
            it = items[lines[b] - 1]
            text = it["text"] if len(it["text"]) <= 110 else it["text"][:107] + "..."
            print(f"  {scores[b]:.3f}  {it.get('id', lines[b])}: {text}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
