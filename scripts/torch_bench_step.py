#!/usr/bin/env python3
"""PyTorch + transformers peer for `lpaf bench train`: times one BERT fine-tuning
step the way users run it today (eager PyTorch, transformers'
BertForSequenceClassification), dense and with the compressed layers the
papers' PyTorch code uses. Run it in the same invocation as the engine's own
benchmark and report ratios (absolute times drift between machines).

Model: `BertConfig()` defaults (BERT-base: 12 layers, hidden 768, 12 heads,
intermediate 3072, vocab 30522), random init (seed), num_labels 2, transformers'
default attention (SDPA). Batch 32 × sequence 128 of random token ids, all
tokens attended, labels in {0, 1}; the same batch every step.

Timed, per variant and precision:
- step: forward (train mode, dropout 0.1) + cross-entropy loss + backward +
  AdamW step (lr 1e-4, torch's default implementation) + zero_grad
  (+ LoSparse's importance update, see below);
- forward: inference forward only (`model.eval()`, `torch.no_grad()`).
Each: 3 warm-ups, then the median of `--repeats` (10) timed repetitions,
with CUDA events on a GPU (wall clock on the CPU).

Precisions: `fp32` (TF32 off: torch.backends.cuda.matmul.allow_tf32 = False,
torch.backends.cudnn.allow_tf32 = False), `tf32` (both on), `bf16`
(fp32 weights, `torch.autocast(dtype=torch.bfloat16)`, TF32 off).

Variants (the 72 encoder matrices Q, K, V, attention-output, intermediate,
output of every layer are replaced; embeddings, pooler, classifier untouched):
- `dense`: unchanged.
- `movement`: movement pruning (Sanh et al. 2020), 10 % kept: the layer keeps
  its dense weight W and a score matrix (init 0); forward uses
  W ⊙ TopK(scores) where the mask is built by sorting the scores (as the
  published code does) and the scores get their gradient by straight-through
  estimation (∂L/∂scores = ∂L/∂W' ⊙ W). Scores train with AdamW lr 1e-2,
  no weight decay.
- `losparse`: LoSparse (Li et al. 2023), rank r = ⌈ρ·out·in/(out+in)⌉ with
  ρ = 0.1, U (out×r), V (r×in) from a truncated SVD, dense S = W − U·V with a
  fixed mask keeping the 10 % largest |S| of each matrix; forward
  x·Vᵀ·Uᵀ + x·(S ⊙ mask)ᵀ + b. After the optimizer step (before zero_grad) the
  step also does the pruner's per-step importance update on every S:
  window mean of |S ⊙ ∇S| and, every 10 steps, the β1 = 0.85 moving average
  (`--no-losparse-importance` leaves it out). The periodic global
  re-thresholding is not timed.
- `factorized`: two linears, x → V (r×in, no bias) → U (out×r, bias), same r.

Output: one JSON object per line on stdout,
  {"variant", "precision", "step_ms", "forward_ms", "samples_per_s", ...}
(samples_per_s = batch / step time), then a markdown table. Progress goes to
stderr.

    python scripts/torch_bench_step.py                              # all, on cuda
    python scripts/torch_bench_step.py --variants dense,movement --precisions bf16
    python scripts/torch_bench_step.py --device cpu --tiny --repeats 1   # smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import sys
import time

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    import transformers
    from transformers import BertConfig, BertForSequenceClassification
except ImportError as e:  # pragma: no cover - environment problem
    sys.exit(f"torch_bench_step.py: missing dependency ({e}); needs torch and transformers")

VARIANTS = ("dense", "movement", "losparse", "factorized")
PRECISIONS = ("fp32", "tf32", "bf16")
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


def lowrank_rank(out_f: int, in_f: int, rho: float) -> int:
    return max(1, math.ceil(rho * out_f * in_f / (out_f + in_f)))


def truncated_svd(w: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact rank-r truncated SVD: (U_r, √Σ_r, V_rᵀ) on w's device."""
    u, s, vt = torch.linalg.svd(w, full_matrices=False)
    return u[:, :r], s[:r].sqrt(), vt[:r]


# ----------------------------------------------------------------------------
# Compressed layers


