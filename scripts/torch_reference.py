#!/usr/bin/env python3
"""PyTorch + transformers reference of movement pruning and LoSparse, written
from the project's specification (what docs/algorithms.md §0–§3 now
describes) and the engine's recipes, to set the engine's accuracy, kept ratio
and speed beside an independent implementation on the same data, split,
seeds and hyper-parameters.

It reads the engine's recipe TOML for the method (`recipes/movement.toml`,
`recipes/losparse.toml`; `magnitude` is also accepted) and applies the same
overrides as `lpaf compress`: `--kept-ratio`, `--seed`, `--epochs` / `--steps`,
`--max-train-rows`, `--precision`, `--set section.key=value`. Data: a CSV
with a header (text column `--text-a`, label column `--label`), e.g. the
split that scripts/reproduce-polarity-with-torch.sh writes. Fine-tunes
`BertForSequenceClassification` from the (pre-trained) `--model` directory
while compressing, evaluates the final compressed model on the dev CSV, and
writes

    OUTPUT/summary.json  {"engine": "pytorch", "method", "kept_ratio", "dev_metrics": [[name, value], …],
                          "main_metric", "train_seconds", "samples_per_second", "steps", …}
    OUTPUT/log.jsonl     one JSON object per logged step / evaluation
    OUTPUT/model/        with --save-model: the compressed model as a dense Hugging Face checkpoint

Field names follow the engine's `OUTPUT/summary.json`. `train_seconds` is the
wall clock of the training loop including its periodic evaluations (as the
engine's); samples/s = training samples ÷ train_seconds.

Where this reference necessarily differs from the engine (documented, not
bugs): the shuffling order and dropout masks come from torch's generators, not
the engine's Philox streams (same seed number, different streams); the
truncated SVD is exact (LAPACK in float64) where the engine runs subspace
iteration; ties in the exact top-k of movement pruning are broken by
torch.topk, not by lowest index (ties are rare once scores have moved);
attention is transformers' default (SDPA).

    # smoke test on the CPU
    python scripts/torch_reference.py --method movement --train split/train.csv --dev split/dev.csv \\
        --device cpu --steps 4 --max-train-rows 64 --set train.batch_size=8 --output /tmp/ref-mv
    # the recipe's schedule on a GPU
    python scripts/torch_reference.py --method losparse --kept-ratio 0.1 --seed 1 \\
        --train split/train.csv --dev split/dev.csv --model ~/.cache/lpaf/minilm --output runs/ref-ls
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import sys
import time
from pathlib import Path

try:
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    import transformers
    from transformers import AutoTokenizer, BertForSequenceClassification
except ImportError as e:  # pragma: no cover - environment problem
    sys.exit(f"torch_reference.py: missing dependency ({e}); needs torch, transformers and numpy")

try:
    import tomllib  # Python ≥ 3.11
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    try:
        import tomli as tomllib  # type: ignore
    except ModuleNotFoundError:
        tomllib = None

REPO = Path(__file__).resolve().parent.parent
METHODS = ("movement", "losparse", "magnitude")
# docs/algorithms.md §0: the 6 compressible matrices of every encoder layer (Q, K, V,
# attention output, intermediate, output); 36 in MiniLM-L6.
COMPRESSIBLE = (
    ("attention", "self", "query"),
    ("attention", "self", "key"),
    ("attention", "self", "value"),
    ("attention", "output", "dense"),
    ("intermediate", "dense"),
    ("output", "dense"),
)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def die(msg: str) -> None:
    sys.exit(f"torch_reference.py: error: {msg}")


def rust_round(x: float) -> int:
    """f64::round of the engine (half away from zero), for non-negative x."""
    return int(math.floor(x + 0.5))


# ============================================================================
# Recipe: the engine's TOML, its defaults (src/compress/recipe.rs,
# src/cli/config.rs) and the overrides `lpaf compress` accepts.

TRAIN_DEFAULTS = {
    "seed": 42, "batch_size": 32, "grad_accum": 1, "epochs": 3.0, "steps": None, "lr": 2e-5,
    "warmup_ratio": 0.1, "weight_decay": 0.01, "max_grad_norm": 1.0, "score_lr": 1e-2,
    "precision": "f32", "log_every": 10, "eval_every": 0, "eval_batch_size": 64, "max_train_rows": None,
}
PRUNING_DEFAULTS = {"score_rule": "adam", "scope": "per_matrix", "initial_warmup": 0.1, "final_warmup": 0.3}
LOSPARSE_DEFAULTS = {
    "rank_ratio": 0.05, "rank": None, "final_kept": None, "delta_t": 10, "beta1": 0.85, "beta2": 1.0,
    "structured": True, "hard_mask": False, "unit_steps": None, "initial_warmup": 1, "final_warmup": 5,
}


def parse_value(text: str):
    """A TOML value (`3e-5`, `true`, `"x"`), or the bare text as a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except Exception:
        return text


