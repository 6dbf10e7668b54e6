"""Fast-tokenizer encoding, dynamic padding and length-grouped batches.

Training batches come from transformers' ``LengthGroupedSampler``: indices are shuffled, cut into
mega-batches of 50 batches, and sorted by length inside each, so a batch holds examples of similar
length and is padded only to its own longest example. Evaluation batches are sorted by length and
the predictions are put back in the file's order.
"""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from .readers import Examples


IGNORE = -100  # the label of an unlabelled row (torch's cross_entropy default ignore_index)


class Encoded(Dataset):
    def __init__(self, features: list[dict], regression: bool):
        self.features = features
        self.regression = regression

    def __len__(self):
        return len(self.features)

    def __getitem__(self, i):
        return self.features[i]

    @property
    def lengths(self) -> list[int]:
        return [len(f["input_ids"]) for f in self.features]


def encode(tokenizer, examples: Examples, max_length: int, regression: bool) -> Encoded:
    enc = tokenizer(examples.text_a, examples.text_b, truncation=True, max_length=max_length)
    keys = [k for k in tokenizer.model_input_names if k in enc]
    features = []
    for i in range(len(examples)):
        f = {k: enc[k][i] for k in keys}
        f["idx"] = i
        if examples.labels is not None:  # a generated (transfer-set) row has none: IGNORE / NaN, skipped by the task loss
            label = examples.labels[i]
            f["labels"] = label if label is not None else (float("nan") if regression else IGNORE)
        features.append(f)
    return Encoded(features, regression)


class Collator:
    """Pads a batch to its longest example, or to ``pad_to`` tokens when given."""

    def __init__(self, tokenizer, regression: bool, pad_to: int | None = None):
        self.tokenizer, self.regression, self.pad_to = tokenizer, regression, pad_to

    def __call__(self, features: list[dict]) -> dict:
        inputs = [{k: v for k, v in f.items() if k not in ("labels", "idx")} for f in features]
        padding = {"padding": "max_length", "max_length": self.pad_to} if self.pad_to else {}
        batch = dict(self.tokenizer.pad(inputs, return_tensors="pt", **padding))
        batch["idx"] = torch.tensor([f["idx"] for f in features])
        if "labels" in features[0]:
            dtype = torch.float32 if self.regression else torch.long
            batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=dtype)
        return batch


def train_loader(data: Encoded, tokenizer, batch_size: int, seed: int, length_grouped: bool = True,
                 pad_to: int | None = None) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    if length_grouped:
        from transformers.trainer_pt_utils import LengthGroupedSampler

        sampler = LengthGroupedSampler(batch_size, lengths=data.lengths, generator=generator)
    else:
        sampler = torch.utils.data.RandomSampler(data, generator=generator)
    return DataLoader(data, batch_size=batch_size, sampler=sampler,
                      collate_fn=Collator(tokenizer, data.regression, pad_to))


def eval_loader(data: Encoded, tokenizer, batch_size: int) -> DataLoader:
    order = sorted(range(len(data)), key=lambda i: len(data.features[i]["input_ids"]))
    # an own generator: iterating must not draw from the global RNG (evaluating, or building a teacher
    # cache, would otherwise change the dropout of the training that follows)
    return DataLoader(torch.utils.data.Subset(data, order), batch_size=batch_size, shuffle=False,
                      collate_fn=Collator(tokenizer, data.regression), generator=torch.Generator())


class _Rows(Dataset):
    """Row numbers of ``examples``: the texts are tokenized only when their batch is collated."""

    def __init__(self, examples: Examples):
        self.examples = examples

    def __len__(self):
        return len(self.examples)

    def __getitem__(self, i):
        return i


class StreamCollator:
    """Tokenizes a batch of rows when it is drawn (truncated to ``max_length``, padded to its longest row)."""

    def __init__(self, tokenizer, examples: Examples, max_length: int, regression: bool):
        self.tokenizer, self.examples, self.max_length, self.regression = tokenizer, examples, max_length, regression

    def __call__(self, rows: list[int]) -> dict:
        ex = self.examples
        enc = self.tokenizer([ex.text_a[i] for i in rows], None if ex.text_b is None else [ex.text_b[i] for i in rows],
                             truncation=True, max_length=self.max_length, padding=True, return_tensors="pt")
        batch = {k: v for k, v in enc.items() if k in self.tokenizer.model_input_names}
        batch["idx"] = torch.tensor(rows)
        if ex.labels is not None:
            labels = [ex.labels[i] for i in rows]
            labels = [y if y is not None else (float("nan") if self.regression else IGNORE) for y in labels]
            batch["labels"] = torch.tensor(labels, dtype=torch.float32 if self.regression else torch.long)
        return batch


def stream_loader(examples: Examples, tokenizer, batch_size: int, max_length: int, regression: bool) -> DataLoader:
    """Evaluation batches tokenized one at a time (memory does not grow with the file: ``textdistill evaluate``
    on a 25k-row set), rows sorted by character length so that a batch pads little; predictions are put back
    in the file's order by :func:`~textdistill.evaluate.predict` (``idx``)."""
    size = (lambda i: len(examples.text_a[i])) if examples.text_b is None else \
        (lambda i: len(examples.text_a[i]) + len(examples.text_b[i]))
    order = sorted(range(len(examples)), key=size)
    return DataLoader(torch.utils.data.Subset(_Rows(examples), order), batch_size=batch_size, shuffle=False,
                      collate_fn=StreamCollator(tokenizer, examples, max_length, regression),
                      generator=torch.Generator())
