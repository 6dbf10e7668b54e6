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
    examples = load_examples(task, data_file(task, recipe, split))
    if split == "train" and recipe.data.train_rows and recipe.data.train_rows < len(examples):
        rng = random.Random(recipe.data.sample_seed)
        examples = examples.subset(sorted(rng.sample(range(len(examples)), recipe.data.train_rows)))
    return examples
