"""Transfer sets: what the student is shown while it learns from the teacher.

The training rows (labelled) plus generated rows that carry no label: the teacher's soft targets
are their only supervision (the task loss skips them, see ``schemes.base.task_loss``). A generated set
is built once into a folder (``texts.jsonl`` + ``provenance.json``), reused by every run whose recipe
asks for the same set, and refused -- naming what differs -- when the recipe asks for another. Since
the teacher cache is keyed by the training texts, a cache built with a transfer set belongs to it.

    transfer:
      dir: runs/aug/sst2-tang          # where the generated set lives
      augment: {method: tang, copies: 20, p_mask: 0.1, p_pos: 0.1, p_ng: 0.25}
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

from ... import TextDistillError
from ...files import build_lock, sha256_file
from ..readers import Examples
from .augment import EmbeddingAugmenter, TangAugmenter, augment_examples, check_probabilities

log = logging.getLogger("textdistill")
TEXTS, PROVENANCE = "texts.jsonl", "provenance.json"


def _teacher(recipe) -> str | None:
    return recipe.teacher or (recipe.teachers[0].model if recipe.teachers else None)


KEY_VERSION = 3  # 1: the teacher by its path (before 12-07); 2: by its weights; 3: by its weights and tokenizer


def _depends_on_teacher(method: str, teacher: str, version: int = KEY_VERSION) -> dict:
    """What of the teacher a set's rows depend on: Tang's rules only its mask token; embedding-neighbour replacement
    (its input embeddings over its vocabulary) and data-free synthesis (its predictions, decoded to its tokens) its
    weights and its tokenizer, by content (a teacher fine-tuned again in the same folder, or given another
    tokenizer, makes a new set; the same teacher reached by another path reuses it). ``version`` 2: the weights
    only (sets written on 12-07, still read)."""
    from ...models.loading import load_tokenizer, resolve_model_path
    from ...schemes.cache import teacher_fingerprint, tokenizer_fingerprint

    if method == "tang":
        tok = load_tokenizer(teacher)
        return {"mask_token": tok.mask_token or tok.unk_token}
    path = resolve_model_path(teacher)
    if not Path(path).is_dir():  # a hub id: keyed by its name (the hub's revision is the user's to pin)
        return {"teacher": teacher}
    key = {"teacher_weights": teacher_fingerprint(path)}
    if version >= 3:
        key["teacher_tokenizer"] = tokenizer_fingerprint(load_tokenizer(teacher))
    return key


def set_key(recipe, examples, version: int = KEY_VERSION) -> dict:
    """What the generated set depends on: the rule and its parameters, the seed, the training texts (not for
    synthetic rows, made from the teacher alone) and what of the teacher the rule reads (:func:`_depends_on_teacher`).
    An older ``version`` gives the key sets written under it carry (still read): 1 named the teacher by its path,
    2 left its tokenizer out."""
    from ...schemes.cache import examples_fingerprint

    t = recipe.transfer
    teacher = _teacher(recipe)
    if t.synthetic is not None:
        method, rule = "synthetic", t.synthetic.model_dump()
    else:
        params = t.augment.model_dump()
        method = params.pop("method")
        keep = ("copies", "seed") + (("p_mask", "p_pos", "p_ng", "ng_max") if method == "tang" else ("p_t", "k"))
        rule = {k: params[k] for k in keep}
        rule.update({"train_texts": examples_fingerprint(examples), "rows": len(examples)})
    depends = {"teacher": teacher} if version == 1 else _depends_on_teacher(method, teacher, version)
    return {"version": version, "method": method, **rule, **depends}


def check(recipe) -> None:
    """Recipe checks before anything is loaded or written."""
    t = recipe.transfer
    if t.augment is not None and t.synthetic is not None:
        raise TextDistillError("transfer: one generated set per recipe (augment or synthetic, not both)")
    kind = "augment" if t.augment is not None else "synthetic" if t.synthetic is not None else None
    if kind is None:
        if not t.train_rows:
            raise TextDistillError("transfer.train_rows: false leaves nothing to train on (add transfer.synthetic "
                                   "or transfer.augment)")
        return
    if not t.dir:
        raise TextDistillError("transfer.dir: name the folder the generated set is written to (and reused from)")
    if t.augment is not None:
        check_probabilities(t.augment.model_dump(), "transfer.augment")
    if not (recipe.teacher or recipe.teachers):
        raise TextDistillError(f"transfer.{kind}: generated rows have no labels; they need a 'teacher' to label them")


def build(recipe, examples, folder: Path, tqdm=None) -> dict:
    """Generate the recipe's set (augmented from ``examples``, or synthetic) into ``folder``; returns its provenance."""
    from ...models.loading import load_model, load_tokenizer

    aug = recipe.transfer.augment
    teacher = _teacher(recipe)
    tok = load_tokenizer(teacher)
    t0 = time.perf_counter()
    stats, text_b, origin = {}, None, "row"  # origin: the training row a generated row comes from
    if recipe.transfer.synthetic is not None:
        text_a, text_b, rows, stats = _synthesize(recipe, teacher, tok, tqdm)
        origin = "target"  # the class the teacher was steered to
    elif aug.method == "tang":
        corpus = examples.text_a + (examples.text_b or [])
        augmenter = TangAugmenter(corpus, mask_token=tok.mask_token or tok.unk_token, p_mask=aug.p_mask,
                                  p_pos=aug.p_pos, p_ng=aug.p_ng, ng_max=aug.ng_max)
    else:
        model = load_model(teacher, 1, None, new_head_ok=True)[0]
        augmenter = EmbeddingAugmenter(tok, model.get_input_embeddings().weight.detach(), p_t=aug.p_t, k=aug.k)
        del model
    if aug is not None:
        text_a, text_b, rows = augment_examples(examples, augmenter, aug.copies, aug.seed, tqdm=tqdm)
        if not text_a:  # (nothing written: an empty set would train on nothing new, or on nothing at all)
            knobs = "p_mask, p_pos, p_ng" if aug.method == "tang" else "p_t"
            raise TextDistillError(f"transfer.augment: the {aug.method} rules generated no row from {len(examples)} "
                                   f"training rows (each copy equals its row); raise {knobs}")
    seconds = time.perf_counter() - t0
    from ...schemes.teachers import prepare_output

    _, tmp = prepare_output(folder, overwrite=True)  # checks the path; the hidden .<folder>.partial, emptied
    try:
        with open(tmp / TEXTS, "w") as f:
            for i, a in enumerate(text_a):
                f.write(json.dumps({"text_a": a, **({"text_b": text_b[i]} if text_b is not None else {}),
                                    origin: rows[i]}) + "\n")
        provenance = {"key": set_key(recipe, examples), "source": examples.source, "source_rows": len(examples),
                      "generated": len(text_a), "per_row": round(len(text_a) / max(1, len(examples)), 2),
                      "seconds": round(seconds, 1), "teacher": teacher,
                      "texts_sha256": sha256_file(tmp / TEXTS).hexdigest()}
        if aug is not None and aug.method == "tang":
            provenance["mask_token"] = augmenter.mask
        if stats:
            provenance["synthesis"] = stats
        (tmp / PROVENANCE).write_text(json.dumps(provenance, indent=2) + "\n")
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("transfer set %s: %d generated rows (%s, %.0f s)", folder, len(text_a), provenance["key"]["method"],
             seconds)
    return provenance


