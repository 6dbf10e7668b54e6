"""Recipes: one YAML file = one experiment. Plain data, validated, every field overridable.

    textdistill distill --recipe recipes/kd.yaml --set train.lr=3e-5 --set terms.kd.args.temperature=10

``--set`` takes a dotted path into the recipe; list entries of ``terms`` are addressed by their
``name`` (or index). Values are parsed as YAML (``3e-5`` -> float, ``[1,2]`` -> list, ``null``).
Paths in a recipe are relative to the current directory.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, ValidationError, PrivateAttr, field_validator,
                      model_validator)

from . import TextDistillError, hardware


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_+-]*")
# folders a run writes beside the ones named after its peers (online), teachers' caches and stages
RESERVED_NAMES = frozenset({"model", "checkpoint", "tensorboard"})


def check_name(value: str | None, folder: bool = True) -> str | None:
    """A name a recipe gives (a term, a teacher, a peer, a stage): letters, digits, '_', '+', '-', so that it can
    name a folder, a loss part (``kd@peer``) and a ``--set`` path; a folder's name is none of ``RESERVED_NAMES``."""
    if value is None:
        return value
    if not NAME.fullmatch(value):
        raise ValueError("a name holds letters, digits, '_', '+' and '-' and starts with a letter or digit "
                         "(it names a folder, a loss part and a --set path)")
    if folder and value in RESERVED_NAMES:
        raise ValueError(f"'{value}' names a folder every run writes ({', '.join(sorted(RESERVED_NAMES))}); "
                         f"choose another name")
    return value


Name = Annotated[str | None, AfterValidator(check_name)]  # names a folder
TermName = Annotated[str | None, AfterValidator(lambda v: check_name(v, folder=False))]


class DataCfg(_Strict):
    dir: str | None = None  # GLUE root (../shared/data/glue) or the task's own folder
    train: str | None = None  # explicit file paths win over dir
    dev: str | None = None
    train_rows: int | None = Field(None, gt=0)  # random sample of the train file (seeded by sample_seed)
    dev_rows: int | None = Field(None, gt=0)  # hold out a random sample of the train file as the dev set
    sample_seed: int = 0


class QuantCfg(_Strict):
    """Quantization-aware training of the student (models/qat.py)."""
    weights: Literal[8, 4, 2] = 8  # bits of the Linear weights (2: ternary, TernaryBERT)
    activations: Literal[8] | None = 8  # inputs of the Linear layers as ONNX Runtime's dynamic uint8, or fp32
    per_channel: bool = True  # one weight scale per output channel (else per tensor)


class StudentCfg(_Strict):
    init: str | None = None  # model whose layers the student copies (default: the teacher)
    layers: str | int | list[int] = "all"
    # transformer: a slice of init's layers; bilstm: Tang et al.'s BiLSTM on init's tokenizer and embeddings
    arch: Literal["transformer", "bilstm"] = "transformer"
    options: dict[str, Any] = Field(default_factory=dict)  # of the arch (bilstm: hidden_size, num_layers, ...)
    quantize: QuantCfg | None = None  # fake-quantized Linear layers while distilling (quantization-aware KD)


class TermCfg(_Strict):
    name: TermName = None
    tap: str = "logits"
    loss: str
    weight: float = 1.0
    map: str | None = None  # layer map: pkd-skip, pkd-last, uniform, ckd, alp, rail
    pairs: list[tuple[int, int]] | None = None  # explicit (student layer, teacher layer) pairs
    args: dict[str, Any] = Field(default_factory=dict)  # loss arguments (temperature, reduction, ...)
    proj: Literal["auto", "none", "linear", "mlp"] = "auto"  # see knowledge/terms.py
    proj_dim: int | None = Field(None, gt=0)  # project both sides to this width (RAIL-KD)
    concat: bool = False  # concatenate the mapped layers before comparing (RAIL-KD_c)
    # proj_dim's teacher-side projections: kept at their random initialisation (default) or trained with the
    # student; trained, they can squeeze the teacher's vectors into one direction (docs/results.md, section 2)
    train_teacher_proj: bool = False
    # how a map that groups teacher layers (ckd) fuses a group: the mean of its vectors, or (CKD's paper) a
    # learned linear map of their concatenation, trained with the student
    fuse: Literal["mean", "linear"] = "mean"
    # with several teachers: the name of the teacher an intermediate term reads (logit terms read the
    # combined teachers, or each teacher with combine: per-teacher)
    teacher: str | None = None


