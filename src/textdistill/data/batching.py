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