def load_recipe(path: Path, sets: list[str]) -> dict:
    if tomllib is None:
        die("reading the recipe needs Python ≥ 3.11 (tomllib) or the tomli package")
    try:
        with open(path, "rb") as f:
            recipe = tomllib.load(f)
    except OSError as e:
        die(f"cannot read recipe {path}: {e}")
    except tomllib.TOMLDecodeError as e:
        die(f"{path}: {e}")
    for s in sets:
        if "=" not in s:
            die(f"--set {s!r}: expected KEY=VALUE (e.g. train.lr=3e-5)")
        key, value = s.split("=", 1)
        parts = key.strip().split(".")
        cur = recipe
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
            if not isinstance(cur, dict):
                die(f"--set {key}: {p} is not a table")
        cur[parts[-1]] = parse_value(value.strip())
    return recipe


def section(recipe: dict, name: str, defaults: dict) -> dict:
    got = dict(recipe.get(name, {}))
    unknown = sorted(set(got) - set(defaults) - {"checkpoint_every", "keep_best"})
    if unknown:
        die(f"recipe [{name}]: keys {unknown} are not known to this reference (known: {sorted(defaults)})")
    out = dict(defaults)
    out.update(got)
    return out


# ============================================================================
# Schedules


class CubicSchedule:
    """docs/algorithms.md §2 (and §3 with LoSparse's unit): kept fraction `initial` for
    `warmup` steps, then final + (initial − final)·(1 − (t − warmup)/span)³ over
    `span` = total − warmup − cooldown steps, then `final` (src/train/schedule.rs)."""

    def __init__(self, initial: float, final: float, total: int, warmup: int, cooldown: int):
        self.initial, self.final, self.warmup = initial, final, warmup
        self.span = max(0, total - warmup - cooldown)

    def kept(self, t: int) -> float:
        if t < self.warmup:
            return self.initial
        if self.span == 0 or t >= self.warmup + self.span:
            return self.final
        p = (t - self.warmup) / self.span
        return self.final + (self.initial - self.final) * (1.0 - p) ** 3

    def in_cubic_phase(self, t: int) -> bool:
        return self.warmup <= t < self.warmup + self.span


def linear_warmup_decay(warmup: int, total: int):
    """docs/algorithms.md §1: linear warm-up then linear decay to 0 (transformers'
    get_linear_schedule_with_warmup); the multiplier at 0-based step t."""

    def mult(t: int) -> float:
        if t < warmup:
            return t / max(1, warmup)
        return max(0.0, (total - t) / max(1, total - warmup))

    return mult


# ============================================================================
# Compressed layers


class _StraightThroughMask(torch.autograd.Function):
    """docs/algorithms.md §2: forward W' = M ⊙ W; backward straight-through:
    ∂L/∂W = ∂L/∂W' ⊙ M and ∂L/∂Sc = ∂L/∂W' ⊙ W."""

    @staticmethod
    def forward(ctx, weight, scores, mask):
        ctx.save_for_backward(weight, mask)
        return weight * mask

    @staticmethod
    def backward(ctx, grad):
        weight, mask = ctx.saved_tensors
        return grad * mask, grad * weight, None


class MaskedLinear(nn.Module):
    """Movement (scores) or magnitude (TopK(|W|)) pruning of one matrix, docs/algorithms.md §2."""

    def __init__(self, dense: nn.Linear, with_scores: bool):
        super().__init__()
        self.weight = nn.Parameter(dense.weight.detach().clone())
        self.bias = nn.Parameter(dense.bias.detach().clone())
        # docs/algorithms.md §2: a score matrix Sc of W's shape, starting at 0 (the published
        # definition; this reference does not implement the engine's `pruning.score_init`).
        self.mask_scores = nn.Parameter(torch.zeros_like(self.weight)) if with_scores else None
        self.register_buffer("mask", torch.ones_like(self.weight))

    def forward(self, x):
        if self.mask_scores is not None:
            w = _StraightThroughMask.apply(self.weight, self.mask_scores, self.mask)
        else:
            w = self.weight * self.mask  # magnitude: ∂L/∂W = ∂L/∂W' ⊙ M
        return F.linear(x, w, self.bias)

    def key(self) -> torch.Tensor:
        return (self.mask_scores if self.mask_scores is not None else self.weight.abs()).detach()

    @torch.no_grad()
    def finalize(self) -> None:
        """docs/algorithms.md §2: at the end W ← M ⊙ W and the scores are dropped."""
        self.weight.mul_(self.mask)
        self.mask_scores = None