class TeacherCfg(_Strict):
    """One of several teachers (multi-teacher distillation)."""
    model: str
    weight: float = 1.0  # share in the averaged soft target (or of the per-teacher terms); >= 0, not all 0
    name: Name = None  # how terms refer to it (default t1, t2, ...); its cache's folder
    cache: str | None = None  # this teacher's output cache (default: <teacher_cache.dir>/<name>)


class PeerCfg(_Strict):
    """A model that learns in an online (mutual learning) run."""
    name: Name = None  # default p1, p2, ...; the folder of its model
    init: str  # pre-trained model whose layers the peer copies
    layers: str | int | list[int] = "all"


class ExitsCfg(_Strict):
    """Self-distillation: classifiers ("exits") on intermediate layers of one model."""
    layers: str | int | list[int] = "all"  # layers of the model with an exit (the last one is its own head)
    pool: Literal["mean", "cls"] = "mean"  # what an exit reads of its layer (mean over real tokens, or [CLS])


class AugmentCfg(_Strict):
    """Augmentation rules (data/transfer/augment.py): Tang et al. 2019 or TinyBERT-style replacement."""
    method: Literal["tang", "tinybert"]
    copies: int = Field(20, ge=1)  # augmented versions per training example (Tang's n_iter, TinyBERT's N_a)
    p_mask: float = Field(0.1, ge=0, le=1)  # tang: a word becomes the mask token
    p_pos: float = Field(0.1, ge=0, le=1)  # tang: a word becomes another word with its POS tag
    p_ng: float = Field(0.25, ge=0, le=1)  # tang: keep only a random n-gram, n in 1..ng_max
    ng_max: int = Field(5, ge=1)
    p_t: float = Field(0.4, ge=0, le=1)  # tinybert: a word becomes one of its k nearest neighbours
    k: int = Field(15, ge=1)
    seed: int = 0


class AdversarialCfg(_Strict):
    """Adversarial rows made from each real batch (data/transfer/adversarial.py), labelled by the teacher."""
    flips: int = Field(2, ge=1)  # tokens replaced per example
    weight: float = Field(1.0, ge=0)  # the logit terms on adversarial rows weigh this much relative to real ones
    every: int = Field(1, ge=1)  # an adversarial batch after every N-th real batch
    temperature: float = Field(1.0, gt=0)  # of the divergence the search maximises


class SyntheticCfg(_Strict):
    """Data-free rows synthesised from the teacher alone (data/transfer/synthetic.py)."""
    per_class: int = Field(1000, ge=1)  # sentences per class
    length: int = Field(16, ge=1)  # words per sentence
    steps: int = Field(100, ge=1)  # Adam steps on the input embeddings
    lr: float = Field(0.3, gt=0)
    diversity: float = Field(1.0, ge=0)
    # the teacher scores the decoded (nearest) tokens at every step; without it, decoding returns the random
    # start words on a real teacher (measured on the MiniLM MRPC teacher), so the pull term snap is then not needed
    straight_through: bool = True
    snap: float = Field(0.0, ge=0)
    batch_size: int = Field(32, ge=1)
    seed: int = 0


class TransferCfg(_Strict):
    """The transfer set: the training rows (labelled) plus generated rows that only the teacher labels."""
    dir: str | None = None  # folder of the generated set: built if absent, reused if it matches, refused if stale
    train_rows: bool = True  # false: the student sees no real training row (data-free distillation)
    augment: AugmentCfg | None = None
    synthetic: SyntheticCfg | None = None
    adversarial: AdversarialCfg | None = None