def _synthesize(recipe, teacher: str, tok, tqdm=None):
    """Data-free rows from the teacher alone (sentence pairs for a pair task); ``rows`` holds the class each
    was made for."""
    from ...schemes.teachers import load_teacher
    from ..splits import resolve_task
    from .synthetic import synthesize

    task = resolve_task(recipe)
    if task.is_regression:
        raise TextDistillError(f"transfer.synthetic: data-free synthesis steers a classifier to each class; "
                               f"{task.name} is a regression task")
    return synthesize(load_teacher(teacher, task), tok, num_labels=task.num_labels,
                      pairs=len(task.text_columns) > 1, progress=tqdm, **recipe.transfer.synthetic.model_dump())


def open_set(recipe, examples, tqdm=None, rebuild: bool = False) -> tuple[Examples, dict]:
    """The generated rows of the recipe's transfer set (built first if absent) and its provenance."""
    folder = Path(recipe.transfer.dir)
    path = folder / PROVENANCE
    provenance = None
    if rebuild or not path.is_file():
        with build_lock(folder, "transfer set"):
            if rebuild or not path.is_file():  # (not built by another process while this one waited)
                if folder.is_dir() and any(folder.iterdir()) and not rebuild:
                    raise TextDistillError(f"transfer.dir: {folder} is not a generated set (no {PROVENANCE}) and "
                                           f"not empty")
                provenance = build(recipe, examples, folder, tqdm)
    if provenance is None:
        try:
            provenance = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise TextDistillError(f"{path}: corrupt ({e.msg} at line {e.lineno})") from None
        stored = provenance.get("key", {})
        # (a set written under an older key is read with that key)
        key = set_key(recipe, examples, version=stored.get("version") if stored.get("version") in (1, 2)
                      else KEY_VERSION)
        differ = [k for k in key if stored.get(k) != key[k]]
        if differ:
            raise TextDistillError(f"transfer.dir: {folder} was generated with other {', '.join(differ)}; rebuild it "
                                   f"(textdistill augment ... --overwrite) or point transfer.dir elsewhere")
    if provenance.get("texts_sha256") and sha256_file(folder / TEXTS).hexdigest() != provenance["texts_sha256"]:
        raise TextDistillError(f"{folder / TEXTS}: not the rows its {PROVENANCE} records (changed after it was "
                               f"generated); rebuild it (textdistill augment ... --overwrite)")
    text_a, text_b, lines = [], [] if examples.text_b is not None else None, []
    with open(folder / TEXTS) as f:
        for n, line in enumerate(f, 1):
            try:
                row = json.loads(line)
                text_a.append(row["text_a"])
                if text_b is not None:
                    text_b.append(row["text_b"])
            except (json.JSONDecodeError, KeyError):
                raise TextDistillError(f"{folder / TEXTS}:{n}: not a generated row") from None
            lines.append(n)
    if len(text_a) != provenance.get("generated"):
        raise TextDistillError(f"{folder / TEXTS}: {len(text_a)} rows, provenance says {provenance.get('generated')} "
                               f"(truncated?); rebuild it")
    return Examples(text_a, text_b, [None] * len(text_a), str(folder / TEXTS), lines), provenance


def extend(recipe, examples, tqdm=None) -> Examples:
    """The training rows followed by the generated rows (unlabelled) of the recipe's transfer set."""
    t = recipe.transfer
    if t.augment is None and t.synthetic is None:
        return examples
    extra, _ = open_set(recipe, examples, tqdm)
    if not t.train_rows:  # data-free: the generated rows alone
        return extra
    pick = (lambda a, b: None if a is None else a + b)  # noqa: E731
    return Examples(examples.text_a + extra.text_a, pick(examples.text_b, extra.text_b),
                    list(examples.labels) + extra.labels, f"{examples.source} + {extra.source}",
                    examples.lines + extra.lines)


__all__ = ["check", "extend", "open_set"]