class LoSparseLinear(nn.Module):
    """docs/algorithms.md §3: W ≈ U·V + S, forward y = x·(U·V + S)ᵀ + b."""

    def __init__(self, dense: nn.Linear, rank: int, hard_mask: bool, track_uncertainty: bool):
        super().__init__()
        w64 = dense.weight.detach().to("cpu", torch.float64)
        out_f, in_f = w64.shape
        # docs/algorithms.md §3: truncated SVD W ≈ U_r Σ_r V_rᵀ;
        # U = U_r·√Σ_r, V = √Σ_r·V_rᵀ, S = W − U·V
        # (exact LAPACK SVD in float64; the residual in float64 as the engine does on the host).
        u, s, vt = torch.linalg.svd(w64, full_matrices=False)
        root = s[:rank].sqrt()
        u64 = u[:, :rank] * root
        v64 = root[:, None] * vt[:rank]
        s64 = w64 - u64 @ v64
        dev, dt = dense.weight.device, dense.weight.dtype
        self.rank, self.out_features, self.in_features = rank, out_f, in_f
        self.lowrank_u = nn.Parameter(u64.to(dev, dt).contiguous())  # out × r
        self.lowrank_v = nn.Parameter(v64.to(dev, dt).contiguous())  # r × in
        self.sparse = nn.Parameter(s64.to(dev, dt).contiguous())  # out × in, dense residual
        self.bias = nn.Parameter(dense.bias.detach().clone())
        self.hard_mask = hard_mask
        self.register_buffer("mask", torch.ones(out_f, in_f, dtype=torch.bool, device=dev), persistent=False)
        # The pruner state of docs/algorithms.md §3: window mean `ipt`, smoothed
        # sensitivity Ī, uncertainty Ū (β2 < 1 only).
        self.register_buffer("ipt", torch.zeros(out_f, in_f, device=dev), persistent=False)
        self.register_buffer("ibar", torch.zeros(out_f, in_f, device=dev), persistent=False)
        self.ubar = torch.zeros(out_f, in_f, device=dev) if track_uncertainty else None

    def forward(self, x):
        s = self.sparse * self.mask if self.hard_mask else self.sparse  # (engine choice) hard_mask
        return F.linear(x, self.lowrank_u @ self.lowrank_v + s, self.bias)

    @torch.no_grad()
    def update_importance(self, count: int, close: bool, beta1: float, beta2: float) -> None:
        """docs/algorithms.md §3: after the optimizer step, before gradients are cleared, I_t = |S ⊙ ∇S|
        with the updated S and the clipped gradient (the one AdamW used); running mean over
        the window; at the window's end Ī ← β1·Ī + (1−β1)·ipt and, if β2 < 1,
        Ū ← β2·Ū + (1−β2)·|ipt − Ī| (src/backend/ops/losparse_importance/cpu.rs, importance_element)."""
        g = self.sparse.grad
        if g is None:
            return
        imp = (self.sparse * g).abs_()
        if count == 1:
            self.ipt.copy_(imp)
        else:
            self.ipt.mul_(count - 1).add_(imp).div_(count)
        if close:
            self.ibar.mul_(beta1).add_(self.ipt, alpha=1.0 - beta1)
            if self.ubar is not None:
                self.ubar.mul_(beta2).add_((self.ipt - self.ibar).abs_(), alpha=1.0 - beta2)

    def score(self) -> torch.Tensor:
        """docs/algorithms.md §3: score = Ī (β2 = 1) or Ī·Ū."""
        return self.ibar if self.ubar is None else self.ibar * self.ubar

    def to_dense(self) -> torch.Tensor:
        s = self.sparse * self.mask if self.hard_mask else self.sparse
        return (self.lowrank_u @ self.lowrank_v + s).detach()


def compressible(model) -> list[tuple[object, str, str]]:
    """(parent module, attribute, name) of every compressible linear
    (docs/algorithms.md §0), layer by layer."""
    out = []
    for li, layer in enumerate(model.bert.encoder.layer):
        for path in COMPRESSIBLE:
            parent = layer
            for name in path[:-1]:
                parent = getattr(parent, name)
            out.append((parent, path[-1], f"encoder.layer.{li}." + ".".join(path)))
    return out


def uniform_rank(rho: float, out_f: int, in_f: int) -> int:
    """docs/algorithms.md §3: r = ⌈ρ·out·in/(out+in)⌉ (capped at min(out, in), src/compress/rank.rs)."""
    return min(math.ceil(rho * out_f * in_f / (out_f + in_f)), min(out_f, in_f))


# ============================================================================
# Data


def read_csv(path: Path, text_col: str, label_col: str) -> tuple[list[str], list[str]]:
    if not path.is_file():
        die(f"{path}: no such file")
    with open(path, encoding="utf-8-sig", newline="") as f:
        r = csv.reader(f)
        header = next(r, None)
        if not header:
            die(f"{path}: empty file (a header row is required)")
        header = [h.strip() for h in header]
        for c in (text_col, label_col):
            if c not in header:
                die(f"{path}: no column `{c}` in the header (found: {', '.join(header)})")
        ti, li = header.index(text_col), header.index(label_col)
        texts, labels = [], []
        for n, row in enumerate(r, start=2):
            if not row:
                continue
            if len(row) <= max(ti, li):
                die(f"{path}: record {n}: {len(row)} fields, fewer than the header's")
            texts.append(row[ti])
            labels.append(row[li].strip())
    if not texts:
        die(f"{path}: no rows")
    return texts, labels


def label_vocab(values: list[str]) -> list[str]:
    """The engine's `auto` labels: sorted distinct values of the training file,
    numerically when all are integers (src/data/table.rs)."""
    distinct = sorted(set(values))
    try:
        return sorted(distinct, key=int)
    except ValueError:
        return distinct


class Encoded:
    def __init__(self, tok, texts: list[str], labels: list[int], max_len: int):
        enc = tok(texts, truncation=True, max_length=max_len)
        self.ids = enc["input_ids"]
        self.labels = labels

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, idx: list[int], device) -> dict:
        """Dynamic padding to a multiple of 8 (as the engine's batches)."""
        n = max(len(self.ids[i]) for i in idx)
        n = (n + 7) // 8 * 8
        ids = torch.zeros(len(idx), n, dtype=torch.long)
        att = torch.zeros(len(idx), n, dtype=torch.long)
        for row, i in enumerate(idx):
            seq = self.ids[i]
            ids[row, : len(seq)] = torch.tensor(seq)
            att[row, : len(seq)] = 1
        return {
            "input_ids": ids.to(device, non_blocking=True),
            "attention_mask": att.to(device, non_blocking=True),
            "token_type_ids": torch.zeros_like(ids).to(device, non_blocking=True),
            "labels": torch.tensor([self.labels[i] for i in idx], dtype=torch.long).to(device, non_blocking=True),
        }


