#!/usr/bin/env python3
"""sentence-transformers reference for the worker: encode a JSONL corpus with
SentenceTransformer.encode (normalize_embeddings=True) and write one JSON line per item,
{"line": <1-based line number>, "embedding": [...]}, so the Rust side can compare per line.

Prints a JSON summary on stdout: {"items": N, "seconds": S, "itemsPerSecond": R, "threads": T}
(seconds: the encode call only, model loading excluded).

Used by the worker's tests (the embeddings-match test computes its reference with it) and by
`autoglm-worker bench`. Never fetches from a hub.
"""
import argparse
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="sentence-transformers model folder")
    p.add_argument("--input", required=True)
    p.add_argument("--text-field", default="text")
    p.add_argument("--limit", type=int, default=0, help="first N non-blank lines (0: all)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--out", required=True)
    args = p.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    lines, texts = [], []
    with open(args.input, encoding="utf-8") as f:
        for n, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                text = json.loads(raw).get(args.text_field)
            except json.JSONDecodeError:
                continue
            if not isinstance(text, str):
                continue
            lines.append(n)
            texts.append(text)
            if args.limit and len(texts) >= args.limit:
                break
    model = SentenceTransformer(args.model, device=args.device)
    model.encode(texts[: min(len(texts), 2 * args.batch_size)], batch_size=args.batch_size)  # warm-up
    t0 = time.perf_counter()
    emb = model.encode(texts, batch_size=args.batch_size, normalize_embeddings=True, convert_to_numpy=True)
    seconds = time.perf_counter() - t0
    with open(args.out, "w", encoding="utf-8") as f:
        for n, v in zip(lines, emb):
            f.write(json.dumps({"line": n, "embedding": [float(x) for x in v]}) + "\n")
    json.dump(
        {
            "items": len(texts),
            "seconds": seconds,
            "itemsPerSecond": len(texts) / seconds,
            "threads": args.threads,
            "device": args.device,
        },
        sys.stdout,
    )
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
