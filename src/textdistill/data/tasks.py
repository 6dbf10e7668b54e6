"""Task registry: text columns, labels (in GLUE's order) and metrics of each task.

A task knows where its files live in the GLUE folder layout (``<data_dir>/<folder>/<file>``),
which columns hold the text(s) and the label, the label values in GLUE's order (the
index of a value is the class id) or ``None`` for regression, and its metrics. The first
metric is the task's main metric.

A user's own task is a :class:`Task` built from a few fields (see :func:`task_from_dict`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .. import TextDistillError


@dataclass(frozen=True)
class Task:
    name: str
    text_columns: tuple[str, ...]  # one or two columns
    label_columns: tuple[str, ...] = ("label",)  # candidates: the first one present is used
    labels: tuple[str, ...] | None = ("0", "1")  # None: regression
    metrics: tuple[str, ...] = ("accuracy",)
    folder: str | None = None  # folder name in the GLUE layout
    files: dict[str, tuple[str, ...]] = field(default_factory=dict)  # split -> candidate files
    headerless_columns: tuple[str, ...] | None = None  # column names for files without a header
    description: str = ""

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)

    @property
    def main_metric(self) -> str:
        return self.metrics[0]


def _glue(split_files=None, **kw):
    files = {"train": ("train.tsv",), "dev": ("dev.tsv",), "test": ("test.tsv",)}
    files.update(split_files or {})
    return dict(files=files, **kw)


TASKS: dict[str, Task] = {}


def register(task: Task, *aliases: str) -> Task:
    for key in (task.name, *aliases):
        TASKS[key.lower()] = task
    return task


register(Task("cola", ("sentence",), metrics=("mcc", "accuracy"), description="CoLA: linguistic acceptability",
              headerless_columns=("source", "label", "original_label", "sentence"), **_glue(folder="CoLA")))
register(Task("sst2", ("sentence",), description="SST-2: sentiment of movie-review phrases",
              **_glue(folder="SST-2")), "sst-2")
register(Task("mrpc", ("#1 String", "#2 String"), label_columns=("Quality", "label"), metrics=("f1", "accuracy"),
              description="MRPC: paraphrase", **_glue(folder="MRPC")))
register(Task("stsb", ("sentence1", "sentence2"), label_columns=("score", "label"), labels=None,
              metrics=("pearson", "spearman"), description="STS-B: similarity score 0-5 (regression)",
              **_glue(folder="STS-B")), "sts-b")
register(Task("qqp", ("question1", "question2"), label_columns=("is_duplicate", "label"), metrics=("f1", "accuracy"),
              description="QQP: duplicate questions",
              **_glue({"train": ("train.tsv", "subset/train_subset_cutoff.tsv", "subset/train_subset_ppft.tsv")},
                      folder="QQP")))
_mnli_labels = ("contradiction", "entailment", "neutral")  # GLUE's MnliProcessor order
register(Task("mnli", ("sentence1", "sentence2"), label_columns=("gold_label", "label"), labels=_mnli_labels,
              description="MNLI: natural language inference (dev = matched)",
              **_glue({"train": ("train.tsv", "subset/train_subset_ppft.tsv"), "dev": ("dev_matched.tsv",),
                       "test": ("test_matched.tsv",)}, folder="MNLI")), "mnli-m")
register(Task("mnli-mm", ("sentence1", "sentence2"), label_columns=("gold_label", "label"), labels=_mnli_labels,
              description="MNLI mismatched",
              **_glue({"train": ("train.tsv", "subset/train_subset_ppft.tsv"), "dev": ("dev_mismatched.tsv",),
                       "test": ("test_mismatched.tsv",)}, folder="MNLI")))
_nli2 = ("entailment", "not_entailment")
register(Task("qnli", ("question", "sentence"), labels=_nli2, description="QNLI: question answering NLI",
              **_glue({"train": ("train.tsv", "subset/train_subset_ppft.tsv")}, folder="QNLI")))
register(Task("rte", ("sentence1", "sentence2"), labels=_nli2, description="RTE: textual entailment",
              **_glue(folder="RTE")))
register(Task("wnli", ("sentence1", "sentence2"), description="WNLI: Winograd NLI", **_glue(folder="WNLI")))
register(Task("paws", ("sentence1", "sentence2"), description="PAWS-Wiki: adversarial paraphrase (OOD for QQP)",
              **_glue({"train": ("train.tsv",)}, folder="PAWS")))
register(Task("imdb", ("text",), description="IMDB: movie-review sentiment (OOD for SST-2)",
              files={"train": ("train.jsonl", "train.jsonl.gz"),
                     "test": ("test.jsonl.gz", "test.jsonl", "test_subset2k_seed42.jsonl"),
                     "dev": ("test_subset2k_seed42.jsonl", "test.jsonl.gz", "test.jsonl"),
                     "test2k": ("test_subset2k_seed42.jsonl",)},
              folder="IMDB"))
register(Task("scitail", ("premise", "hypothesis"), labels=("entails", "neutral"),
              description="SciTail: science entailment", **_glue(folder="SciTail")))


def get_task(name: str) -> Task:
    key = name.lower()
    if key not in TASKS:
        known = ", ".join(sorted({t.name for t in TASKS.values()}))
        raise TextDistillError(f"unknown task '{name}' (known tasks: {known}; or declare your own task in the recipe)")
    return TASKS[key]


def task_from_dict(d: dict, where: str = "recipe") -> Task:
    """A user task: ``{name, text_columns: [a] or [a, b], label_column, labels: [...] | regression: true,
    metrics: [...]}``."""
    from ..evaluate import METRICS, REGRESSION_METRICS

    d = dict(d)
    name = d.pop("name", "custom")
    text_columns = d.pop("text_columns", None)
    if isinstance(text_columns, str):
        text_columns = [text_columns]
    if not text_columns or len(text_columns) > 2:
        raise TextDistillError(f"{where}: task.text_columns must list one or two column names")
    label_column = d.pop("label_column", "label")
    regression = bool(d.pop("regression", False))
    labels = d.pop("labels", None)
    if regression and labels:
        raise TextDistillError(f"{where}: task: give either labels or regression: true, not both")
    if not regression:
        if not labels:
            raise TextDistillError(f"{where}: task.labels must list the label values (or set regression: true)")
        labels = tuple(str(x) for x in labels)
        if len(set(labels)) != len(labels):
            raise TextDistillError(f"{where}: task.labels has duplicates: {list(labels)}")
        if len(labels) < 2:
            raise TextDistillError(f"{where}: task.labels: a classifier needs at least 2 labels, got {list(labels)}")
    metrics = d.pop("metrics", ["pearson", "spearman"] if regression else ["accuracy"])
    if isinstance(metrics, str):
        metrics = [metrics]
    if not isinstance(metrics, (list, tuple)):
        raise TextDistillError(f"{where}: task.metrics must list metric names, got {metrics!r}")
    metrics = tuple(metrics)
    if not metrics:
        raise TextDistillError(f"{where}: task.metrics is empty (the first metric is the one runs are ranked by)")
    for m in metrics:
        if m not in METRICS:
            raise TextDistillError(f"{where}: task.metrics: unknown metric '{m}' (known: {', '.join(METRICS)})")
        if regression != (m in REGRESSION_METRICS):
            fits = "a regression task (regression: true)" if m in REGRESSION_METRICS else "a classification task"
            raise TextDistillError(f"{where}: task.metrics: '{m}' is a metric of {fits}")
        if m == "f1" and len(labels) != 2:
            raise TextDistillError(f"{where}: task.metrics: 'f1' is the positive-class F1 of a 2-label task; "
                                   f"this task has {len(labels)} labels (use macro_f1)")
    if d:
        raise TextDistillError(f"{where}: task: unknown key '{sorted(d)[0]}'")
    return Task(name, tuple(text_columns), (label_column,), None if regression else labels, metrics)
