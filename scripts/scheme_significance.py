#!/usr/bin/env python
"""docs/results.md 5.6: are section 5's gaps more than noise? For pairs of models whose folders this machine
still has (runs/schemes, runs/teachers; seeds paired by number where both sides have them), each model's dev
predictions (`textdistill evaluate --predictions`, kept in runs/significance/) and `textdistill significance`
on them; prints (or splices, --splice FILE) a markdown table.
  .venv/bin/python scripts/scheme_significance.py [--data-dir ../shared/data/glue] [--splice docs/results.md]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
S, T = "runs/schemes", "runs/teachers"
# (label, task, A pattern, B pattern): {s} is a seed; a pattern without it is one model (one file a side)
PAIRS = [
    ("SST-2: DML 3-layer peer vs KD from teacher seed 1", "sst2", f"{S}/sst2/kd-teacher-s1-s{{s}}/model",
     f"{S}/sst2/dml-s{{s}}/l3/model"),
    ("SST-2: KD from 3 teachers (average) vs KD from teacher seed 1", "sst2", f"{S}/sst2/kd-teacher-s1-s{{s}}/model",
     f"{S}/sst2/kd-3teachers-average-s{{s}}/model"),
    ("SST-2: self-distilled 6 layers (last exit) vs the teacher (seed 42)", "sst2", f"{T}/minilm-sst2-20k/model",
     f"{S}/sst2/self-s{{s}}/model"),
    ("SST-2: born-again generation 1 vs its teacher (seed 42)", "sst2", f"{T}/minilm-sst2-20k/model",
     f"{S}/sst2/born-again-s{{s}}/gen-1/model"),
    ("SST-2: the teacher fine-tuned with seed 1 vs seed 42", "sst2", f"{T}/minilm-sst2-20k/model",
     f"{T}/minilm-sst2-20k-s1/model"),
    ("SST-2: the teacher fine-tuned with seed 2 vs seed 42", "sst2", f"{T}/minilm-sst2-20k/model",
     f"{T}/minilm-sst2-20k-s2/model"),
    ("SST-2: KD from MPNet-12 + MiniLM-L6 vs from MPNet-12 alone", "sst2", f"{S}/sst2/kd-mpnet-s{{s}}/model",
     f"{S}/sst2/kd-mpnet+minilm-s{{s}}/model"),
    ("SST-2: KD from MPNet-12 vs from MiniLM-L6 (teacher seed 1)", "sst2", f"{S}/sst2/kd-teacher-s1-s{{s}}/model",
     f"{S}/sst2/kd-mpnet-s{{s}}/model"),
    ("SST-2: the MPNet-12 teacher vs the MiniLM-L6 teacher (seed 42)", "sst2", f"{T}/minilm-sst2-20k/model",
     f"{T}/mpnet-sst2/model"),
    ("MRPC: KD from MPNet-12 + MiniLM-L6 vs from MPNet-12 alone", "mrpc", f"{S}/mrpc/kd-mpnet-s{{s}}/model",
     f"{S}/mrpc/kd-mpnet+minilm-s{{s}}/model"),
    ("MRPC: KD from MPNet-12 vs from MiniLM-L6 (teacher seed 1)", "mrpc", f"{S}/mrpc/kd-teacher-s1-s{{s}}/model",
     f"{S}/mrpc/kd-mpnet-s{{s}}/model"),
    ("MRPC: born-again generation 1 vs its teacher (seed 42)", "mrpc", f"{T}/minilm-mrpc/model",
     f"{S}/mrpc/born-again-s{{s}}/gen-1/model"),
]
SEEDS = (1, 2, 3)


def models(pattern: str) -> dict[int | None, str]:
    if "{s}" not in pattern:
        return {None: pattern} if (ROOT / pattern / "config.json").is_file() else {}
    return {s: pattern.format(s=s) for s in SEEDS if (ROOT / pattern.format(s=s) / "config.json").is_file()}


def predictions(model: str, task: str, data_dir: str) -> str:
    from textdistill.cli import main

    out = ROOT / "runs" / "significance" / task / (model.replace("/", "_") + ".jsonl")
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.redirect_stdout(io.StringIO()):
            if main(["evaluate", "--model", str(ROOT / model), "--task", task, "--data-dir", data_dir,
                     "--predictions", str(out)]) != 0:
                raise SystemExit(f"evaluate {model} failed")
    return str(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default="../shared/data/glue")
    ap.add_argument("--resamples", type=int, default=9999)
    ap.add_argument("--splice", metavar="FILE", help="put the table between <!-- scheme_significance --> markers")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from textdistill.data.tasks import get_task
    from textdistill.significance import compare, holm

    head = ["| comparison (B vs A) | seeds | A | B | B - A | 95 % bootstrap interval | permutation p | Holm-adjusted "
            "| McNemar p | seeds' Welch p |", "|---|---|---|---|---|---|---|---|---|---|"]
    rows = []
    for label, task, pa, pb in PAIRS:
        a, b = models(pa), models(pb)
        if not a or not b:
            print(f"skip {label}: no model folders here", file=sys.stderr)
            continue
        if None not in a and None not in b:  # seeds paired by number
            common = sorted(set(a) & set(b))
            a, b = {s: a[s] for s in common}, {s: b[s] for s in common}
            if not common:
                print(f"skip {label}: no seed on both sides", file=sys.stderr)
                continue
        seeds = sorted(s for s in {*a, *b} if s is not None)
        r = compare(get_task(task), [predictions(m, task, args.data_dir) for m in a.values()],
                    [predictions(m, task, args.data_dir) for m in b.values()], resamples=args.resamples)
        f = lambda x: f"{100 * x:.2f}"  # noqa: E731
        p = lambda d, k: "" if not d or d[k] is None else f"{d[k]:.4f}"  # noqa: E731
        rows.append((r, [f"| {label} | {', '.join(map(str, seeds)) or '-'} | {f(r['a']['mean'])} ({len(a)}) | "
                         f"{f(r['b']['mean'])} ({len(b)}) | {100 * r['difference']:+.2f} | "
                         f"{100 * r['bootstrap']['low']:+.2f} .. {100 * r['bootstrap']['high']:+.2f} | "
                         f"{p(r['permutation'], 'p')} | ", f" | {p(r.get('mcnemar'), 'p')} | "
                         f"{p(r.get('seeds_welch_t'), 'p')} |"]))
        print(json.dumps({"comparison": label, **r}), file=sys.stderr)
    # Holm's adjustment over this table's permutation tests (several tests: one p < 0.05 is expected by chance)
    tested = [i for i, (r, _) in enumerate(rows) if r["permutation"]]
    adjusted = dict(zip(tested, holm([rows[i][0]["permutation"]["p"] for i in tested])))
    table = "\n".join([*head, *(left + (f"{adjusted[i]:.4f}" if i in adjusted else "") + right
                                 for i, (_, (left, right)) in enumerate(rows))])
    if args.splice:
        sys.path.insert(0, str(ROOT / "scripts"))
        from splice import splice

        splice(Path(args.splice), "scheme_significance", table)
    else:
        print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
