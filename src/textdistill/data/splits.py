"""A recipe's task and its train / dev examples."""
from __future__ import annotations

import random
from pathlib import Path

from .. import TextDistillError
from .readers import load_examples, resolve_file
from .tasks import Task, get_task, task_from_dict


def resolve_task(recipe) -> Task:
    if isinstance(recipe.task, dict):
        return task_from_dict(recipe.task)
    return get_task(recipe.task)


def data_file(task: Task, recipe, split: str) -> Path:
    explicit = getattr(recipe.data, split)
    if explicit:
        if not Path(explicit).is_file():
            raise TextDistillError(f"data.{split}: {explicit}: no such file")
        return Path(explicit)
    if not recipe.data.dir:
        raise TextDistillError(f"data.dir or data.{split}: say where the {split} data is")
    return resolve_file(task, split, recipe.data.dir)


def load_split(task: Task, recipe, split: str):
    """The train or dev examples of the recipe. ``data.train_rows``: a seeded sample of the train file.
    ``data.dev_rows``: for data without a dev file (QQP's train subsets here, a user's one labelled file), a
    seeded sample of the train file is held out as the dev set and the train set is the rest; every recipe
    with the same ``sample_seed`` holds out the same rows, so a teacher and its students share the split (and
    another ``sample_seed`` draws another dev set as well as another ``train_rows`` sample)."""
    d = recipe.data
    if d.dev_rows and d.dev:
        raise TextDistillError("data.dev_rows: holds the dev set out of the train file; drop data.dev (or dev_rows)")
    if d.dev_rows and split in ("train", "dev"):
        examples = load_examples(task, data_file(task, recipe, "train"))
        if d.dev_rows >= len(examples):
            raise TextDistillError(f"data.dev_rows: {d.dev_rows} is not fewer than the {len(examples)} rows of "
                                   f"{examples.source}")
        held = set(random.Random(f"dev-{d.sample_seed}").sample(range(len(examples)), d.dev_rows))
        if split == "dev":
            dev = examples.subset(sorted(held))
            dev.source = f"{examples.source} (dev: {d.dev_rows} held-out rows, sample_seed {d.sample_seed})"
            return dev
        examples = examples.subset([i for i in range(len(examples)) if i not in held])
        examples.source = f"{examples.source} (minus {d.dev_rows} held-out dev rows, sample_seed {d.sample_seed})"
    else:
        examples = load_examples(task, data_file(task, recipe, split))
    if split == "train" and d.train_rows and d.train_rows < len(examples):
        rng = random.Random(d.sample_seed)
        examples = examples.subset(sorted(rng.sample(range(len(examples)), d.train_rows)))
    return examples