class CacheCfg(_Strict):
    dir: str | None = None  # teacher-output cache folder: used if it matches, built if absent, refused if stale
    dtype: Literal["float32", "float16", "bfloat16"] = "float16"  # of the stored vectors (logits stay float32)
    runtime: Literal["torch", "onnx", "torch-bf16", "auto"] = "onnx"  # the teacher's pass building the cache: ONNX
    # Runtime (faster on CPU, checked against PyTorch on two batches, PyTorch if that fails or the teacher is on a
    # GPU), torch, or torch-bf16 (PyTorch under bf16 autocast: the fastest here for a 12-layer teacher on a CPU with
    # native bf16, docs/performance.md section 10; its outputs carry bf16's rounding, and the cache key says so);
    # auto: torch-bf16 where bf16 is native (hardware.py), else onnx -- resolved when the recipe is read


class TrainCfg(_Strict):
    epochs: float = Field(3, gt=0)
    batch_size: int = Field(32, gt=0)
    eval_batch_size: int = Field(64, gt=0)
    lr: float = Field(5e-5, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    max_length: int = Field(128, gt=1)
    grad_clip: float | None = Field(1.0, gt=0)  # max gradient norm; null: no clipping
    fused_adamw: bool = True  # torch's fused AdamW kernel (CPU, CUDA): here ~6x faster than the per-tensor loop
    seed: int = 42
    length_grouped: bool = True  # batches of similar lengths (with dynamic padding)
    pad_to_max_length: bool = False  # pad every batch to max_length (what the PKD/TextBrewer examples do)
    # checkpoints in the run's .partial folder (checkpoint.py): at each epoch end, and every N steps if N > 0;
    # an interrupted run continues with --resume
    checkpoint: bool = True
    checkpoint_every: int = Field(0, ge=0)
    # TensorBoard scalars in <run>/tensorboard/: each loss part and the learning rate every step, dev metrics
    # every epoch (needs the tensorboard package)
    tensorboard: bool = False
    # autocast of the forward passes of each training step (the student, a live teacher); the loss terms, evaluation
    # and the saved weights stay fp32. bf16 on a CPU is faster only with native bf16 instructions (AVX512-BF16, AMX);
    # emulated it is many times slower (docs/performance.md section 13). auto: bf16 where it is native (a CUDA GPU
    # with bf16, else a CPU with it), else no -- resolved when the recipe is read (the run's recipe.yaml says which)
    mixed_precision: Literal["no", "fp16", "bf16", "auto"] = "no"
    cpu: bool = False

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _yaml_no(cls, v):
        return "no" if v is False else v  # YAML reads a bare `no` as false


class Recipe(_Strict):
    method: str
    task: str | dict[str, Any]
    data: DataCfg = Field(default_factory=DataCfg)
    teacher: str | None = None
    # who learns from whom (schemes/): offline (frozen teacher or teachers), online (peers learn together),
    # self (one model's last layer teaches exits on its lower layers), general (a pre-trained teacher's
    # intermediate layers on unlabelled text, TinyBERT's first stage)
    scheme: Literal["offline", "online", "self", "general"] = "offline"
    teachers: list[TeacherCfg] = Field(default_factory=list)  # several teachers instead of 'teacher'
    # a teacher is scored on (a sample of) the dev rows before it teaches: near chance it is refused (a saved but
    # never trained head) unless this is true (--allow-weak-teacher)
    allow_weak_teacher: bool = False
    combine: Literal["average", "per-teacher"] = "average"  # how logit terms use several teachers
    peers: list[PeerCfg] = Field(default_factory=list)  # scheme: online
    exits: ExitsCfg = Field(default_factory=ExitsCfg)  # scheme: self
    generations: int = Field(1, ge=1)  # born-again networks: generation g+1 learns from generation g
    # runs chained by one command (two-stage distillation): each stage = this recipe with its keys merged in
    stages: list[dict[str, Any]] = Field(default_factory=list)
    student: StudentCfg = Field(default_factory=StudentCfg)
    teacher_cache: CacheCfg = Field(default_factory=CacheCfg)  # see schemes/cache.py
    transfer: TransferCfg = Field(default_factory=TransferCfg)  # see data/transfer/
    hard_weight: float = Field(1.0, ge=0)  # weight of the task loss (CE, or MSE for regression): 1 - alpha
    terms: list[TermCfg] = Field(default_factory=list)
    train: TrainCfg = Field(default_factory=TrainCfg)

    # the settings that said auto before _resolve_auto replaced them (stages merge into the unresolved recipe)
    _auto: set = PrivateAttr(default_factory=set)

    @model_validator(mode="after")
    def _resolve_auto(self):
        """``auto`` precisions become what this machine computes fast (hardware.py): bf16 where it is native."""
        if "auto" in (self.train.mixed_precision, self.teacher_cache.runtime):
            fast = hardware.bf16_fast(cpu=self.train.cpu)
            if self.train.mixed_precision == "auto":
                self.train.mixed_precision = "bf16" if fast else "no"
                self._auto.add(("train", "mixed_precision"))
            if self.teacher_cache.runtime == "auto":
                self.teacher_cache.runtime = "torch-bf16" if fast else "onnx"
                self._auto.add(("teacher_cache", "runtime"))
        return self


def _set_path(obj: dict, dotted: str, value, where: str):
    parts = dotted.split(".")
    cur: Any = obj
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(cur, list):
            idx = next((k for k, t in enumerate(cur) if isinstance(t, dict) and t.get("name") == part), None)
            if idx is None and part.isdigit() and int(part) < len(cur):
                idx = int(part)
            if idx is None:
                names = [t.get("name") for t in cur if isinstance(t, dict)]
                raise TextDistillError(f"{where}: --set {dotted}: no entry '{part}' (names: {names})")
            part = idx
        elif not isinstance(cur, dict):
            raise TextDistillError(f"{where}: --set {dotted}: '{'.'.join(parts[:i])}' is not a section")
        if last:
            cur[part] = value
        else:
            if isinstance(cur, dict) and cur.get(part) is None:
                cur[part] = {}
            cur = cur[part]


def parse_overrides(items: list[str]) -> list[tuple[str, Any]]:
    out = []
    for item in items or []:
        if "=" not in item:
            raise TextDistillError(f"--set {item}: expected KEY=VALUE")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        out.append((key.strip(), value))
    return out


def _yaml_where(e: yaml.YAMLError) -> str:
    """``:line:column: invalid YAML: problem (context on line L)`` of a YAML error, on one line."""
    mark = getattr(e, "problem_mark", None)
    where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
    problem = getattr(e, "problem", None) or (str(e).splitlines() or ["?"])[0]
    context, cmark = getattr(e, "context", None), getattr(e, "context_mark", None)
    more = f" ({context}{f' on line {cmark.line + 1}' if cmark is not None else ''})" if context else ""
    return f"{where}: invalid YAML: {problem}{more}"


def read_yaml(path: str, what: str) -> dict:
    """A YAML file holding a mapping (a recipe, a suite); every problem one line naming the file (and the line
    and column of a YAML error)."""
    p = Path(path)
    if not p.is_file():
        raise TextDistillError(f"{path}: {what} not found")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise TextDistillError(f"{path}{_yaml_where(e)}") from None
    except UnicodeDecodeError as e:
        raise TextDistillError(f"{path}: not UTF-8 (byte 0x{e.object[e.start]:02x} at offset {e.start})") from None
    if not isinstance(data, dict):
        raise TextDistillError(f"{path}: a {what} is a mapping of keys to values")
    return data


def validation_error(e: ValidationError, where: str, prefix: str = "") -> TextDistillError:
    """The first problem of a pydantic validation as one line naming ``prefix`` + the key."""
    err = e.errors()[0]
    loc = prefix + ".".join(str(x) for x in err["loc"])
    if err["type"] == "extra_forbidden":
        return TextDistillError(f"{where}: unknown key '{loc}'")
    if err["type"] == "missing":
        return TextDistillError(f"{where}: missing key '{loc}'")
    msg = err["msg"].removeprefix("Value error, ")  # (a validator's own message)
    return TextDistillError(f"{where}: {loc}: {msg} (got {err.get('input')!r})")


def load_recipe(path: str | None, overrides: list[tuple[str, Any]] = ()) -> Recipe:
    where = path or "command line"
    data: dict = read_yaml(path, "recipe") if path else {}
    for key, value in overrides:
        _set_path(data, key, value, where)
    return validate(data, where)


def validate(data: dict, where: str, prefix: str = "") -> Recipe:
    """A Recipe from plain data; the first problem as one line naming ``prefix`` + the key."""
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        raise validation_error(e, where, prefix) from None


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


REFERENCES = (("student", "init"), ("teacher",))  # keys whose value "@stage" names an earlier stage's student


def stage_recipes(recipe: Recipe, where: str = "recipe") -> list[tuple[str, dict]]:
    """``[(name, data)]``: each stage is the recipe (without ``stages``) with the stage's keys merged in
    (mappings merge, other values replace). ``student.init`` or ``teacher`` may be ``"@NAME"``: the student
    of the earlier stage NAME. Every stage is validated here, before anything runs."""
    base = recipe.model_dump(mode="json", exclude_unset=True)
    base.pop("stages", None)
    for section, key in recipe._auto:  # resolved again per stage (a stage may set train.cpu)
        if isinstance(base.setdefault(section, {}), dict):
            base[section][key] = "auto"
    names: list[str] = []
    out = []
    for i, raw in enumerate(recipe.stages):
        stage = dict(raw)
        name = stage.pop("name", None)
        at = f"stages[{i}]" + (f" ({name})" if name else "")
        if not isinstance(name, str) or not name:
            raise TextDistillError(f"{where}: {at}.name: every stage needs a name")
        try:
            check_name(name)  # (the folder of the stage's run)
        except ValueError as e:
            raise TextDistillError(f"{where}: {at}.name: {e} (got {name!r})") from None
        if name in names:
            raise TextDistillError(f"{where}: {at}.name: duplicate stage name '{name}'")
        for key in ("stages", "generations"):
            if key in stage:
                raise TextDistillError(f"{where}: {at}.{key}: not inside a stage")
        data = _merge(base, stage)
        for path in REFERENCES:
            value = data.get(path[0]) if len(path) == 1 else (data.get(path[0]) or {}).get(path[1])
            if isinstance(value, str) and value.startswith("@") and value[1:] not in names:
                raise TextDistillError(f"{where}: {at}.{'.'.join(path)}: no earlier stage named '{value[1:]}' "
                                       f"(stages before it: {names or 'none'})")
        validate(data, where, prefix=f"{at}.")
        names.append(name)
        out.append((name, data))
    return out


def resolve_references(data: dict, models: dict[str, str]) -> Recipe:
    """A stage's recipe with ``"@NAME"`` replaced by ``models[NAME]`` (a model folder)."""
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for path in REFERENCES:
        holder = data if len(path) == 1 else data.get(path[0], {})
        value = holder.get(path[-1])
        if isinstance(value, str) and value.startswith("@"):
            holder[path[-1]] = models[value[1:]]
    return Recipe.model_validate(data)


def dump_recipe(recipe: Recipe, as_given: bool = False) -> str:
    """The recipe as YAML: what runs on this machine (``auto`` precisions resolved, for a run's recipe.yaml), or
    ``as_given=True``: ``auto`` kept where the recipe said it (a recipe to run elsewhere, e.g. a grid's best)."""
    data = recipe.model_dump(mode="json")
    if as_given:
        for section, key in recipe._auto:
            data[section][key] = "auto"
    return yaml.safe_dump(data, sort_keys=False)
