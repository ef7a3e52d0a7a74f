#!/usr/bin/env python3
"""Helpers of scripts/reproduce-polarity-with-torch.sh (stdlib only, Python ≥ 3.10).

    polarity_helpers.py split POLARITY_CSV OUTDIR/split [--seed 42] [--dev-fraction 0.1]
    polarity_helpers.py recipe-get RECIPE.toml KEY [DEFAULT]
    polarity_helpers.py table OUTDIR [--command "..."] [--device "..."] [--versions "..."]
    polarity_helpers.py eta OUTDIR [--device-kind cuda|cpu] < lines "ENGINE METHOD STEPS"   (seconds per run)

`split`: a fixed, seeded, stratified 90/10 split of the Pang & Lee polarity CSV
(4,000 rows `label,sentence`, UTF-8 with a BOM, no header, CRLF records, texts
ending in " \\n" inside the quotes) into `train.csv` and `dev.csv` with the
header `sentence,label` (label 0 = the file's −1 / negative, 1 = positive).
Sentences are stripped of surrounding whitespace. Each class is shuffled with
`random.Random(seed)` and its first round(fraction·n) rows go to dev; train
rows are then shuffled (same generator) so that any prefix (`--max-train-rows`)
holds both classes. Written once: existing files with the right row counts are
kept (a mismatch is an error, never a silent rewrite).

`table`: reads every run under OUTDIR (see reproduce-polarity-with-torch.sh for the
layout) and writes OUTDIR/results.jsonl (one object per run) and
OUTDIR/table.md (one row per engine × method × kept ratio; mean ± sd over
seeds), and prints the table.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import re
import statistics
import sys
from pathlib import Path


def die(msg: str) -> None:
    sys.exit(f"polarity_helpers.py: error: {msg}")


# --------------------------------------------------------------------------- split

LABELS = {"-1": 0, "1": 1}


def read_polarity(path: Path) -> list[tuple[str, int]]:
    rows = []
    with open(path, encoding="utf-8-sig", newline="") as f:
        for lineno, rec in enumerate(csv.reader(f), start=1):
            if not rec or all(not x.strip() for x in rec):
                continue
            if len(rec) != 2:
                die(f"{path}: record {lineno}: expected 2 fields (label, sentence), found {len(rec)}")
            label, text = rec[0].strip(), rec[1].strip()
            if label not in LABELS:
                die(f"{path}: record {lineno}: label {label!r} is neither 1 nor -1")
            if not text:
                die(f"{path}: record {lineno}: empty sentence")
            rows.append((text, LABELS[label]))
    return rows


def count_rows(path: Path) -> int:
    with open(path, encoding="utf-8", newline="") as f:
        r = csv.reader(f)
        header = next(r, None)
        if header != ["sentence", "label"]:
            die(f"{path}: header {header!r}, expected ['sentence', 'label']")
        return sum(1 for _ in r)


def cmd_split(a: argparse.Namespace) -> None:
    src, out = Path(a.polarity), Path(a.outdir)
    if not src.is_file():
        die(f"{src}: no such file (run scripts/fetch-assets.sh or pass --polarity)")
    rows = read_polarity(src)
    by_class: dict[int, list[int]] = {0: [], 1: []}
    for i, (_, y) in enumerate(rows):
        by_class[y].append(i)
    rng = random.Random(a.seed)
    dev_ids, train_ids = [], []
    for y in (0, 1):
        ids = by_class[y][:]
        rng.shuffle(ids)
        n_dev = int(math.floor(a.dev_fraction * len(ids) + 0.5))
        dev_ids += ids[:n_dev]
        train_ids += ids[n_dev:]
    rng.shuffle(train_ids)
    dev_ids.sort()  # dev keeps the file's order
    train_p, dev_p = out / "train.csv", out / "dev.csv"
    if train_p.exists() and dev_p.exists():
        nt, nd = count_rows(train_p), count_rows(dev_p)
        if (nt, nd) != (len(train_ids), len(dev_ids)):
            die(f"{out}: existing split has {nt}/{nd} rows, expected {len(train_ids)}/{len(dev_ids)}; remove it")
        print(f"split: keeping {train_p} ({nt} rows) and {dev_p} ({nd} rows)")
        return
    out.mkdir(parents=True, exist_ok=True)
    for path, ids in ((train_p, train_ids), (dev_p, dev_ids)):
        tmp = path.with_suffix(".csv.partial")
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["sentence", "label"])
            for i in ids:
                w.writerow([rows[i][0], rows[i][1]])
        os.replace(tmp, path)
    pos = lambda ids: sum(rows[i][1] for i in ids)  # noqa: E731
    print(
        f"split: {len(rows)} sentences → {train_p} ({len(train_ids)} rows, {pos(train_ids)} positive), "
        f"{dev_p} ({len(dev_ids)} rows, {pos(dev_ids)} positive); seed {a.seed}"
    )


# --------------------------------------------------------------------------- recipe-get


def load_toml(path: Path) -> dict:
    try:
        import tomllib  # Python ≥ 3.11
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        try:
            import tomli as tomllib  # type: ignore
        except ModuleNotFoundError:
            die("reading TOML needs Python ≥ 3.11 (tomllib) or the tomli package")
    with open(path, "rb") as f:
        return tomllib.load(f)


def cmd_recipe_get(a: argparse.Namespace) -> None:
    t = load_toml(Path(a.recipe))
    cur = t
    for part in a.key.split("."):
        if not isinstance(cur, dict) or part not in cur:
            if a.default is not None:
                print(a.default)
                return
            die(f"{a.recipe}: no key {a.key}")
        cur = cur[part]
    print(cur)


# --------------------------------------------------------------------------- table

RUN_RE = re.compile(r"^(?P<kind>engine|pytorch)-(?P<method>[a-z_]+)-k(?P<ratio>[0-9.]+)-s(?P<seed>\d+)$")
FT_RE = re.compile(r"^finetune-s(?P<seed>\d+)$")
METHOD_ORDER = ["dense", "movement", "soft_movement", "magnitude", "svd", "losparse", "lpaf"]


def read_json(p: Path):
    try:
        with open(p, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


def metric(metrics, name: str):
    """dev_metrics as [[name, value], …] (compress) or {name: value} (finetune's final_eval)."""
    if isinstance(metrics, dict):
        return metrics.get(name)
    for k, v in metrics or []:
        if k == name:
            return v
    return None


def collect(outdir: Path) -> list[dict]:
    logs = outdir / "logs"
    results = []
    names = sorted({p.stem for p in logs.glob("*.cmd")} | {p.stem for p in logs.glob("*.notrun")}) if logs.is_dir() else []
    for name in names:
        m, f = RUN_RE.match(name), FT_RE.match(name)
        if not (m or f):
            continue
        rec = {
            "run": name,
            "engine": "lpaf" if (f or m["kind"] == "engine") else "pytorch",
            "method": "dense" if f else m["method"],
            "kept_target": 1.0 if f else float(m["ratio"]),
            "seed": int((f or m)["seed"]),
            "log": str(logs / f"{name}.log"),
        }
        cmd_p, notrun_p = logs / f"{name}.cmd", logs / f"{name}.notrun"
        if not cmd_p.is_file():
            rec["status"] = "not run: " + notrun_p.read_text(encoding="utf-8").strip()
            results.append(rec)
            continue
        rec["command"] = cmd_p.read_text(encoding="utf-8").strip()
        rc_p = logs / f"{name}.rc"
        rc = int(rc_p.read_text().strip()) if rc_p.is_file() else None
        wall_p = logs / f"{name}.wall"
        rec["wall_seconds"] = float(wall_p.read_text().strip()) if wall_p.is_file() else None
        jobs_p = logs / f"{name}.jobs"
        rec["concurrent_jobs"] = int(jobs_p.read_text().strip()) if jobs_p.is_file() else 1
        s = read_json(outdir / name / "summary.json")
        if rc == 0 and s is not None:
            rec["status"] = "ok"
            if f:
                fe = (s.get("final_eval") or {}).get("metrics")
                rec["accuracy"] = metric(fe, "accuracy")
                rec["f1"] = metric(fe, "f1")
                rec["best_accuracy"] = s.get("best_metric")
                rec["kept_ratio"] = 1.0
                rec["device"] = s.get("device")
            else:
                rec["accuracy"] = metric(s.get("dev_metrics"), "accuracy")
                rec["f1"] = metric(s.get("dev_metrics"), "f1")
                rec["kept_ratio"] = s.get("kept_ratio")
                rec["device"] = s.get("device")
            rec["train_seconds"] = s.get("train_seconds")
            rec["samples_per_second"] = s.get("samples_per_second")
            rec["steps"] = s.get("steps")
        elif rc is None:
            rec["status"] = "running or interrupted"
        else:
            rec["status"] = "failed"
            rec["rc"] = rc
        if rec.get("device") is None:
            rec["device"] = device_from_log(Path(rec["log"]))
        results.append(rec)
    return results


def device_from_log(p: Path):
    try:
        for line in p.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("device: "):
                return line[len("device: "):].strip()
    except OSError:
        pass
    return None


def fmt_mean_sd(xs: list[float], scale: float = 1.0, digits: int = 1) -> str:
    if not xs:
        return "–"
    m = statistics.fmean(xs) * scale
    if len(xs) == 1:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} ± {statistics.stdev(xs) * scale:.{digits}f}"


