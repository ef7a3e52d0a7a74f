#!/usr/bin/env python3
"""Writes the parity fixtures the Rust engine is tested against (tests/fixtures/).

A tiny random BERT (hidden 64, 2 layers, 4 heads, intermediate 128, 64
positions, a hand-written 130-token WordPiece vocabulary) with three heads
(sequence classification with 3 labels, regression, extractive QA). The encoder
weights are the same in the three models; only the heads differ. For one fixed
batch (B = 4, S = 12) each head's folder gets a `reference.safetensors` with the
inputs, labels, logits, loss, every hidden state, the pooled output and the
gradient of the loss with respect to every parameter, computed by
`transformers` in fp32 on the CPU with `model.eval()` (no dropout).

Also writes tokenizer-cases.json (what the Hugging Face fast tokenizer makes of
a list of texts with the tiny vocabulary), versions.json and README.md.

    python scripts/make_fixtures.py                  # writes tests/fixtures/
    python scripts/make_fixtures.py --check          # regenerates in a temp dir
                                                     # and compares with the committed files

Only the standard library, torch, transformers (and its own dependency
`tokenizers`), safetensors and numpy are used; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import zlib
from pathlib import Path

try:
    import numpy as np
    import safetensors
    import tokenizers
    import torch
    import transformers
    from safetensors.torch import load_file, save_file
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece
    from transformers import (
        AutoTokenizer,
        BertConfig,
        BertForQuestionAnswering,
        BertForSequenceClassification,
    )
except ImportError as e:  # pragma: no cover - environment problem
    sys.exit(f"make_fixtures.py: missing dependency ({e}); needs torch, transformers, safetensors, numpy")

SEED = 20240611
transformers.utils.logging.disable_progress_bar()
SEQ_LEN = 12
REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "tests" / "fixtures"

# ----------------------------------------------------------------------------
# Vocabulary: ids are line numbers of vocab.txt. Special tokens first.
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PUNCT = [".", ",", "!", "?", "'", "-", ":", ";", "(", ")", '"', "/"]
WORDS = """
the a an is was are be been it this that these there here
movie movies film story plot actor director music scene
who what where when why how which
and but or not no yes very too so just really quite
good great bad terrible boring fun funny wonderful best worst beautiful
love loved hate like liked enjoy
i you he she they we his her its their
of to in on with for at as by from about
one two three new old long short
man woman people peter paris cafe
play make made time life world heart year direct
do does did have has had can will would were s
un over four five six
""".split()
SUBWORDS = """
##s ##ed ##ing ##ly ##er ##est ##ful ##ness ##able ##ment ##y
##fun ##ny ##believ ##ably ##ish ##ize ##e ##a ##o ##ion ##ation ##al
""".split()
VOCAB = SPECIAL + PUNCT + WORDS + SUBWORDS

# The fixed batch: a mix of single sentences and pairs, padded to SEQ_LEN.
BATCH_TEXTS = [
    ("The movie was great!", None),
    ("Who directed the film?", "Peter directed it, in Paris."),  # truncated to 12
    ("An unbelievably boring, unfunny plot.", None),
    ("Is it good?", "Yes, very."),
]
CLS_LABELS = [2, 0, 1, 2]
REG_LABELS = [0.75, -1.25, 2.0, 0.3]

# Tokenizer cases: (text_a, text_b, max_len).
TOKENIZER_CASES = [
    ("the movie was great.", None, 16),
    ("The MOVIE Was GREAT!", None, 16),
    ("Wonderful, wonderfully; PLAYING plays played!?", None, 32),
    ("An unbelievably unfunny film-maker (really).", None, 32),
    ("he's the worst: 'boring' and \"long\"", None, 32),
    ("Café in Paris", None, 16),
    ("  the\tmovie\nwas   good  \n", None, 16),
    ("the\u00a0movie\u0000was\u200bgood", None, 16),
    ("CAFÉ naïve", None, 16),
    ("good " + "a" * 101 + " movie", None, 16),
    ("a xylophone and a playz", None, 16),
    ("the movie 电影 was good", None, 16),
    ("Who directed the film?", "Peter directed it.", 32),
    ("Is it good?", "Yes, very good.", 32),
    ("the story was long and boring and the actors were bad", "i liked it", 12),
    ("yes", "the story was long and boring and the actors were bad", 10),
    ("one two three four five six", "one two three four five six", 11),
    ("one two three four five six", "one two three four five six", 10),
    ("a very very very very very very long sentence with many words", None, 8),
]


def fail(msg: str) -> None:
    sys.exit(f"make_fixtures.py: error: {msg}")


# ----------------------------------------------------------------------------
# Tokenizer


def write_tokenizer(dest: Path) -> None:
    """vocab.txt, tokenizer.json and tokenizer_config.json for the tiny vocabulary.

    The backend is built with the `tokenizers` library exactly as BERT's
    uncased tokenizer is (BertNormalizer lowercase + accent stripping,
    BertPreTokenizer, WordPiece with "##", [CLS] A [SEP] B [SEP] template)
    rather than through `BertTokenizerFast(vocab_file=...)`, which
    transformers 5.x ignores (it silently builds a 5-token vocabulary).
    """
    dest.mkdir(parents=True, exist_ok=True)
    if len(set(VOCAB)) != len(VOCAB):
        fail("duplicate tokens in VOCAB")
    (dest / "vocab.txt").write_text("".join(t + "\n" for t in VOCAB), encoding="utf-8")
    vocab = {t: i for i, t in enumerate(VOCAB)}
    tok = Tokenizer(WordPiece(vocab, unk_token="[UNK]", continuing_subword_prefix="##", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    from tokenizers import decoders

    tok.decoder = decoders.WordPiece(prefix="##")
    tok.add_special_tokens(SPECIAL)
    tok.save(str(dest / "tokenizer.json"))
    config = {
        "tokenizer_class": "BertTokenizer",
        "do_lower_case": True,
        "tokenize_chinese_chars": True,
        "strip_accents": None,
        "unk_token": "[UNK]",
        "sep_token": "[SEP]",
        "pad_token": "[PAD]",
        "cls_token": "[CLS]",
        "mask_token": "[MASK]",
        "model_max_length": 64,
    }
    (dest / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def load_hf_tokenizer(folder: Path):
    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    if not getattr(tok, "is_fast", False):
        fail(f"AutoTokenizer loaded a slow tokenizer from {folder}")
    if tok.vocab_size != len(VOCAB):
        fail(f"tokenizer from {folder} has {tok.vocab_size} tokens, expected {len(VOCAB)}")
    return tok


def encode(tok, a: str, b: str | None, max_len: int, pad: bool) -> dict:
    enc = tok(
        a,
        b,
        add_special_tokens=True,
        truncation=True,  # 'longest_first'
        max_length=max_len,
        padding="max_length" if pad else False,
        return_token_type_ids=True,
        return_attention_mask=True,
    )
    return {k: list(enc[k]) for k in ("input_ids", "token_type_ids", "attention_mask")}


def tokenizer_cases(tok) -> list[dict]:
    raw = Tokenizer.from_str(tok.backend_tokenizer.to_str())
    cases = []
    for a, b, max_len in TOKENIZER_CASES:
        enc = encode(tok, a, b, max_len, pad=False)
        # Cross-check against the raw `tokenizers` backend (no transformers logic).
        raw.no_padding()
        raw.enable_truncation(max_length=max_len, strategy="longest_first")
        r = raw.encode(a, b) if b is not None else raw.encode(a)
        if r.ids != enc["input_ids"] or r.type_ids != enc["token_type_ids"]:
            fail(f"transformers and tokenizers disagree on {a!r} / {b!r}: {enc['input_ids']} vs {r.ids}")
        cases.append(
            {
                "text_a": a,
                "text_b": b,
                "max_len": max_len,
                "input_ids": enc["input_ids"],
                "token_type_ids": enc["token_type_ids"],
                "tokens": [VOCAB[i] for i in enc["input_ids"]],
            }
        )
    unk = VOCAB.index("[UNK]")
    if not any(unk in c["input_ids"] for c in cases):
        fail("no tokenizer case produces [UNK]")
    return cases


# ----------------------------------------------------------------------------
# Model


def tiny_config(**extra) -> BertConfig:
    return BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=64,
        type_vocab_size=2,
        hidden_act="gelu",
        layer_norm_eps=1e-12,
        initializer_range=0.02,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        pad_token_id=0,
        **extra,
    )


def init_parameters(model: torch.nn.Module, seed: int) -> None:
    """Deterministic init, one generator per parameter keyed by its name.

    A parameter with the same name gets the same values in every head, so the
    three models share the encoder. Scales are chosen so that every part of the
    network is exercised: LayerNorm weights 1 + N(0, 0.2²), every bias
    N(0, 0.1²), linear weights N(0, 1/in) (attention clearly non-uniform, GELU
    inputs of order 1), embeddings N(0, 0.5²) (the [PAD] row is not zero).
    """
    with torch.no_grad():
        for name, p in model.named_parameters():
            g = torch.Generator().manual_seed(seed * 7919 + zlib.crc32(name.encode()))
            z = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if name.endswith("LayerNorm.weight"):
                v = 1.0 + 0.2 * z
            elif name.endswith(".bias"):
                v = 0.1 * z
            elif "embeddings" in name:
                v = 0.5 * z
            elif p.dim() == 2:
                v = z / math.sqrt(p.shape[1])
            else:
                fail(f"no init rule for parameter {name} {tuple(p.shape)}")
            p.copy_(v)


def make_batch(tok) -> dict[str, torch.Tensor]:
    rows = [encode(tok, a, b, SEQ_LEN, pad=True) for a, b in BATCH_TEXTS]
    batch = {k: torch.tensor([r[k] for r in rows], dtype=torch.int64) for k in rows[0]}
    unk = VOCAB.index("[UNK]")
    if (batch["input_ids"] == unk).any():
        fail(f"the fixture batch tokenizes to [UNK]: {batch['input_ids'].tolist()}")
    mask = batch["attention_mask"]
    if mask.all() or not mask[:, -1].eq(1).any():
        fail("the fixture batch must have both padded rows and a full row")
    if not (batch["token_type_ids"] == 1).any():
        fail("the fixture batch has no second segment")
    return batch


def qa_positions(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Answer spans: inside the second segment for pairs, at [CLS] (no answer) or
    inside the sentence for single rows."""
    starts, ends = [], []
    for r in range(batch["input_ids"].shape[0]):
        tt = batch["token_type_ids"][r]
        n = int(batch["attention_mask"][r].sum())
        if tt.eq(1).any():
            first_b = int(tt.eq(1).nonzero()[0])
            starts.append(first_b)
            ends.append(min(first_b + 1, n - 2))
        elif r == 0:
            starts.append(0)
            ends.append(0)
        else:
            starts.append(2)
            ends.append(n - 2)
    return torch.tensor(starts, dtype=torch.int64), torch.tensor(ends, dtype=torch.int64)