class Batches:
    """Endless seeded shuffled batches (drop_last = false), a new permutation each epoch."""

    def __init__(self, data: Encoded, batch_size: int, seed: int, device):
        self.data, self.bs, self.device = data, batch_size, device
        self.gen = torch.Generator().manual_seed(seed)
        self.order: list[int] = []
        self.pos = 0
        self.epoch = -1

    def next(self) -> dict:
        if self.pos >= len(self.order):
            self.order = torch.randperm(len(self.data), generator=self.gen).tolist()
            self.pos = 0
            self.epoch += 1
        idx = self.order[self.pos : self.pos + self.bs]
        self.pos += self.bs
        return self.data.batch(idx, self.device)


# ============================================================================
# Precision


def set_precision(precision: str) -> None:
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")


def autocast(precision: str, device: torch.device):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return torch.autocast(device_type=device.type, enabled=False)


# ============================================================================
# Evaluation


@torch.no_grad()
def evaluate(model, data: Encoded, batch_size: int, precision: str, device, num_labels: int) -> list[list]:
    """Accuracy (+ F1 of class 1 when binary), as the engine's csv tasks."""
    was_training = model.training
    model.eval()
    preds = []
    for start in range(0, len(data), batch_size):
        b = data.batch(list(range(start, min(start + batch_size, len(data)))), device)
        b.pop("labels")
        with autocast(precision, device):
            logits = model(**b).logits
        preds.append(logits.float().argmax(-1).cpu())
    model.train(was_training)
    pred = torch.cat(preds).tolist()
    gold = data.labels
    acc = sum(int(p == g) for p, g in zip(pred, gold)) / len(gold)
    metrics = [["accuracy", acc]]
    if num_labels == 2:
        tp = sum(1 for p, g in zip(pred, gold) if p == 1 and g == 1)
        fp = sum(1 for p, g in zip(pred, gold) if p == 1 and g != 1)
        fn = sum(1 for p, g in zip(pred, gold) if p != 1 and g == 1)
        metrics.append(["f1", 2 * tp / (2 * tp + fp + fn) if tp else 0.0])
    return metrics


# ============================================================================
# Pruners


class MaskPruner:
    """Movement / magnitude pruning hooks (docs/algorithms.md §2): before each step the
    mask of every matrix is the exact top-⌊γ_t·numel⌋ of its scores (or |W|),
    per matrix (default) or one global top-k over all matrices."""

    def __init__(self, layers: list[MaskedLinear], schedule: CubicSchedule, scope: str):
        self.layers, self.schedule, self.scope = layers, schedule, scope
        self.snapshot = None

    @torch.no_grad()
    def update(self, t: int) -> float:
        kept = self.schedule.kept(t)
        if self.scope == "global":
            total = sum(l.weight.numel() for l in self.layers)
            self._topk([l.key().reshape(-1) for l in self.layers], math.floor(kept * total), self.layers)
        else:
            # Per matrix (the default, docs/algorithms.md §2); matrices of one size share one batched top-k.
            groups: dict[int, list[MaskedLinear]] = {}
            for l in self.layers:
                groups.setdefault(l.weight.numel(), []).append(l)
            for n, ls in groups.items():
                k = math.floor(kept * n)
                if k >= n or k == 0:
                    for l in ls:
                        l.mask.fill_(1.0 if k >= n else 0.0)
                    continue
                keys = torch.stack([l.key().reshape(-1) for l in ls])
                idx = keys.topk(k, dim=1, sorted=False).indices
                m = torch.zeros_like(keys).scatter_(1, idx, 1.0)
                for l, row in zip(ls, m):
                    l.mask.copy_(row.view_as(l.mask))
        return kept

    @staticmethod
    def _topk(keys: list[torch.Tensor], k: int, layers) -> None:
        flat = torch.cat(keys)
        m = torch.zeros_like(flat)
        if k >= flat.numel():
            m.fill_(1.0)
        elif k > 0:
            m[flat.topk(k, sorted=False).indices] = 1.0
        off = 0
        for l in layers:
            n = l.weight.numel()
            l.mask.copy_(m[off : off + n].view_as(l.mask))
            off += n

    @torch.no_grad()
    def diagnostics(self) -> dict:
        """Visibility (docs/algorithms.md §2): mask churn since the last call and overlap
        with the magnitude mask."""
        masks = [l.mask.bool() for l in self.layers]
        kept = sum(int(m.sum()) for m in masks)
        total = sum(m.numel() for m in masks)
        out = {"kept_ratio": kept / total}
        if self.snapshot is not None:
            changed = sum(int((a != b).sum()) for a, b in zip(self.snapshot, masks))
            out["mask_churn"] = changed / total
        self.snapshot = [m.clone() for m in masks]
        if self.layers[0].mask_scores is not None:
            num = den = 0
            for l, m in zip(self.layers, masks):
                k = int(m.sum())
                if k == 0:
                    continue
                mag = torch.zeros(l.weight.numel(), dtype=torch.bool, device=m.device)
                mag[l.weight.detach().abs().reshape(-1).topk(k, sorted=False).indices] = True
                num += int((mag & m.reshape(-1)).sum())
                den += k
            out["magnitude_overlap"] = num / den if den else 1.0
        return out