def cmd_table(a: argparse.Namespace) -> None:
    outdir = Path(a.outdir)
    results = collect(outdir)
    with open(outdir / "results.jsonl", "w", encoding="utf-8") as f:
        for r in results:
            f.write(json.dumps(r) + "\n")
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["engine"], r["method"], r["kept_target"]), []).append(r)

    def order(key):
        eng, meth, ratio = key
        mi = METHOD_ORDER.index(meth) if meth in METHOD_ORDER else len(METHOD_ORDER)
        return (meth != "dense", -ratio, mi, eng != "lpaf", meth)

    lines = [
        "| engine | method | kept (target) | dev accuracy % (mean ± sd) | seeds ok | kept ratio (measured) "
        "| train s (mean) | samples/s (mean) | steps | device | notes |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    any_contended = False
    for key in sorted(groups, key=order):
        eng, meth, ratio = key
        runs = sorted(groups[key], key=lambda r: r["seed"])
        ok = [r for r in runs if r["status"] == "ok"]
        acc = [r["accuracy"] for r in ok if r.get("accuracy") is not None]
        kept = [r["kept_ratio"] for r in ok if r.get("kept_ratio") is not None]
        # Times from runs that had the machine to themselves when there are any.
        alone = [r for r in ok if r.get("concurrent_jobs", 1) == 1]
        timed = alone or ok
        contended = bool(timed) and not alone
        any_contended = any_contended or contended
        secs = [r["train_seconds"] for r in timed if r.get("train_seconds") is not None]
        sps = [r["samples_per_second"] for r in timed if r.get("samples_per_second") is not None]
        steps = sorted({r["steps"] for r in ok if r.get("steps") is not None})
        devs = sorted({str(r["device"]) for r in ok if r.get("device")})
        notes = []
        for r in runs:
            if r["status"].startswith("not run"):
                notes.append(f"s{r['seed']} {r['status']}")
            elif r["status"] != "ok":
                notes.append(f"s{r['seed']} {r['status']}" + (f" (rc {r['rc']})" if "rc" in r else "") + f", log {r['log']}")
        seeds_ok = f"{len(ok)}/{len(runs)}" + (" (" + ",".join(str(r["seed"]) for r in ok) + ")" if ok else "")
        if acc:
            acc_s = fmt_mean_sd(acc, 100.0, 1)
        elif any(r["status"] == "failed" for r in runs):
            acc_s = "failed"
        else:
            acc_s = runs[0]["status"].split(":")[0] if runs else "–"
        cells = [
            eng,
            meth,
            f"{ratio:g}",
            acc_s,
            seeds_ok,
            fmt_mean_sd(kept, 1.0, 4) if kept else "–",
            (f"{statistics.fmean(secs):.1f}" + ("†" if contended else "")) if secs else "–",
            (f"{statistics.fmean(sps):.1f}" + ("†" if contended else "")) if sps else "–",
            "/".join(str(s) for s in steps) or "–",
            ", ".join(devs) or "–",
            "; ".join(notes),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    header = [
        "# Sentence polarity (Pang & Lee, 4,000 sentences; fixed stratified 90/10 split), MiniLM-L6",
        "",
        "Dev accuracy of the final model (for `dense`: the end of fine-tuning), mean ± sample sd over seeds;",
        "kept ratio measured from the final tensors (docs/algorithms.md §0); train s = wall-clock of the training loop",
        "(including its periodic evaluations); samples/s = training samples ÷ train s.",
        "",
    ]
    counts: dict[str, int] = {}
    for r in results:
        key = r["status"].split(":")[0]
        counts[key] = counts.get(key, 0) + 1
    footer = [""]
    if any_contended:
        footer.append("† timed while other runs shared the machine (--jobs > 1): contended, not comparable.")
    footer.append("Runs: " + (", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "none") + ".")
    footer.append("")
    if a.command:
        footer.append(f"Command: `{a.command}`  ")
    if a.device:
        footer.append(f"Device: {a.device}  ")
    if a.versions:
        footer.append(f"Versions: {a.versions}  ")
    footer.append(f"Results: {outdir / 'results.jsonl'}; logs: {outdir / 'logs'}")
    text = "\n".join(header + lines + footer) + "\n"
    (outdir / "table.md").write_text(text, encoding="utf-8")
    print(text)


# --------------------------------------------------------------------------- eta

# Guesses until runs of the kind have been timed in OUTDIR (then their measured wall
# time per step, start-up included, replaces them). GPU: MiniLM-L6, batch 32 × 64
# tokens is launch-bound (~130 GFLOP per step); eager PyTorch ~15-25 ms per step
# with top-k / importance updates; the engine unmeasured on this model (guess).
DEFAULT_SECONDS_PER_STEP = {
    "cuda": {"lpaf": 0.015, "pytorch": 0.02},
    "cpu": {"lpaf": 1.5, "pytorch": 1.5},
}
DEFAULT_OVERHEAD = {  # start-up, loading, final evaluation (seconds per run)
    "cuda": {"lpaf": 8.0, "pytorch": 12.0},
    "cpu": {"lpaf": 15.0, "pytorch": 25.0},
}


def cmd_eta(a: argparse.Namespace) -> None:
    """Reads lines `ENGINE METHOD STEPS` on stdin and prints, per line, the seconds
    such a run should take: the wall time per step of finished runs of the same
    engine and method, else of the same engine, else a guess."""
    done = [r for r in collect(Path(a.outdir)) if r["status"] == "ok" and r.get("wall_seconds") and r.get("steps")]
    for line in sys.stdin:
        parts = line.split()
        if len(parts) != 3:
            continue
        engine, method, steps = parts[0], parts[1], int(parts[2])
        pool = [r for r in done if r["engine"] == engine and r["method"] == method] or [
            r for r in done if r["engine"] == engine]
        if pool:
            per_step = sum(r["wall_seconds"] for r in pool) / sum(r["steps"] for r in pool)
            est = per_step * steps
        else:
            est = DEFAULT_SECONDS_PER_STEP[a.device_kind][engine] * steps + DEFAULT_OVERHEAD[a.device_kind][engine]
        print(f"{est:.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("split")
    p.add_argument("polarity")
    p.add_argument("outdir")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--dev-fraction", type=float, default=0.1)
    p.set_defaults(fn=cmd_split)
    p = sub.add_parser("recipe-get")
    p.add_argument("recipe")
    p.add_argument("key")
    p.add_argument("default", nargs="?")
    p.set_defaults(fn=cmd_recipe_get)
    p = sub.add_parser("table")
    p.add_argument("outdir")
    p.add_argument("--command", default="")
    p.add_argument("--device", default="")
    p.add_argument("--versions", default="")
    p.set_defaults(fn=cmd_table)
    p = sub.add_parser("eta")
    p.add_argument("outdir")
    p.add_argument("--device-kind", choices=["cuda", "cpu"], default="cuda")
    p.set_defaults(fn=cmd_eta)
    a = ap.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
