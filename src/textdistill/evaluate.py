"""Task metrics, prediction and latency measurement."""
from __future__ import annotations

import statistics
import time

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

METRICS = {
    "accuracy": lambda p, y: float(accuracy_score(y, p)),
    "f1": lambda p, y: float(f1_score(y, p)),  # binary F1 of the positive class (GLUE MRPC / QQP)
    "macro_f1": lambda p, y: float(f1_score(y, p, average="macro")),
    "mcc": lambda p, y: float(matthews_corrcoef(y, p)),
    "pearson": lambda p, y: float(pearsonr(p, y)[0]),
    "spearman": lambda p, y: float(spearmanr(p, y)[0]),
}
REGRESSION_METRICS = ("pearson", "spearman")  # the others need class predictions


def model_inputs(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k not in ("labels", "idx")}


@torch.inference_mode()
def predict(model, loader, device=None, logits_fn=None) -> np.ndarray:
    """Logits of every example, in the dataset's original order (the loader may sort by length).
    ``logits_fn(model, inputs)`` replaces ``model(**inputs).logits`` (e.g. every exit's logits, one row per
    example: ``models/exits.py``)."""
    from tqdm.auto import tqdm

    model.eval()
    device = device or next(model.parameters()).device
    out, idx = [], []
    for batch in tqdm(loader, desc="evaluate", leave=False, mininterval=2, disable=None):  # no bar off a terminal
        inputs = {k: v.to(device) for k, v in model_inputs(batch).items()}
        logits = logits_fn(model, inputs) if logits_fn else model(**inputs).logits
        out.append(logits.float().cpu())
        idx.append(batch["idx"])
    logits, idx = torch.cat(out), torch.cat(idx)
    ordered = torch.empty_like(logits)
    ordered[idx] = logits
    return ordered.numpy()


def compute_metrics(task, logits: np.ndarray, labels) -> dict[str, float]:
    labels = np.asarray(labels)
    preds = logits[:, 0] if task.is_regression else logits.argmax(-1)
    return {name: METRICS[name](preds, labels) for name in task.metrics}


def evaluate_folder(model_dir, task, split: str, data_dir: str, batch_size: int = 64,
                    max_length: int = 128, predictions=None) -> dict[str, float]:
    """Metrics of a saved model folder on ``split`` of ``task`` (e.g. an SST-2 student on IMDB: out of domain),
    tokenized per batch (25,000 IMDB reviews fit in memory); each row's prediction also written to
    ``predictions`` when given (:func:`write_predictions`)."""
    from .data.batching import stream_loader
    from .data.readers import load_examples, resolve_file
    from .models.loading import load_model, load_tokenizer

    examples = load_examples(task, resolve_file(task, split, data_dir))
    model = load_model(str(model_dir), task.num_labels, task.labels)[0]
    logits = predict(model, stream_loader(examples, load_tokenizer(str(model_dir)), batch_size, max_length,
                                          task.is_regression))
    if predictions is not None:
        write_predictions(predictions, prediction_rows(task, logits, examples))
    return compute_metrics(task, logits, examples.labels)


@torch.inference_mode()
def latency(model, batch: dict, repeats: int = 10, warmup: int = 3) -> float:
    """Median seconds of one forward pass on an already tokenized batch (tokenization excluded)."""
    model.eval()
    times = []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        model(**batch)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def prediction_rows(task, logits: np.ndarray, examples, exit_layers=None) -> list[dict]:
    """One dict per example, in the file's order: ``row`` (0-based among the file's data rows), ``line`` (its
    line in the file), ``prediction`` (a label name as the task's files spell it, or a regression score),
    ``probabilities`` (classification: softmax of the logits, by label name), ``label`` (the gold label, where
    the file has one) and ``exit_layer`` (early exit: the layer the example stopped at)."""
    rows = []
    probs = None if task.is_regression else torch.from_numpy(logits).float().softmax(-1).numpy()
    for i in range(len(examples)):
        r = {"row": i, "line": examples.lines[i]}
        if task.is_regression:
            r["prediction"] = float(logits[i, 0])
        else:
            r["prediction"] = task.labels[int(logits[i].argmax())]
            r["probabilities"] = {name: round(float(p), 6) for name, p in zip(task.labels, probs[i])}
        if examples.labels is not None and examples.labels[i] is not None:
            y = examples.labels[i]
            r["label"] = float(y) if task.is_regression else task.labels[int(y)]
        if exit_layers is not None:
            r["exit_layer"] = int(exit_layers[i])
        rows.append(r)
    return rows


def write_predictions(path, rows: list[dict]) -> str:
    """``rows`` (:func:`prediction_rows`) to ``path``, whole or not at all (written beside it, then renamed):
    a ``.tsv`` file in GLUE's submission form (``index<TAB>prediction``, the index being the row's place among
    the file's data rows, as GLUE's test files number them), anything else as JSON lines. Returns the form."""
    import json
    from pathlib import Path

    from .files import write_text_atomic

    tsv = Path(path).suffix.lower() == ".tsv"
    if tsv:
        lines = ["index\tprediction\n"] + [
            f"{r['row']}\t{r['prediction']:.6f}\n" if isinstance(r["prediction"], float) else
            f"{r['row']}\t{r['prediction']}\n" for r in rows]
    else:
        lines = [json.dumps(r, ensure_ascii=False) + "\n" for r in rows]
    write_text_atomic(path, "".join(lines))
    return "tsv" if tsv else "jsonl"
