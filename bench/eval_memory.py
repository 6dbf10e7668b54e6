"""Peak memory (RSS) of evaluating a model on IMDB: 2k rows vs the full 25k-row test set, with every text
tokenized up front (``encode`` + ``eval_loader``, what ``textdistill evaluate`` did before) vs tokenized per
batch (``stream_loader``, what it does now). Each measurement is its own process (peak RSS from ``wait4``);
the same model, batch size and max length; the two modes agree on every logit (checked).

    .venv/bin/python bench/eval_memory.py [--glue ../shared/data/glue] [--model FOLDER] [--out bench/results/eval_memory.md]

Without ``--model`` a 3-layer classifier is made from MiniLM-L6 (layers 2, 4, 6, a new random head): memory
does not depend on what the weights learnt.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from textdistill.report import markdown_table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
import numpy as np
from textdistill.data.batching import encode, eval_loader, stream_loader
from textdistill.data.readers import load_examples
from textdistill.data.tasks import get_task
from textdistill.evaluate import compute_metrics, predict
from textdistill.models.loading import load_model, load_tokenizer
mode, model_dir, path, out = sys.argv[1:5]
task = get_task("imdb")
t0 = time.perf_counter()
examples = load_examples(task, path)
model = load_model(model_dir, task.num_labels, task.labels)[0].eval()
tok = load_tokenizer(model_dir)
if mode == "eager":
    loader = eval_loader(encode(tok, examples, 128, False), tok, 64)
else:
    loader = stream_loader(examples, tok, 64, 128, False)
logits = predict(model, loader)
np.save(out, logits)
print(json.dumps({"seconds": time.perf_counter() - t0, "rows": len(examples),
                  "accuracy": compute_metrics(task, logits, examples.labels)["accuracy"]}))
"""


def make_model(folder: Path) -> str:
    from transformers import AutoModelForSequenceClassification

    from textdistill.models.loading import load_tokenizer, resolve_model_path
    from textdistill.models.student import build_student

    src = resolve_model_path("minilm-l6")
    model = AutoModelForSequenceClassification.from_pretrained(src, num_labels=2)
    student, _ = build_student(model, "every:2")
    student.save_pretrained(folder)
    load_tokenizer("minilm-l6").save_pretrained(folder)
    return str(folder)


def measure(mode: str, model: str, path: Path, out: Path) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    p = subprocess.Popen([sys.executable, "-c", CHILD, mode, model, str(path), str(out)], stdout=subprocess.PIPE,
                         env=env, cwd=ROOT)
    _, status, usage = os.wait4(p.pid, 0)
    if status != 0:
        raise SystemExit(f"{mode} on {path.name} failed (status {status})")
    result = json.loads(p.stdout.read().decode().strip().splitlines()[-1])
    result["peak_rss_mb"] = usage.ru_maxrss / 1024
    return result


def main() -> None:
    import numpy as np

    ap = argparse.ArgumentParser()
    ap.add_argument("--glue", default=str(ROOT.parent / "shared" / "data" / "glue"))
    ap.add_argument("--model")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "eval_memory.md"))
    args = ap.parse_args()
    imdb = Path(args.glue) / "IMDB"
    files = [("2k", imdb / "test_subset2k_seed42.jsonl"), ("25k", imdb / "test.jsonl.gz")]
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or make_model(Path(tmp) / "model")
        rows = []
        for name, path in files:
            results = {}
            for mode in ("eager", "stream"):
                results[mode] = measure(mode, model, path, Path(tmp) / f"{name}-{mode}.npy")
                print(name, mode, json.dumps(results[mode]), flush=True)
            a, b = np.load(Path(tmp) / f"{name}-eager.npy"), np.load(Path(tmp) / f"{name}-stream.npy")
            agree = float((a.argmax(-1) == b.argmax(-1)).mean())
            rows.append((name, results, agree, float(np.abs(a - b).max())))
    lines = ["# Peak memory of evaluation: every text tokenized up front vs per batch", "",
             f"Written by `python bench/eval_memory.py` ({time.strftime('%Y-%m-%d')}); IMDB test files of "
             f"`../shared/data/glue/IMDB`, max length 128, batch 64, "
             f"{'the model given' if args.model else 'a 3-layer MiniLM-L6 slice with a random head'}; each cell is "
             f"its own process (peak RSS from wait4).", "",
             markdown_table(["rows", "up front: peak RSS (MB)", "per batch: peak RSS (MB)", "up front: s",
                             "per batch: s", "same argmax", "max logit diff"],
                            [[f"{r['eager']['rows']:,}", f"{r['eager']['peak_rss_mb']:.0f}",
                              f"{r['stream']['peak_rss_mb']:.0f}", f"{r['eager']['seconds']:.0f}",
                              f"{r['stream']['seconds']:.0f}", f"{100 * agree:.2f}%", f"{diff:.1e}"]
                             for name, r, agree, diff in rows])]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