HEADS = {
    "cls": dict(cls=BertForSequenceClassification, kw=dict(num_labels=3, problem_type="single_label_classification")),
    "reg": dict(cls=BertForSequenceClassification, kw=dict(num_labels=1, problem_type="regression")),
    "qa": dict(cls=BertForQuestionAnswering, kw=dict(num_labels=2)),
}


def build_model(head: str, seed: int) -> torch.nn.Module:
    spec = HEADS[head]
    config = tiny_config(**spec["kw"])
    config._attn_implementation = "eager"  # plain matmul + softmax, no fused SDPA kernel
    torch.manual_seed(seed)
    model = spec["cls"](config)
    init_parameters(model, seed)
    model.eval()
    return model


def run_reference(model: torch.nn.Module, head: str, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    model.eval()
    model.zero_grad(set_to_none=True)
    captured = {}
    hook = None
    if getattr(model.bert, "pooler", None) is not None:
        hook = model.bert.pooler.register_forward_hook(lambda m, i, o: captured.__setitem__("pooled", o))
    inputs = {k: batch[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
    ref: dict[str, torch.Tensor] = dict(inputs)
    if head == "cls":
        labels = torch.tensor(CLS_LABELS, dtype=torch.int64)
        out = model(**inputs, labels=labels, output_hidden_states=True, return_dict=True)
        ref["labels"] = labels
        ref["logits"] = out.logits
    elif head == "reg":
        labels = torch.tensor(REG_LABELS, dtype=torch.float32)
        out = model(**inputs, labels=labels, output_hidden_states=True, return_dict=True)
        ref["labels"] = labels
        ref["logits"] = out.logits
    else:
        sp, ep = qa_positions(batch)
        out = model(**inputs, start_positions=sp, end_positions=ep, output_hidden_states=True, return_dict=True)
        ref["start_positions"] = sp
        ref["end_positions"] = ep
        ref["start_logits"] = out.start_logits
        ref["end_logits"] = out.end_logits
    if hook is not None:
        hook.remove()
        ref["pooled_output"] = captured["pooled"]
    out.loss.backward()
    ref["loss"] = out.loss.reshape(1)
    n_layers = model.config.num_hidden_layers
    if len(out.hidden_states) != n_layers + 1:
        fail(f"expected {n_layers + 1} hidden states, got {len(out.hidden_states)}")
    for i, h in enumerate(out.hidden_states):
        ref[f"hidden_states.{i}"] = h
    for name, p in model.named_parameters():
        if p.grad is None:
            fail(f"parameter {name} got no gradient")
        ref[f"grad.{name}"] = p.grad
    out_tensors = {}
    for k, v in ref.items():
        v = v.detach()
        if v.is_floating_point():
            v = v.to(torch.float32)
        else:
            v = v.to(torch.int64)
        out_tensors[k] = v.contiguous().clone()
    return out_tensors


def independent_loss(head: str, ref: dict[str, torch.Tensor]) -> torch.Tensor:
    """The loss recomputed from the stored logits, to pin down the reduction."""
    F = torch.nn.functional
    if head == "cls":
        return F.cross_entropy(ref["logits"], ref["labels"], reduction="mean")
    if head == "reg":
        return F.mse_loss(ref["logits"].reshape(-1), ref["labels"], reduction="mean")
    s = F.cross_entropy(ref["start_logits"], ref["start_positions"], reduction="mean")
    e = F.cross_entropy(ref["end_logits"], ref["end_positions"], reduction="mean")
    return (s + e) / 2


def check_gradients(head: str, model: torch.nn.Module, ref: dict[str, torch.Tensor]) -> list[str]:
    """Every gradient non-zero; the word-embedding rows of tokens not in the
    batch and the [PAD] row (nn.Embedding padding_idx) are exactly zero."""
    notes = []
    for name, _ in model.named_parameters():
        g = ref[f"grad.{name}"]
        if not torch.isfinite(g).all():
            fail(f"{head}: non-finite gradient for {name}")
        if g.abs().max() == 0:
            fail(f"{head}: gradient of {name} is all zero")
    wg = ref["grad.bert.embeddings.word_embeddings.weight"]
    if wg[0].abs().max() != 0:
        notes.append("grad of the [PAD] word-embedding row is NOT zero")
    return notes


def write_head(out: Path, head: str, tok_dir: Path, seed: int) -> dict[str, torch.Tensor]:
    d = out / f"tiny-bert-{head}"
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    model = build_model(head, seed)
    tok = load_hf_tokenizer(tok_dir)
    batch = make_batch(tok)
    ref = run_reference(model, head, batch)

    loss2 = independent_loss(head, ref)
    if not torch.allclose(loss2, ref["loss"][0], rtol=1e-6, atol=0):
        fail(f"{head}: loss {ref['loss'].item()} does not match the recomputed {loss2.item()}")
    for note in check_gradients(head, model, ref):
        print(f"note ({head}): {note}")

    model.save_pretrained(str(d), safe_serialization=True)
    for f in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(tok_dir / f, d / f)
    save_file(ref, str(d / "reference.safetensors"), metadata={"format": "pt", "seed": str(seed)})

    # The saved checkpoint must reproduce the reference when loaded the ordinary way.
    reloaded = HEADS[head]["cls"].from_pretrained(str(d), local_files_only=True, attn_implementation="eager")
    ref2 = run_reference(reloaded, head, batch)
    for k, v in ref.items():
        if not torch.equal(v, ref2[k]):
            fail(f"{head}: reloading {d} changes {k} (max diff {(v.double() - ref2[k].double()).abs().max()})")
    return ref


def versions(seed: int) -> dict:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
        "seed": seed,
        "script": "scripts/make_fixtures.py",
    }


def generate(out: Path, seed: int) -> None:
    torch.set_num_threads(1)  # fixed reduction order on the CPU
    torch.set_float32_matmul_precision("highest")
    torch.use_deterministic_algorithms(True)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as td:
        tok_dir = Path(td) / "tok"
        write_tokenizer(tok_dir)
        tok = load_hf_tokenizer(tok_dir)
        cases = tokenizer_cases(tok)
        (out / "tokenizer-cases.json").write_text(json.dumps(cases, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        for head in HEADS:
            ref = write_head(out, head, tok_dir, seed)
            loss = ref["loss"].item()
            print(f"tiny-bert-{head}: loss {loss:.6f}, {len(ref)} tensors")
    (out / "versions.json").write_text(json.dumps(versions(seed), indent=2) + "\n", encoding="utf-8")


def compare(new: Path, old: Path, rtol: float, atol: float) -> bool:
    """Compares a fresh generation with the committed one: ‖a−b‖ ≤ rtol·‖b‖ + atol
    per tensor (atol covers the gradients that are zero in exact arithmetic)."""
    ok = True
    for name in ("tokenizer-cases.json",):
        if json.loads((new / name).read_text()) != json.loads((old / name).read_text()):
            print(f"MISMATCH {name}")
            ok = False
    for head in HEADS:
        for f in ("model.safetensors", "reference.safetensors"):
            a, b = load_file(str(new / f"tiny-bert-{head}" / f)), load_file(str(old / f"tiny-bert-{head}" / f))
            if set(a) != set(b):
                print(f"MISMATCH tiny-bert-{head}/{f}: names differ: {sorted(set(a) ^ set(b))}")
                ok = False
                continue
            worst = 0.0
            for k in a:
                x, y = a[k], b[k]
                if x.dtype != y.dtype or x.shape != y.shape:
                    print(f"MISMATCH tiny-bert-{head}/{f}:{k}: {x.dtype}{tuple(x.shape)} vs {y.dtype}{tuple(y.shape)}")
                    ok = False
                    continue
                if not x.is_floating_point():
                    if not torch.equal(x, y):
                        print(f"MISMATCH tiny-bert-{head}/{f}:{k}: integer values differ")
                        ok = False
                    continue
                diff = (x.double() - y.double()).norm().item()
                ref_norm = y.double().norm().item()
                rel = diff / max(ref_norm, 1e-30)
                if ref_norm > atol:
                    worst = max(worst, rel)
                if diff > rtol * ref_norm + atol:
                    print(f"MISMATCH tiny-bert-{head}/{f}:{k}: difference {diff:.3e} (relative {rel:.3e})")
                    ok = False
            print(f"tiny-bert-{head}/{f}: worst relative difference {worst:.3e}")
    return ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="fixture folder (default tests/fixtures)")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--check", action="store_true", help="regenerate into a temporary folder and compare with --out")
    ap.add_argument("--rtol", type=float, default=1e-5, help="relative tolerance (‖a−b‖/‖b‖) for --check")
    ap.add_argument("--atol", type=float, default=1e-6, help="absolute tolerance on ‖a−b‖ for --check")
    args = ap.parse_args()
    if args.check:
        if not (args.out / "tiny-bert-cls" / "reference.safetensors").is_file():
            fail(f"nothing to check in {args.out}")
        with tempfile.TemporaryDirectory() as td:
            generate(Path(td), args.seed)
            ok = compare(Path(td), args.out, args.rtol, args.atol)
        print("check: OK" if ok else "check: MISMATCH")
        sys.exit(0 if ok else 1)
    generate(args.out, args.seed)
    print(f"fixtures written to {args.out}")


if __name__ == "__main__":
    main()