class LoSparsePruner:
    """docs/algorithms.md §3: importance after each step, window of Δ steps, and one global
    threshold over every S entry following the cubic schedule with LoSparse's
    own unit: pruning every Δ steps inside the cubic phase, every step after it."""

    def __init__(self, layers: list[LoSparseLinear], schedule: CubicSchedule, cfg: dict):
        self.layers, self.schedule, self.cfg = layers, schedule, cfg
        self.delta = max(1, int(cfg["delta_t"]))
        self.prunings = 0
        self.last_kept = 1.0

    def after_step(self, t: int, optimizer) -> None:
        c = self.cfg
        count, close = t % self.delta + 1, (t + 1) % self.delta == 0
        for l in self.layers:
            l.update_importance(count, close, float(c["beta1"]), float(c["beta2"]))
        if self.prunes_at(t):
            self.prune(self.schedule.kept(t), optimizer)

    def prunes_at(self, t: int) -> bool:
        s = self.schedule
        if t < s.warmup:
            return False
        if s.in_cubic_phase(t):
            return (t + 1) % self.delta == 0
        return True

    @torch.no_grad()
    def prune(self, kept: float, optimizer) -> None:
        """Keep the top γ fraction of all S entries (k = ⌊γ·total⌋): the k-th largest key is the
        threshold and every entry whose key is ≥ it is kept (ties kept). Structured: the key of
        an entry is its row's mean score, so whole rows go together and a row weighs by its length."""
        total = sum(l.sparse.numel() for l in self.layers)
        k = math.floor(kept * total)
        if self.cfg["structured"]:
            keys = [l.score().mean(dim=1) for l in self.layers]  # one key per row of S
            weights = torch.cat([torch.full_like(kk, l.in_features) for kk, l in zip(keys, self.layers)])
        else:
            keys = [l.score().reshape(-1) for l in self.layers]
            weights = None
        flat = torch.cat(keys)
        if k <= 0:
            thr = math.inf
        elif k >= total:
            thr = -math.inf
        elif weights is None:
            thr = flat.kthvalue(flat.numel() - k + 1).values.item()  # the k-th largest
        else:
            vals, order = flat.sort(descending=True)
            cum = weights[order].cumsum(0)
            j = int(torch.searchsorted(cum, torch.tensor([float(k)], device=cum.device)).item())
            thr = vals[min(j, vals.numel() - 1)].item()
        kept_now = 0
        for kk, l in zip(keys, self.layers):
            keep = kk >= thr
            mask = keep[:, None].expand_as(l.sparse) if weights is not None else keep.view_as(l.sparse)
            l.sparse.mul_(mask)  # pruned entries of S are set to 0 (they may regrow, docs/algorithms.md §3)
            l.mask.copy_(mask)
            kept_now += int(mask.sum())
            if l.hard_mask:  # (engine choice) hard_mask: pruned entries lose their Adam state
                st = optimizer.state.get(l.sparse, {})
                for name in ("exp_avg", "exp_avg_sq"):
                    if name in st:
                        st[name].mul_(mask)
        self.prunings += 1
        self.last_kept = kept_now / total


# ============================================================================
# The run


def build_optimizer(model, tr: dict, method: str):
    """docs/algorithms.md §1: AdamW, decoupled weight decay, none on biases and LayerNorm
    weights; §2: movement scores in their own group at score_lr, no weight decay."""
    decay, no_decay, scores = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.endswith("mask_scores"):
            scores.append(p)
        elif name.endswith("bias") or "LayerNorm" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [
        {"params": decay, "weight_decay": float(tr["weight_decay"]), "lr": float(tr["lr"])},
        {"params": no_decay, "weight_decay": 0.0, "lr": float(tr["lr"])},
    ]
    if scores:
        groups.append({"params": scores, "weight_decay": 0.0, "lr": float(tr["score_lr"])})
    return torch.optim.AdamW(groups, lr=float(tr["lr"]), betas=(0.9, 0.999), eps=1e-8)