class _TopKStraightThrough(torch.autograd.Function):
    """Mask of the ⌊keep·numel⌋ largest scores, found by a full sort;
    the gradient passes straight through to the scores."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, keep: float) -> torch.Tensor:
        mask = torch.zeros_like(scores)
        _, order = scores.flatten().sort(descending=True)
        k = int(keep * scores.numel())
        mask.view(-1)[order[:k]] = 1.0
        return mask

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


class MovementLinear(nn.Module):
    def __init__(self, dense: nn.Linear, keep: float):
        super().__init__()
        self.weight = nn.Parameter(dense.weight.detach().clone())
        self.bias = nn.Parameter(dense.bias.detach().clone())
        self.mask_scores = nn.Parameter(torch.zeros_like(self.weight))
        self.keep = keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = _TopKStraightThrough.apply(self.mask_scores, self.keep)
        return F.linear(x, self.weight * mask, self.bias)


class LoSparseLinear(nn.Module):
    def __init__(self, dense: nn.Linear, rho: float, s_keep: float):
        super().__init__()
        w = dense.weight.detach().float()
        out_f, in_f = w.shape
        r = lowrank_rank(out_f, in_f, rho)
        u, root, vt = truncated_svd(w, r)
        self.lowrank_u = nn.Parameter((u * root).contiguous())  # out × r
        self.lowrank_v = nn.Parameter((root[:, None] * vt).contiguous())  # r × in
        residual = w - self.lowrank_u.detach() @ self.lowrank_v.detach()
        self.sparse = nn.Parameter(residual.contiguous())
        k = max(1, int(s_keep * residual.numel()))
        thresh = residual.abs().flatten().kthvalue(residual.numel() - k + 1).values
        self.register_buffer("mask", (residual.abs() >= thresh).to(residual.dtype))
        self.bias = nn.Parameter(dense.bias.detach().clone())
        # Pruner state: window mean of |S ⊙ ∇S| and its moving average.
        self.register_buffer("ipt_window", torch.zeros_like(residual), persistent=False)
        self.register_buffer("ipt_avg", torch.zeros_like(residual), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = F.linear(F.linear(x, self.lowrank_v), self.lowrank_u)
        return low + F.linear(x, self.sparse * self.mask) + self.bias

    @torch.no_grad()
    def update_importance(self, local_step: int, close_window: bool, beta1: float) -> None:
        if self.sparse.grad is None:
            return
        ipt = (self.sparse * self.sparse.grad).abs_()
        if local_step == 0:
            self.ipt_window.copy_(ipt)
        else:
            self.ipt_window.mul_(local_step / (local_step + 1)).add_(ipt, alpha=1.0 / (local_step + 1))
        if close_window:
            self.ipt_avg.mul_(beta1).add_(self.ipt_window, alpha=1.0 - beta1)


class FactorizedLinear(nn.Module):
    def __init__(self, dense: nn.Linear, rho: float):
        super().__init__()
        w = dense.weight.detach().float()
        out_f, in_f = w.shape
        r = lowrank_rank(out_f, in_f, rho)
        u, root, vt = truncated_svd(w, r)
        self.first = nn.Linear(in_f, r, bias=False, device=w.device)
        self.second = nn.Linear(r, out_f, bias=True, device=w.device)
        with torch.no_grad():
            self.first.weight.copy_(root[:, None] * vt)
            self.second.weight.copy_(u * root)
            self.second.bias.copy_(dense.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x))


def compress(model: nn.Module, variant: str, args) -> list[nn.Module]:
    """Replaces the encoder's compressible linears in place; returns the new modules."""
    if variant == "dense":
        return []
    replaced = []
    for layer in model.bert.encoder.layer:
        for path in COMPRESSIBLE:
            parent = layer
            for name in path[:-1]:
                parent = getattr(parent, name)
            dense = getattr(parent, path[-1])
            if not isinstance(dense, nn.Linear):
                raise RuntimeError(f"expected nn.Linear at {'.'.join(path)}, found {type(dense).__name__}")
            if variant == "movement":
                new = MovementLinear(dense, args.keep)
            elif variant == "losparse":
                new = LoSparseLinear(dense, args.rho, args.s_keep)
            elif variant == "factorized":
                new = FactorizedLinear(dense, args.rho)
            else:
                raise ValueError(variant)
            setattr(parent, path[-1], new)
            replaced.append(new)
    return replaced


