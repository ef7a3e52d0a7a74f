#!/usr/bin/env python3
"""Writes tests/fixtures/minilm-reference.safetensors: what `transformers`
computes with the real all-MiniLM-L6-v2 checkpoint (fetched by
scripts/fetch-assets.sh into ${LPAF_CACHE:-~/.cache/lpaf}/minilm) for three
fixed short inputs (two single sentences and one pair), tokenized by the
model's own fast tokenizer and padded to a common length.

Tensors (fp32 on the CPU, model.eval(), eager attention):
  input_ids, token_type_ids, attention_mask   int64 [3, S]
  hidden_states.{0..6}                        float32 [3, S, 384]
                                              (embedding output, then each layer)
  pooled_output                               float32 [3, 384] (tanh pooler on [CLS])

    python scripts/make_minilm_reference.py            # writes the file
    python scripts/make_minilm_reference.py --check    # recomputes and compares

Nothing is downloaded: a missing model folder is an error that says to run
scripts/fetch-assets.sh.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

try:
    import torch
    import transformers
    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer, BertModel
except ImportError as e:  # pragma: no cover - environment problem
    sys.exit(f"make_minilm_reference.py: missing dependency ({e}); needs torch, transformers, safetensors")

transformers.utils.logging.disable_progress_bar()

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "tests" / "fixtures" / "minilm-reference.safetensors"

# Short on purpose (the file stays < 1 MB); subwords, punctuation, an accent,
# digits and upper case on purpose.
INPUTS = [
    ("The movie was surprisingly good!", None),
    ("A dull, lifeless Amélie remake.", None),
    ("Who directed Pierrot?", "Jean-Luc Godard, 1965."),
]


def fail(msg: str) -> None:
    sys.exit(f"make_minilm_reference.py: error: {msg}")


def default_model_dir() -> Path:
    cache = os.environ.get("LPAF_CACHE") or str(Path.home() / ".cache" / "lpaf")
    return Path(cache) / "minilm"


def compute(model_dir: Path) -> dict[str, torch.Tensor]:
    for f in ("config.json", "model.safetensors", "tokenizer.json"):
        if not (model_dir / f).is_file():
            fail(f"{model_dir / f} is missing; run scripts/fetch-assets.sh (or pass --model-dir)")
    torch.set_num_threads(1)
    torch.set_float32_matmul_precision("highest")
    tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    if not getattr(tok, "is_fast", False):
        fail(f"the tokenizer in {model_dir} did not load as a fast tokenizer")
    rows = [
        tok(a, b, add_special_tokens=True, return_token_type_ids=True, return_attention_mask=True)
        for a, b in INPUTS
    ]
    seq = max(len(r["input_ids"]) for r in rows)
    batch = {}
    for k in ("input_ids", "token_type_ids", "attention_mask"):
        pad = tok.pad_token_id if k == "input_ids" else 0
        batch[k] = torch.tensor([list(r[k]) + [pad] * (seq - len(r[k])) for r in rows], dtype=torch.int64)
    if (batch["input_ids"] == tok.unk_token_id).any():
        fail("an input tokenizes to [UNK]; choose other sentences")

    model = BertModel.from_pretrained(
        str(model_dir), local_files_only=True, attn_implementation="eager", dtype=torch.float32
    )
    model.eval()
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True, return_dict=True)
    n_layers = model.config.num_hidden_layers
    if len(out.hidden_states) != n_layers + 1:
        fail(f"expected {n_layers + 1} hidden states, got {len(out.hidden_states)}")
    ref = dict(batch)
    for i, h in enumerate(out.hidden_states):
        ref[f"hidden_states.{i}"] = h.detach().to(torch.float32).contiguous()
    ref["pooled_output"] = out.pooler_output.detach().to(torch.float32).contiguous()
    return ref


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", type=Path, default=None, help="MiniLM folder (default $LPAF_CACHE/minilm)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--check", action="store_true", help="recompute and compare with --out instead of writing")
    ap.add_argument("--rtol", type=float, default=1e-5, help="relative tolerance ‖a−b‖/‖b‖ for --check")
    args = ap.parse_args()
    model_dir = args.model_dir or default_model_dir()
    ref = compute(model_dir)
    if args.check:
        if not args.out.is_file():
            fail(f"{args.out} does not exist")
        old = load_file(str(args.out))
        ok = set(old) == set(ref)
        if not ok:
            print(f"MISMATCH names: {sorted(set(old) ^ set(ref))}")
        for k in sorted(set(old) & set(ref)):
            a, b = ref[k], old[k]
            if a.shape != b.shape or a.dtype != b.dtype:
                print(f"MISMATCH {k}: {a.dtype}{tuple(a.shape)} vs {b.dtype}{tuple(b.shape)}")
                ok = False
            elif not a.is_floating_point():
                if not torch.equal(a, b):
                    print(f"MISMATCH {k}: integer values differ")
                    ok = False
            else:
                rel = ((a.double() - b.double()).norm() / b.double().norm()).item()
                print(f"{k}: relative difference {rel:.3e}")
                if rel > args.rtol:
                    ok = False
        print("check: OK" if ok else "check: MISMATCH")
        sys.exit(0 if ok else 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": "pt",
        "inputs": json.dumps(INPUTS),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    save_file(ref, str(args.out), metadata=meta)
    shape = tuple(ref["input_ids"].shape)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes), batch {shape}")


if __name__ == "__main__":
    main()