def load_model(model_dir: Path, num_labels: int, device):
    kw = dict(num_labels=num_labels, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    try:  # transformers ≥ 4.56 / 5.x spell it `dtype`; an F16 checkpoint must load as float32
        model, info = BertForSequenceClassification.from_pretrained(
            model_dir, dtype=torch.float32, output_loading_info=True, **kw)
    except TypeError:
        model, info = BertForSequenceClassification.from_pretrained(
            model_dir, torch_dtype=torch.float32, output_loading_info=True, **kw)
    missing = [k for k in info.get("missing_keys", []) if not k.startswith("classifier.")]
    if missing:
        die(f"{model_dir}: weights missing from the checkpoint: {missing[:8]}")
    dtypes = {p.dtype for p in model.parameters()}
    if dtypes != {torch.float32}:
        die(f"{model_dir}: parameters loaded as {dtypes}, expected float32")
    return model.to(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", required=True, choices=METHODS)
    ap.add_argument("--recipe", type=Path, help="engine recipe TOML (default: recipes/<method>.toml)")
    ap.add_argument("--kept-ratio", type=float, help="target.kept_ratio")
    ap.add_argument("--seed", type=int, help="train.seed")
    ap.add_argument("--epochs", type=float, help="train.epochs")
    ap.add_argument("--steps", type=int, help="train.steps (overrides epochs)")
    ap.add_argument("--lr", type=float, help="train.lr")
    ap.add_argument("--batch-size", type=int, help="train.batch_size")
    ap.add_argument("--max-train-rows", type=int, help="use only the first N training rows")
    ap.add_argument("--max-seq-len", type=int, help="data.max_seq_len")
    ap.add_argument("--precision", choices=("f32", "tf32", "bf16"), help="train.precision")
    ap.add_argument("--eval-every", type=int, help="train.eval_every (0: only at the end)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="any recipe key, e.g. --set losparse.unit_steps=100 (repeatable)")
    ap.add_argument("--train", type=Path, required=True, help="training CSV (header row)")
    ap.add_argument("--dev", type=Path, required=True, help="dev CSV (header row)")
    ap.add_argument("--text-a", default=None, help="text column (default: recipe data.text_a or 'sentence')")
    ap.add_argument("--label", default=None, help="label column (default: recipe data.label or 'label')")
    ap.add_argument("--model", type=Path, help="pre-trained Hugging Face BERT directory (default: the recipe's)")
    ap.add_argument("--output", type=Path, required=True)
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    ap.add_argument("--deterministic", action="store_true",
                    help="torch.use_deterministic_algorithms(True) (slower; bit-reproducible CUDA runs)")
    ap.add_argument("--save-model", action="store_true", help="also write OUTPUT/model (dense HF checkpoint)")
    ap.add_argument("--quiet", "-q", action="store_true")
    a = ap.parse_args()

    # ---------------- configuration (recipe + overrides, as `lpaf compress`)
    recipe_path = a.recipe or REPO / "recipes" / f"{a.method}.toml"
    recipe = load_recipe(recipe_path, a.sets)
    if recipe.get("method", a.method) != a.method:
        die(f"{recipe_path} is a '{recipe.get('method')}' recipe, not '{a.method}'")
    tr = section(recipe, "train", TRAIN_DEFAULTS)
    pr = section(recipe, "pruning", PRUNING_DEFAULTS | {"soft_tau": 0, "soft_lambda": 0, "soft_min_kept": 0})
    ls = section(recipe, "losparse", LOSPARSE_DEFAULTS)
    data_cfg = dict(recipe.get("data", {}))
    for key, val in (("seed", a.seed), ("epochs", a.epochs), ("steps", a.steps), ("lr", a.lr),
                     ("batch_size", a.batch_size), ("max_train_rows", a.max_train_rows),
                     ("precision", a.precision), ("eval_every", a.eval_every)):
        if val is not None:
            tr[key] = val
    kept_target = a.kept_ratio if a.kept_ratio is not None else float(recipe.get("target", {}).get("kept_ratio", 0.1))
    if not 0.0 < kept_target <= 1.0:
        die(f"kept ratio {kept_target}: must be in (0, 1]")
    max_len = int(a.max_seq_len or data_cfg.get("max_seq_len", 128))
    text_col = a.text_a or data_cfg.get("text_a") or "sentence"
    label_col = a.label or data_cfg.get("label") or "label"
    model_dir = Path(os.path.expanduser(str(a.model or recipe.get("model", "~/.cache/lpaf/minilm"))))
    if not (model_dir / "config.json").is_file():
        die(f"{model_dir}: not a Hugging Face model directory (no config.json)")
    if a.method in ("movement", "magnitude"):
        if a.method == "movement" and pr["score_rule"] != "adam":
            die(f"pruning.score_rule = {pr['score_rule']!r}: this reference implements 'adam' only")
        if pr["scope"] not in ("per_matrix", "global"):
            die(f"pruning.scope = {pr['scope']!r}: expected per_matrix or global")
        if not (0 <= pr["initial_warmup"] and 0 <= pr["final_warmup"] and pr["initial_warmup"] + pr["final_warmup"] <= 1):
            die("pruning.initial_warmup + pruning.final_warmup must be fractions summing to at most 1")
    if int(tr["grad_accum"]) < 1 or int(tr["batch_size"]) < 1:
        die("train.batch_size and train.grad_accum must be at least 1")
    precision = str(tr["precision"])
    if precision not in ("f32", "tf32", "bf16"):
        die(f"train.precision = {precision!r}: expected f32, tf32 or bf16")

    # ---------------- device and seeds
    if a.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(a.device)
        except RuntimeError as e:
            die(f"bad --device {a.device!r}: {e}")
    if device.type == "cuda" and not torch.cuda.is_available():
        die("no CUDA device visible to torch; use --device cpu")
    if a.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    seed = int(tr["seed"])
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    set_precision(precision)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    if a.quiet:
        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    if not a.quiet:
        log(f"torch {torch.__version__}, transformers {transformers.__version__}, device {device_name}, "
            f"{a.method} to kept {kept_target}, seed {seed}, {precision}")

    # ---------------- data
    tok = AutoTokenizer.from_pretrained(model_dir)
    tr_texts, tr_raw = read_csv(a.train, text_col, label_col)
    dv_texts, dv_raw = read_csv(a.dev, text_col, label_col)
    names = label_vocab(tr_raw)
    lid = {n: i for i, n in enumerate(names)}
    bad = sorted(set(dv_raw) - set(lid))
    if bad:
        die(f"{a.dev}: labels {bad[:5]} do not occur in {a.train}")
    if tr["max_train_rows"] is not None:
        n = int(tr["max_train_rows"])
        tr_texts, tr_raw = tr_texts[:n], tr_raw[:n]
    train = Encoded(tok, tr_texts, [lid[x] for x in tr_raw], max_len)
    dev = Encoded(tok, dv_texts, [lid[x] for x in dv_raw], max_len)
    bs, accum = int(tr["batch_size"]), int(tr["grad_accum"])
    if tr["steps"] is not None:
        total = int(tr["steps"])
        if total < 1:
            die("train.steps must be at least 1")
    else:
        if not float(tr["epochs"]) > 0:
            die(f"train.epochs = {tr['epochs']} must be positive")
        total = max(1, math.ceil(float(tr["epochs"]) * math.ceil(len(train) / bs) / accum))
    warmup_steps = rust_round(float(tr["warmup_ratio"]) * total)

    # ---------------- model: pre-trained start (docs/algorithms.md §0), dropout 0.1 (§1)
    model = load_model(model_dir, len(names), device)
    model.train()
    dense_params = 0
    extra: dict = {}
    if a.method in ("movement", "magnitude"):
        layers = []
        for parent, attr, _ in compressible(model):
            new = MaskedLinear(getattr(parent, attr), with_scores=a.method == "movement")
            setattr(parent, attr, new)
            layers.append(new)
            dense_params += new.weight.numel()
        warm = rust_round(float(pr["initial_warmup"]) * total)
        cool = rust_round(float(pr["final_warmup"]) * total)
        # The cubic schedule of docs/algorithms.md §2 from 1 to the target; warm-up /
        # final phase as fractions of the steps.
        pruner = MaskPruner(layers, CubicSchedule(1.0, kept_target, total, warm, cool), pr["scope"])
        extra["schedule"] = {"warmup_steps": warm, "cubic_steps": pruner.schedule.span, "final_steps": cool}
    else:
        if ls["delta_t"] < 1:
            die("losparse.delta_t must be at least 1")
        first = compressible(model)[0]
        o0, i0 = getattr(first[0], first[1]).weight.shape
        rho = float(ls["rank_ratio"])
        if ls["rank"] is not None:  # the engine turns one explicit rank into ρ on the first matrix
            rho = min(int(ls["rank"]) * (o0 + i0) / (o0 * i0), 0.999_999) - 1e-12
        if not 0.0 < rho < 1.0:
            die(f"losparse.rank_ratio = {rho}: must be in (0, 1)")
        layers = []
        lowrank = 0
        for parent, attr, _ in compressible(model):
            dense = getattr(parent, attr)
            o, i = dense.weight.shape
            r = uniform_rank(rho, o, i)
            new = LoSparseLinear(dense, r, bool(ls["hard_mask"]), float(ls["beta2"]) < 1.0)
            setattr(parent, attr, new)
            layers.append(new)
            dense_params += o * i
            lowrank += r * (o + i)
        lowrank_frac = lowrank / dense_params
        # γ_T = kept_ratio − low-rank fraction (docs/algorithms.md §3: kept ratio ≈
        # low-rank fraction + γ_T).
        gamma_t = float(ls["final_kept"]) if ls["final_kept"] is not None else kept_target - lowrank_frac
        if gamma_t <= 0:
            die(f"impossible budget: the low-rank part alone keeps {lowrank_frac:.4f} of the parameters, "
                f"the target kept ratio is {kept_target}; lower losparse.rank_ratio or raise the target")
        unit = int(ls["unit_steps"]) if ls["unit_steps"] is not None else max(1, math.ceil(total / 10))
        iw, fw = int(ls["initial_warmup"]), int(ls["final_warmup"])
        if (iw + fw) * unit > total:
            die(f"losparse: initial_warmup + final_warmup = {iw + fw} units of {unit} steps exceed "
                f"the {total} steps of the run")
        # docs/algorithms.md §3: the cubic schedule of §2 from 1 to γ_T with LoSparse's own unit U.
        pruner = LoSparsePruner(layers, CubicSchedule(1.0, gamma_t, total, iw * unit, fw * unit), ls)
        extra.update({"lowrank_params": lowrank, "lowrank_fraction": lowrank_frac, "final_kept_s": gamma_t,
                      "schedule": {"unit_steps": unit, "warmup_steps": iw * unit,
                                   "cubic_steps": pruner.schedule.span, "final_steps": fw * unit}})

    optimizer = build_optimizer(model, tr, a.method)
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_warmup_decay(warmup_steps, total))
    params = [p for g in optimizer.param_groups for p in g["params"]]
    batches = Batches(train, bs, seed, device)

    a.output.mkdir(parents=True, exist_ok=True)
    logf = open(a.output / "log.jsonl", "w", encoding="utf-8")

    def write_log(rec: dict) -> None:
        logf.write(json.dumps(rec) + "\n")
        logf.flush()

    if not a.quiet:
        log(f"training on {len(train)} rows for {total} steps (batch {bs} × {accum}), warm-up {warmup_steps}")
    eval_every = int(tr["eval_every"] or 0)
    log_every = int(tr["log_every"] or 0)
    samples = 0
    loss_acc = torch.zeros((), device=device)
    loss_n = 0
    last_metrics = None
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for step in range(total):
        gamma = pruner.update(step) if isinstance(pruner, MaskPruner) else None  # mask for this step
        for _ in range(accum):
            b = batches.next()
            with autocast(precision, device):
                out = model(**b)  # cross-entropy (docs/algorithms.md §1, classification)
            loss = out.loss.float() / accum
            loss.backward()
            loss_acc += loss.detach()
            samples += b["input_ids"].shape[0]
        loss_n += 1
        # docs/algorithms.md §1: gradient-norm clipping at max_grad_norm over every
        # trainable parameter (scores too).
        gnorm = torch.nn.utils.clip_grad_norm_(params, float(tr["max_grad_norm"])) if float(tr["max_grad_norm"]) > 0 else None
        lr_now = optimizer.param_groups[0]["lr"]
        optimizer.step()
        sched.step()
        if isinstance(pruner, LoSparsePruner):
            pruner.after_step(step, optimizer)  # importance (clipped ∇S), then pruning: docs/algorithms.md §3
        optimizer.zero_grad(set_to_none=True)
        done = step + 1
        if log_every and (done % log_every == 0 or done == total):
            rec = {"step": done, "loss": loss_acc.item() / max(1, loss_n), "lr": lr_now,
                   "elapsed_s": round(time.perf_counter() - t0, 3)}
            if gnorm is not None:
                rec["grad_norm"] = float(gnorm)
            if isinstance(pruner, MaskPruner):
                rec["kept_target"] = gamma
                rec.update(pruner.diagnostics())
            else:
                rec["s_kept_ratio"] = pruner.last_kept
                rec["prunings"] = pruner.prunings
            write_log(rec)
            if not a.quiet:
                log(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in rec.items()))
            loss_acc.zero_()
            loss_n = 0
        if (eval_every and done % eval_every == 0) or done == total:
            last_metrics = evaluate(model, dev, int(tr["eval_batch_size"]), precision, device, len(names))
            write_log({"event": "eval", "step": done, **{k: v for k, v in last_metrics},
                       "elapsed_s": round(time.perf_counter() - t0, 3)})
            if not a.quiet:
                log(f"step {done}: " + ", ".join(f"{k} {v:.4f}" for k, v in last_metrics))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    train_seconds = time.perf_counter() - t0

    # ---------------- final model and its kept ratio (docs/algorithms.md §0), from the final tensors
    with torch.no_grad():
        if isinstance(pruner, MaskPruner):
            final_diag = pruner.diagnostics() if a.method == "movement" else {}
            nnz = 0
            for l in layers:
                l.finalize()
                nnz += int(l.mask.count_nonzero())
            kept_ratio = nnz / dense_params
            extra.update({"nnz": nnz, "final": final_diag})
        else:
            nnz_s = sum(int(l.sparse.count_nonzero()) for l in layers)
            kept_ratio = (extra["lowrank_params"] + nnz_s) / dense_params
            extra.update({"nnz_s": nnz_s, "s_kept_fraction": nnz_s / dense_params, "prunings": pruner.prunings})
    metrics = evaluate(model, dev, int(tr["eval_batch_size"]), precision, device, len(names))
    summary = {
        "engine": "pytorch",
        "method": a.method,
        "kept_ratio": kept_ratio,
        "kept_target": kept_target,
        "dev_metrics": metrics,
        "main_metric": metrics[0][1],
        "train_seconds": train_seconds,
        "samples_per_second": samples / train_seconds if train_seconds > 0 else 0.0,
        "steps": total,
        "dense_params": dense_params,
        "device": device_name,
        "precision": precision,
        "seed": seed,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "recipe": str(recipe_path),
        "train_rows": len(train),
        "dev_rows": len(dev),
        **extra,
    }
    write_log({"event": "summary", **{k: summary[k] for k in ("kept_ratio", "main_metric", "train_seconds", "steps")}})
    logf.close()
    with open(a.output / "summary.json.partial", "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    os.replace(a.output / "summary.json.partial", a.output / "summary.json")

    if a.save_model:
        with torch.no_grad():
            for (parent, attr, _), l in zip(compressible(model), layers):
                w = l.to_dense() if isinstance(l, LoSparseLinear) else l.weight.detach()
                dense = nn.Linear(w.shape[1], w.shape[0], device=device)
                dense.weight.copy_(w)
                dense.bias.copy_(l.bias.detach())
                setattr(parent, attr, dense)
        model.config.id2label = {i: n for i, n in enumerate(names)}
        model.config.label2id = {n: i for i, n in enumerate(names)}
        model.save_pretrained(a.output / "model")
        tok.save_pretrained(a.output / "model")
    print(f"{a.method}: kept {kept_ratio:.4f}, " + ", ".join(f"{k} {v:.4f}" for k, v in metrics)
          + f", {total} steps in {train_seconds:.1f} s ({summary['samples_per_second']:.1f} samples/s) → "
          f"{a.output / 'summary.json'}")


if __name__ == "__main__":
    main()