# ----------------------------------------------------------------------------
# Timing


class Timer:
    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def time_ms(self, fn, warmup: int, repeats: int) -> float:
        for _ in range(warmup):
            fn()
        times = []
        if self.cuda:
            torch.cuda.synchronize()
            for _ in range(repeats):
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
        else:
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)


def set_precision(precision: str) -> None:
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32


def autocast_ctx(precision: str, device: torch.device):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def build_model(variant: str, args, device: torch.device):
    if args.tiny:
        config = BertConfig(
            vocab_size=1000,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=256,
            max_position_embeddings=128,
            num_labels=2,
        )
    else:
        config = BertConfig(num_labels=2)
    if args.attn_implementation:
        config._attn_implementation = args.attn_implementation
    torch.manual_seed(args.seed)
    model = BertForSequenceClassification(config)
    model.to(device)
    with torch.no_grad():
        replaced = compress(model, variant, args)  # SVDs on the device
    return model, replaced, config


def make_optimizer(model: nn.Module, variant: str, args) -> torch.optim.Optimizer:
    kw = {"fused": True} if args.fused_adamw else {}
    if variant == "movement":
        scores = [p for n, p in model.named_parameters() if n.endswith("mask_scores")]
        ids = {id(p) for p in scores}
        rest = [p for p in model.parameters() if id(p) not in ids]
        groups = [
            {"params": rest, "lr": args.lr},
            {"params": scores, "lr": args.score_lr, "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(groups, lr=args.lr, **kw)
    return torch.optim.AdamW(model.parameters(), lr=args.lr, **kw)


def bench_variant(variant: str, precisions: list[str], args, device: torch.device, timer: Timer):
    """Builds the model once and yields one result per precision (each with a
    fresh optimizer)."""
    model, replaced, config = build_model(variant, args, device)
    batch, seq = args.batch, args.seq
    gen = torch.Generator().manual_seed(args.seed + 1)
    inputs = {
        "input_ids": torch.randint(0, config.vocab_size, (batch, seq), generator=gen).to(device),
        "token_type_ids": torch.zeros(batch, seq, dtype=torch.int64, device=device),
        "attention_mask": torch.ones(batch, seq, dtype=torch.int64, device=device),
    }
    labels = torch.randint(0, 2, (batch,), generator=gen).to(device)
    losparse = [m for m in replaced if isinstance(m, LoSparseLinear)] if args.losparse_importance else []
    n_params = sum(p.numel() for p in model.parameters())

    for precision in precisions:
        log(f"{variant} / {precision} ...")
        set_precision(precision)
        opt = make_optimizer(model, variant, args)
        state = {"step": 0}

        def train_step():
            model.train()
            with autocast_ctx(precision, device):
                out = model(**inputs, labels=labels)
            out.loss.backward()
            opt.step()
            if losparse:
                local = state["step"] % args.delta
                close = local == args.delta - 1
                for m in losparse:
                    m.update_importance(local, close, 0.85)
            opt.zero_grad(set_to_none=True)
            state["step"] += 1

        def forward_only():
            model.eval()
            with torch.no_grad(), autocast_ctx(precision, device):
                model(**inputs)

        try:
            step_ms = timer.time_ms(train_step, args.warmup, args.repeats)
            forward_ms = timer.time_ms(forward_only, args.warmup, args.repeats)
        except torch.cuda.OutOfMemoryError as e:  # keep going with the other cells
            opt.zero_grad(set_to_none=True)
            del opt
            if device.type == "cuda":
                torch.cuda.empty_cache()
            yield {"variant": variant, "precision": precision, "error": f"out of memory: {str(e)[:200]}"}
            continue
        del opt
        if device.type == "cuda":
            torch.cuda.empty_cache()
        yield {
            "variant": variant,
            "precision": precision,
            "step_ms": round(step_ms, 3),
            "forward_ms": round(forward_ms, 3),
            "samples_per_s": round(batch / (step_ms / 1e3), 1),
            "batch": batch,
            "seq": seq,
            "params": n_params,
            "device": args.device_name,
        }
    del model, replaced, losparse
    if device.type == "cuda":
        torch.cuda.empty_cache()


def parse_list(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if items == ["all"]:
        return list(allowed)
    bad = [t for t in items if t not in allowed]
    if bad or not items:
        raise SystemExit(f"torch_bench_step.py: unknown {what} {bad or text!r}; choose from {', '.join(allowed)}")
    return items


def markdown(results: list[dict], args) -> str:
    lines = [
        f"PyTorch {torch.__version__}, transformers {transformers.__version__}, {args.device_name}, "
        f"batch {args.batch} × seq {args.seq}{' (tiny config)' if args.tiny else ''}, "
        f"median of {args.repeats} after {args.warmup} warm-ups",
        "",
        "| variant | precision | step ms | forward ms | samples/s |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['variant']} | {r['precision']} | error: {r['error']} | | |")
        else:
            lines.append(
                f"| {r['variant']} | {r['precision']} | {r['step_ms']:.1f} | {r['forward_ms']:.1f} | {r['samples_per_s']:.1f} |"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default="all", help=f"comma list of {', '.join(VARIANTS)} (default all)")
    ap.add_argument("--precisions", default="all", help=f"comma list of {', '.join(PRECISIONS)} (default all)")
    ap.add_argument("--repeats", type=int, default=10, help="timed repetitions (median reported)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed repetitions first")
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    ap.add_argument("--tiny", action="store_true", help="tiny BERT (hidden 64, 2 layers), batch 4 × seq 16 unless given")
    ap.add_argument("--batch", type=int, default=None, help="batch size (default 32; 4 with --tiny)")
    ap.add_argument("--seq", type=int, default=None, help="sequence length (default 128; 16 with --tiny)")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--score-lr", type=float, default=1e-2, help="AdamW lr of the movement scores")
    ap.add_argument("--keep", type=float, default=0.10, help="movement: kept fraction of each matrix")
    ap.add_argument("--rho", type=float, default=0.10, help="LoSparse / factorized: low-rank parameter ratio")
    ap.add_argument("--s-keep", type=float, default=0.10, help="LoSparse: kept fraction of S")
    ap.add_argument("--delta", type=int, default=10, help="LoSparse: importance window (steps)")
    ap.add_argument(
        "--no-losparse-importance", dest="losparse_importance", action="store_false",
        help="leave LoSparse's per-step importance update out of the step",
    )
    ap.add_argument("--fused-adamw", action="store_true", help="AdamW(fused=True) instead of the default")
    ap.add_argument(
        "--attn-implementation", default=None,
        help="transformers attention implementation (default: transformers' own, SDPA)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-table", action="store_true", help="JSON lines only")
    args = ap.parse_args()

    variants = parse_list(args.variants, VARIANTS, "variant")
    precisions = parse_list(args.precisions, PRECISIONS, "precision")
    if args.repeats < 1 or args.warmup < 0:
        raise SystemExit("torch_bench_step.py: --repeats must be ≥ 1 and --warmup ≥ 0")
    args.batch = args.batch or (4 if args.tiny else 32)
    args.seq = args.seq or (16 if args.tiny else 128)

    try:
        device = torch.device(args.device)
    except RuntimeError as e:
        raise SystemExit(f"torch_bench_step.py: bad --device {args.device!r}: {e}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("torch_bench_step.py: no CUDA device visible to torch; use --device cpu for a smoke test")
        torch.cuda.set_device(device)
        args.device_name = torch.cuda.get_device_name(device)
    else:
        args.device_name = "cpu"
    log(f"torch {torch.__version__}, transformers {transformers.__version__}, device {args.device_name}")

    results = []
    timer = Timer(device)
    for variant in variants:
        log(f"building {variant} ...")
        for r in bench_variant(variant, precisions, args, device, timer):
            results.append(r)
            print(json.dumps(r), flush=True)
    set_precision("fp32")
    if not args.no_table:
        print()
        print(markdown(results, args))


if __name__ == "__main__":
    main()
