"""What a scheme is, and the pieces every scheme shares.

A *scheme* owns the participants of a run: which models train (one student, several peers, one model
with exits), where teacher outputs come from (none, one or several teachers, live or cached), which
parameters the optimizer gets, how dev metrics are computed and what is saved. The training loop in
``train.py`` only calls the methods below; it never branches on a scheme's or a method's name. A new
scheme is a new module registered in ``SCHEMES``::

    load_data(recipe, task) (class method) the train / dev examples; default: the task's files
    setup(seed_fn)          load teachers / build models (seed_fn() re-seeds between the two)
    train_set, tokenizer    what the loader batches
    modules()               {name: nn.Module} the optimizer trains (prepared by Accelerate)
    bind(prepared)          the same modules, as Accelerate returned them
    set_epoch(epoch)        before each epoch (random layer maps re-draw); returns lines to log
    step                    the loop's number of the step being taken (1, 2, ...; set before loss_parts, restored
                            by a resume), for parts that come every N-th step
    loss_parts(batch)       {part: (weight, value)} of one step; the loop sums weight * value
    evaluate()              {"dev": metrics of the model that counts, ...more per model}; metrics_of(model, where)
                            keeps each saved model's dev logits
    save(folder)            write the models; returns fields for metrics.json
    write_dev_predictions(folder)  after save: <folder>/<where>/dev_predictions.jsonl of each kept model (base)
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import TextDistillError
from ..data.batching import IGNORE, encode, eval_loader
from ..evaluate import compute_metrics, model_inputs, predict
from ..models import qat
from ..models.checks import check_finite_parameters, check_recipe_lengths
from ..models.loading import load_model, load_tokenizer
from ..models.student import build_student, cls_spread
from ..registry import Registry
from ..significance import PREDICTIONS_FILE

log = logging.getLogger("textdistill")
SCHEMES = Registry("scheme")


def task_loss(task, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """CE (MSE for regression) over the labelled rows; generated transfer-set rows (label IGNORE, or NaN for
    regression) are skipped, and a batch without any labelled row gives 0."""
    keep = ~labels.isnan() if task.is_regression else labels != IGNORE
    logits = logits.float()  # (fp32 also inside a mixed-precision step)
    if not keep.any():
        return logits.sum() * 0.0
    if task.is_regression:
        return F.mse_loss(logits.squeeze(-1)[keep], labels[keep])
    return F.cross_entropy(logits[keep], labels[keep])


def outputs_needed(term_cfgs) -> tuple[bool, bool]:
    """Whether the terms read hidden states, and attention maps."""
    return (any(t.tap not in ("logits", "attention") for t in term_cfgs),
            any(t.tap == "attention" for t in term_cfgs))


def build_model(init: str, layers, task, attentions: bool = False, source=None, what: str = "student",
                arch: str = "transformer", options: dict | None = None):
    """A model keeping ``layers`` of ``init`` (or of the already loaded ``source``), with the task's
    labels; or (``arch: bilstm``) a BiLSTM on ``init``'s tokenizer and input embeddings. Returns
    ``(model, mapping)``; the mapping (teacher layer of each student layer) is logged."""
    id2label = dict(enumerate(task.labels)) if task.labels else {0: "score"}
    if source is None:
        source, head_new = load_model(init, task.num_labels, task.labels, attentions=attentions, new_head_ok=True)
        if head_new and arch == "transformer":
            log.info("%s init %s: new classification head for %d labels", what, init, task.num_labels)
    if arch == "bilstm":
        from ..models.bilstm import build_bilstm

        model = build_bilstm(load_tokenizer(init), source.get_input_embeddings().weight.detach(),
                             num_labels=task.num_labels, pair=len(task.text_columns) > 1, options=options or {},
                             id2label=id2label)
        c = model.config
        log.info("%s: BiLSTM (%s x %d, %d layer(s), %s pooling%s) on the tokenizer and embeddings of %s", what,
                 c.embedding_dim, c.hidden_size, c.num_layers, c.pool, ", siamese" if c.siamese else "", init)
        return model, {}
    model, mapping = build_student(source, layers)
    model.config.id2label = id2label
    model.config.label2id = {v: k for k, v in model.config.id2label.items()}
    log.info("%s from %s: %s", what, init, ", ".join(f"S{s}<-T{t}" for s, t in mapping.items()))
    return model, mapping


def warn_flat_cls(model, data, tokenizer, init: str, layers) -> None:
    spread = cls_spread(model, model_inputs(next(iter(eval_loader(data, tokenizer, 16)))))
    if spread < 1e-3:
        log.warning("student (%s, layers %s): its last layer's [CLS] vector hardly depends on the input (relative "
                    "spread %.1e over 16 training examples), so a classifier on it learns slowly; try other layers "
                    "(student.layers=every:2) or more epochs", init, layers, spread)


def save_model(model, tokenizer, folder: Path, init: str, mapping: dict) -> None:
    """A plain Hugging Face folder (``folder/model``) and which teacher layers the model kept."""
    check_finite_parameters(model, "the trained model")  # a run that went NaN on its last steps saves nothing
    if qat.is_prepared(model):  # quantization-aware: plain Linear layers holding the quantized weights
        model = qat.convert(model)
    model.save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    (folder / "student_layers.json").write_text(json.dumps({"init": init, "student_from_teacher_layers":
                                                           {str(s): t for s, t in mapping.items()}}, indent=2) + "\n")


def save_state(module: torch.nn.Module, path: Path, metadata: dict) -> None:
    """Trained pieces that are not part of the HF model (projections, exit heads): safetensors next to it."""
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    if not state:
        return
    from safetensors.torch import save_file

    save_file(state, str(path), metadata={k: json.dumps(v) for k, v in metadata.items()})


class Scheme:
    """Base class: a task, its train/dev examples, the recipe. Subclasses fill in the participants."""

    # which command runs it: True for a scheme that is distillation whatever its recipe holds (`textdistill
    # distill`; it checks its own teachers and terms), False for offline, where a teacher and terms make
    # `distill` and neither makes `finetune`
    always_distills: bool = True
    # whether ``generations: N`` (born-again networks) may chain runs of it: each generation's single
    # ``teacher:`` is the previous generation's saved student
    chains_generations: bool = False

    def __init__(self, recipe, task, train_ex, dev_ex, *, tqdm=None):
        self.recipe, self.task, self.train_ex, self.dev_ex, self.tqdm = recipe, task, train_ex, dev_ex, tqdm
        self.step = 0  # (the loop sets it before each loss_parts)
        self.dev_logits: dict[str, np.ndarray] = {}  # the last dev logits of each saved model, by its folder
        self.cfg = recipe.train
        self.check()
        check_recipe_lengths(recipe)  # train.max_length within every named model's positions

    def check(self) -> None:
        """Recipe checks that need no model (one-line errors naming the key); run before anything is written."""

    @classmethod
    def load_data(cls, recipe, task):
        """``(train, dev)`` examples of the recipe (read and checked before anything is written)."""
        from ..data.splits import load_split

        return load_split(task, recipe, "train"), load_split(task, recipe, "dev")

    def encode(self, tokenizer, examples):
        return encode(tokenizer, examples, self.cfg.max_length, self.task.is_regression)

    def metrics_of(self, model, where: str | None = None) -> dict:
        """The dev metrics of ``model``; with ``where``, its logits are kept for the dev predictions of the model
        the run saves in ``<run>/<where>`` ("." for the run's own model folder)."""
        loader = eval_loader(self.dev_set, self.tokenizer, self.cfg.eval_batch_size)
        logits = predict(model, loader)
        if where is not None:
            self.dev_logits[where] = logits
        return compute_metrics(self.task, logits, self.dev_ex.labels)

    def write_dev_predictions(self, folder: Path) -> None:
        """After saving: each saved model's last dev predictions, ``<folder>/<where>/dev_predictions.jsonl``
        (evaluate.prediction_rows; what ``textdistill significance`` compares)."""
        from ..evaluate import prediction_rows, write_predictions

        for where, logits in self.dev_logits.items():
            write_predictions(folder / where / PREDICTIONS_FILE, prediction_rows(self.task, logits, self.dev_ex))

    def load_tokenizer(self, name: str):
        return load_tokenizer(name)

    # the interface the loop uses (see the module docstring)
    def setup(self, seed_fn) -> None:
        raise NotImplementedError

    def modules(self) -> dict[str, torch.nn.Module]:
        raise NotImplementedError

    def bind(self, prepared: dict[str, torch.nn.Module]) -> None:
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> list[str]:
        """Before each epoch: the terms re-draw random layer maps (RAIL-KD); their descriptions are logged."""
        terms = getattr(self, "terms", ())
        for term in terms:
            term.set_epoch(epoch)
        return [term.describe() for term in terms]

    def train(self) -> None:
        for m in self.modules().values():
            m.train()

    def loss_parts(self, batch) -> dict[str, tuple[float, torch.Tensor]]:
        raise NotImplementedError

    def nonfinite_cause(self) -> str:
        """The likely reason the loss or the weights went non-finite (a NaN label, non-finite teacher weights,
        else the learning rate), for the one-line error."""
        from ..models.checks import likely_nonfinite_cause

        teachers = [(t.model_name, t.model) for t in getattr(self, "teachers", [])]
        return likely_nonfinite_cause(labels=self.train_ex.labels, teachers=teachers, lr=self.cfg.lr)

    def evaluate(self) -> dict:
        raise NotImplementedError

    def save(self, folder: Path, unwrap) -> dict:
        raise NotImplementedError


def reject(recipe, keys: dict[str, bool], scheme: str) -> None:
    """One-line errors for recipe keys a scheme does not use."""
    for key, present in keys.items():
        if present:
            raise TextDistillError(f"{key}: not used by scheme '{scheme}' (remove it or change 'scheme')")


def transformer_only(recipe) -> dict[str, bool]:
    """The student keys of another architecture, for ``reject`` by schemes that train transformers only."""
    return {"student.arch": recipe.student.arch != "transformer", "student.options": bool(recipe.student.options)}


def require_loss(recipe) -> None:
    """A run whose loss has no part (no task loss, no term) would train on nothing: refused by name."""
    if recipe.hard_weight == 0 and not recipe.terms:
        raise TextDistillError("hard_weight: 0 and no terms: the run would have no loss to train on (give "
                               "hard_weight > 0 or a term)")
