#!/usr/bin/env python3
"""Checks an lpaf dense export (`lpaf export --dense COMPRESSED OUT`,
docs/algorithms.md §7: W = U·V + S written back as a plain Hugging Face
checkpoint) against the engine:

1. `BertForSequenceClassification.from_pretrained(OUT, output_loading_info=True)`
   loads it with no missing, unexpected or mismatched keys and no error
   messages (no custom code);
2. on a labelled dev CSV, PyTorch's accuracy equals the engine's, and the mean
   dev cross-entropy agrees within --loss-tol.

The engine cannot write per-row logits (`lpaf eval --json` writes the metrics
and the mean loss only), so the comparison is on accuracy, F1 and mean loss
over the dev set; the mean loss is a continuous function of every logit, so it
catches differences that leave the argmax unchanged. The engine's numbers come
from running `lpaf eval` (on the compressed model given with --compressed, and
on the export itself) or from `lpaf eval --json` files given with
--engine-json.

    python scripts/check_export.py /tmp/export --dev runs/polarity/split/dev.csv \\
        --compressed runs/polarity/engine-lpaf-k0.1-s1/compressed

Exit status 0 when every check passes, 1 otherwise (2: bad usage).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    import torch
    import torch.nn.functional as F
    import transformers
    from transformers import AutoTokenizer, BertForSequenceClassification
except ImportError as e:  # pragma: no cover - environment problem
    sys.exit(f"check_export.py: missing dependency ({e}); needs torch and transformers")

REPO = Path(__file__).resolve().parent.parent


def die(msg: str, code: int = 2) -> None:
    print(f"check_export.py: error: {msg}", file=sys.stderr)
    sys.exit(code)


def read_csv(path: Path, text_col: str, label_col: str) -> tuple[list[str], list[str]]:
    if not path.is_file():
        die(f"{path}: no such file")
    with open(path, encoding="utf-8-sig", newline="") as f:
        r = csv.reader(f)
        header = [h.strip() for h in (next(r, None) or [])]
        for c in (text_col, label_col):
            if c not in header:
                die(f"{path}: no column `{c}` in the header (found: {', '.join(header) or 'nothing'})")
        ti, li = header.index(text_col), header.index(label_col)
        texts, labels = [], []
        for row in r:
            if row:
                texts.append(row[ti])
                labels.append(row[li].strip())
    if not texts:
        die(f"{path}: no rows")
    return texts, labels


def load_export(path: Path):
    if not (path / "config.json").is_file():
        die(f"{path}: no config.json (is it an `lpaf export --dense` directory?)")
    kw = dict(output_loading_info=True)
    try:
        model, info = BertForSequenceClassification.from_pretrained(path, dtype=torch.float32, **kw)
    except TypeError:  # older transformers spell it torch_dtype
        model, info = BertForSequenceClassification.from_pretrained(path, torch_dtype=torch.float32, **kw)
    return model, info


@torch.no_grad()
def torch_scores(model, tok, texts, gold, max_len: int, batch_size: int, device) -> dict:
    model.eval().to(device)
    preds, loss_sum = [], 0.0
    for start in range(0, len(texts), batch_size):
        enc = tok(texts[start : start + batch_size], truncation=True, max_length=max_len,
                  padding=True, return_tensors="pt")
        enc = {k: v.to(device) for k, v in enc.items()}
        logits = model(**enc).logits.float()
        y = torch.tensor(gold[start : start + batch_size], device=device)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        preds += logits.argmax(-1).tolist()
    acc = sum(int(p == g) for p, g in zip(preds, gold)) / len(gold)
    out = {"accuracy": acc, "eval_loss": loss_sum / len(gold)}
    if model.config.num_labels == 2:
        tp = sum(1 for p, g in zip(preds, gold) if p == 1 and g == 1)
        fp = sum(1 for p, g in zip(preds, gold) if p == 1 and g != 1)
        fn = sum(1 for p, g in zip(preds, gold) if p != 1 and g == 1)
        out["f1"] = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    out["positive_predictions"] = sum(1 for p in preds if p == 1)
    return out


def engine_eval(lpaf: Path, model_dir: Path, a) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        js = Path(tmp) / "eval.json"
        cmd = [str(lpaf), "eval", "--model", str(model_dir), "--task", "csv", "--dev", str(a.dev),
               "--text-a", a.text_a, "--label", a.label, "--max-seq-len", str(a.max_seq_len),
               "--device", a.engine_device, "--precision", "f32", "--json", str(js)]
        print("$ " + " ".join(cmd), flush=True)
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            die(f"lpaf eval failed (rc {p.returncode}):\n{p.stdout}{p.stderr}", 1)
        return json.loads(js.read_text())["metrics"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("export", type=Path, help="directory written by `lpaf export --dense`")
    ap.add_argument("--dev", type=Path, required=True, help="labelled dev CSV with a header row")
    ap.add_argument("--text-a", default="sentence")
    ap.add_argument("--label", default="label")
    ap.add_argument("--max-seq-len", type=int, default=64)
    ap.add_argument("--compressed", type=Path, help="the lpaf compressed model the export came from (evaluated by the engine)")
    ap.add_argument("--engine-json", type=Path, action="append", default=[],
                    help="`lpaf eval --json` output(s) to compare with instead of running the engine")
    ap.add_argument("--lpaf", type=Path, help="engine binary (default: dist/lpaf if present, else target/release/lpaf)")
    ap.add_argument("--engine-device", default="cpu", help="--device for lpaf eval (default cpu)")
    ap.add_argument("--device", default="cpu", help="torch device (default cpu)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--loss-tol", type=float, default=1e-4, help="largest |mean loss difference| accepted")
    a = ap.parse_args()

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    failures = []

    # 1. Loading with no custom code, every key accounted for.
    model, info = load_export(a.export)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}: loaded {a.export}")
    for key in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        got = list(info.get(key) or [])
        print(f"  {key}: {len(got)}" + (f" {got[:6]}" if got else ""))
        if got:
            failures.append(f"{key}: {got[:6]}")
    n_params = sum(p.numel() for p in model.parameters())
    print(f"  {n_params:,} parameters, labels {model.config.id2label}")

    # 2. Scores on the dev CSV.
    tok = AutoTokenizer.from_pretrained(a.export)
    texts, raw = read_csv(a.dev, a.text_a, a.label)
    label2id = {str(k): int(v) for k, v in (model.config.label2id or {}).items()}
    missing = sorted(set(raw) - set(label2id))
    if missing:
        die(f"{a.dev}: labels {missing[:5]} are not in the export's label2id {label2id}", 1)
    gold = [label2id[x] for x in raw]
    ours = torch_scores(model, tok, texts, gold, a.max_seq_len, a.batch_size, torch.device(a.device))

    engine: list[tuple[str, dict]] = []
    for p in a.engine_json:
        engine.append((f"engine ({p})", json.loads(p.read_text())["metrics"]))
    if not a.engine_json:
        lpaf = a.lpaf or (REPO / "dist/lpaf" if (REPO / "dist/lpaf").is_file() else REPO / "target/release/lpaf")
        if not (lpaf.is_file() and os.access(lpaf, os.X_OK)):
            die(f"engine binary {lpaf} not found: build it (cargo build --release), pass --lpaf or --engine-json")
        if a.compressed:
            engine.append(("lpaf eval, compressed model", engine_eval(lpaf, a.compressed, a)))
        engine.append(("lpaf eval, dense export", engine_eval(lpaf, a.export, a)))

    print(f"\ndev: {a.dev} ({len(gold)} rows, {sum(gold)} of label id 1)")
    print("| scored by | accuracy | f1 | mean loss |")
    print("|---|---|---|---|")
    fmt = lambda m, k: f"{m[k]:.6f}" if k in m else "–"  # noqa: E731
    print(f"| transformers (export) | {fmt(ours, 'accuracy')} | {fmt(ours, 'f1')} | {fmt(ours, 'eval_loss')} |")
    for name, m in engine:
        print(f"| {name} | {fmt(m, 'accuracy')} | {fmt(m, 'f1')} | {fmt(m, 'eval_loss')} |")
        if not math.isclose(m.get("accuracy", -1), ours["accuracy"], rel_tol=0, abs_tol=1e-12):
            failures.append(f"accuracy {ours['accuracy']} (transformers) ≠ {m.get('accuracy')} ({name})")
        if "eval_loss" in m and abs(m["eval_loss"] - ours["eval_loss"]) > a.loss_tol:
            failures.append(f"mean loss {ours['eval_loss']:.6f} (transformers) vs {m['eval_loss']:.6f} ({name}): "
                            f"differ by more than {a.loss_tol}")
    if ours["positive_predictions"] in (0, len(gold)):
        print("note: the model predicts one class for every row; accuracy alone says little, the mean loss decides")
    if failures:
        print("\nFAILED:\n  " + "\n  ".join(failures))
        sys.exit(1)
    print("\nOK: no missing / unexpected / mismatched keys; accuracy equal and mean loss within "
          f"{a.loss_tol} of the engine's")


if __name__ == "__main__":
    main()
