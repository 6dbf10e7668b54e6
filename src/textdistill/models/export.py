"""Export a saved student (a Hugging Face sequence classifier folder) to ONNX, optionally int8, and run it
with ONNX Runtime.

``export(model_dir, out_dir, ...)`` writes ``<out>/model.onnx`` (inputs ``input_ids``, ``attention_mask`` and
``token_type_ids`` when the model takes them, dynamic batch and sequence axes; output ``logits``), the source
folder's ``config.json`` and tokenizer files, and ``export.json`` (source, opset, int8 mode, the agreement
check, sizes in bytes). The graph comes from ``torch.onnx.export``'s TorchScript exporter (``dynamo=False``:
no onnxscript dependency, and it traces transformers 5's sdpa attention correctly); int8 comes from ONNX
Runtime's quantization tools:

* ``int8="dynamic"``: ``quantize_dynamic`` (int8 weights of MatMul/Gather, activations quantized on the fly);
* ``int8="static"``: ``quantize_static`` (QDQ format, per-channel int8 weights, uint8 activations whose ranges
  are calibrated (min/max) on ``calibration_rows`` training texts; MatMul, Gemm and Gather nodes).

After the export the ONNX model's logits are compared with PyTorch's on the dev file (``task`` with
``data_dir``), a given ``file``, or a built-in sample of sentences: argmax agreement, max |logit difference|
and, on labelled data, both models' metrics. The fp32 graph must agree on >= 99.9% of rows; an int8 model on
>= ``min_agreement``. A refusal writes nothing: the output is built in ``.<out>.partial`` and renamed at the end.

``evaluate`` (CLI) accepts a folder with ``model.onnx`` or the ``.onnx`` file: see :func:`is_onnx_model`,
:func:`load_onnx` and :func:`onnx_predict`.
"""
from __future__ import annotations

import contextlib
import json
import logging
import random
import shutil
import time
import warnings
from pathlib import Path

import numpy as np

from .. import TextDistillError

ONNX_FILE, EXPORT_JSON = "model.onnx", "export.json"
WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model",
                   "chat_template.jinja")
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
MIN_OPSET = 17
FP32_AGREEMENT = 0.999  # the fp32 graph must give the PyTorch argmax on this share of rows
REGRESSION_TOL = 0.05  # a single-output (regression) model "agrees" on a row when |difference| <= this
STATIC_OPS = ("MatMul", "Gemm", "Gather")  # quantize_static: the weight-heavy nodes (elementwise ops stay fp32)
CALIBRATION_BATCH = 8
# the check without data: sentences of varied length (padding inside each batch)
SAMPLE = (
    "a gripping , funny film .", "dull", "it 's a charming and often affecting journey .",
    "unflinchingly bleak and desperate", "the acting , costumes , music , cinematography and sound are all "
    "astounding given the production 's austere locales .", "it 's slow -- very , very slow .",
    "a sometimes tedious film .", "the movie is a disaster from start to finish , and not even the cast can save "
    "it from its own worst instincts .", "one of the greatest family-oriented , fantasy-adventure movies ever .",
    "an ugly , pointless , stupid movie .", "what a great way to spend 4 hours .", "not bad at all",
    "the plot is nothing but boilerplate clichés from start to finish .", "a masterpiece four years in the making .",
    "i did n't laugh once .", "warm , funny , engaging film .", "the company said its profit rose 12 % in the "
    "third quarter .", "is this the right way to the station ?", "he left the room without a word .",
    "terrible", "wonderful", "it never quite finds its footing , but the performances keep it watchable .",
    "a thoroughly engaging , surprisingly touching british comedy .", "the film is strictly routine .",
    "there are few things more satisfying than watching a good cast work with a smart script , and this is one of "
    "them .", "ok", "a loud , ugly , irritating movie without any of its satisfying elements .",
    "the year 's most intriguing explanation of the creative process .", "it 's just merely very bad .",
    "an intelligent , moving and invigorating film .", "too long , too self-indulgent .", "a treat .",
)


def check_student(folder) -> Path:
    """The folder of a saved sequence classifier (config.json, safetensors weights, tokenizer files)."""
    path = Path(folder).expanduser()
    missing = [] if path.is_dir() else ["the folder"]
    if not missing:
        if not (path / "config.json").is_file():
            missing.append("config.json")
        if not any((path / w).is_file() for w in WEIGHTS):
            missing.append("model.safetensors")
        if not any((path / t).is_file() for t in ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model",
                                                  "sentencepiece.bpe.model")):
            missing.append("tokenizer files")
    if missing:
        raise TextDistillError(f"{folder}: not a student folder (no {', '.join(missing)}; expected a saved sequence "
                               f"classifier: config.json, model.safetensors and its tokenizer files)")
    return path


def is_onnx_model(name) -> bool:
    """True for a ``.onnx`` file or a folder holding ``model.onnx`` (an export)."""
    path = Path(str(name)).expanduser()
    return (path.is_file() and path.suffix == ".onnx") or (path.is_dir() and (path / ONNX_FILE).is_file())


def _session(path, threads: int | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # errors only
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise TextDistillError(f"{path}: ONNX Runtime cannot load it ({type(e).__name__}: "
                               f"{str(e).strip().splitlines()[0] if str(e).strip() else ''})") from None


def load_onnx(name, threads: int | None = None):
    """``(session, path of the .onnx file)`` of an exported model (its folder holds config.json and the tokenizer)."""
    path = Path(str(name)).expanduser()
    onnx_path = path if path.is_file() else path / ONNX_FILE
    folder = onnx_path.parent
    if not (folder / "config.json").is_file():
        raise TextDistillError(f"{onnx_path}: no config.json beside it (export with 'textdistill export', which "
                               f"copies the config and tokenizer next to model.onnx)")
    return _session(onnx_path, threads), onnx_path


def check_labels(folder: Path, task, name) -> None:
    """The exported model's head fits the task: its number of outputs and (when named) its label order."""
    config = json.loads((Path(folder) / "config.json").read_text())
    id2label = config.get("id2label") or {}
    n = len(id2label) if id2label else int(config.get("num_labels", 2))
    if n != task.num_labels:
        raise TextDistillError(f"{name}: the model has {n} outputs, task {task.name} needs {task.num_labels}")
    saved = [str(v) for _, v in sorted((int(k), v) for k, v in id2label.items())]
    named = saved and not all(v == f"LABEL_{i}" for i, v in enumerate(saved))
    if named and task.labels is not None and tuple(saved) != task.labels:
        raise TextDistillError(f"{name}: the model's labels are {saved}, the task's are {list(task.labels)} "
                               f"(same order needed)")


def onnx_predict(session, loader) -> np.ndarray:
    """Logits of every example in the dataset's order (like ``evaluate.predict``), through ONNX Runtime."""
    names = [i.name for i in session.get_inputs()]
    out, idx = [], []
    for batch in loader:
        missing = [n for n in names if n not in batch]
        if missing:
            raise TextDistillError(f"the ONNX model needs inputs {missing} that its tokenizer does not produce")
        out.append(session.run(["logits"], {n: batch[n].numpy().astype(np.int64) for n in names})[0])
        idx.append(batch["idx"].numpy())
    logits, idx = np.concatenate(out).astype(np.float32), np.concatenate(idx)
    ordered = np.empty_like(logits)
    ordered[idx] = logits
    return ordered


def onnx_parameters(path) -> int:
    """Elements in the graph's initializers (int8 weights count one each; scales and zero points included)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return int(sum(np.prod(t.dims, dtype=np.int64) for t in model.graph.initializer))


def model_inputs_of(model, tokenizer) -> list[str]:
    """The inputs the exported graph takes: those of INPUTS that the model's forward accepts and the
    tokenizer produces (input_ids and attention_mask always)."""
    import inspect

    params = inspect.signature(model.forward).parameters
    names = [n for n in INPUTS if n in params and (n in tokenizer.model_input_names or n == "attention_mask")]
    if names[:2] != ["input_ids", "attention_mask"]:
        raise TextDistillError(f"{model.__class__.__name__}: its forward takes no input_ids/attention_mask; "
                               f"only Hugging Face sequence classifiers can be exported")
    return names


@contextlib.contextmanager
def _quiet():
    """The exporter's TracerWarnings and the quantizer's root-logger warnings are not the user's concern."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def export_onnx(model, tokenizer, path, opset: int = MIN_OPSET, *, names: list[str] | None = None,
                outputs: tuple[str, ...] = ("logits",)) -> list[str]:
    """Write ``model`` (a PyTorch sequence classifier in eval mode) as ONNX to ``path``; returns its inputs.
    ``names``/``outputs``: for a wrapper module whose forward takes ``names`` positionally and returns
    ``outputs`` (tensors whose first axis is the batch), e.g. the teacher cache's graph."""
    import torch

    names = names or model_inputs_of(model, tokenizer)
    # two rows of different lengths: the trace sees padding, so the attention mask is part of the graph
    dummy = tokenizer([SAMPLE[0], SAMPLE[4]], padding=True, return_tensors="pt")
    args = tuple(dummy[n] if n in dummy else torch.ones_like(dummy["input_ids"]) for n in names)
    axes = {n: {0: "batch", 1: "sequence"} for n in names} | {o: {0: "batch"} for o in outputs}
    model.eval()
    with _quiet(), torch.inference_mode(False), torch.no_grad():
        try:
            torch.onnx.export(model, args, str(path), dynamo=False, input_names=names, output_names=list(outputs),
                              dynamic_axes=axes, opset_version=opset, do_constant_folding=True)
        except Exception as e:  # noqa: BLE001 - the exporter raises many types
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise TextDistillError(f"ONNX export of {model.__class__.__name__} failed: {type(e).__name__}: "
                                   f"{first}") from None
    return names


class _Calibration:
    """``onnxruntime.quantization.CalibrationDataReader`` over tokenized batches of calibration texts."""

    def __init__(self, tokenizer, examples, names: list[str], max_length: int, batch: int = CALIBRATION_BATCH):
        self.batches = []
        for i in range(0, len(examples), batch):
            b = examples.text_b[i:i + batch] if examples.text_b is not None else None
            enc = tokenizer(examples.text_a[i:i + batch], b, padding=True, truncation=True, max_length=max_length,
                            return_tensors="np")
            self.batches.append({n: enc[n].astype(np.int64) for n in names})
        self.it = iter(self.batches)

    def get_next(self):
        return next(self.it, None)

    def rewind(self):
        self.it = iter(self.batches)


def quantize(fp32_path: Path, out_path: Path, mode: str, work: Path, calibration: _Calibration | None = None,
             per_channel: bool = False) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, \
        quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = work / "preprocessed.onnx"
    with _quiet():
        try:
            # symbolic shape inference does not complete on these graphs; ONNX shape inference and the graph
            # optimisation of the pre-processing still apply
            quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
            if mode == "dynamic":
                quantize_dynamic(str(pre), str(out_path), weight_type=QuantType.QInt8, per_channel=per_channel)
            else:
                class Reader(CalibrationDataReader):
                    def get_next(self):
                        return calibration.get_next()

                    def rewind(self):
                        calibration.rewind()

                reader = Reader()
                quantize_static(str(pre), str(out_path), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                                weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                                op_types_to_quantize=list(STATIC_OPS),
                                extra_options={"CalibMaxIntermediateOutputs": 16})
        except TextDistillError:
            raise
        except Exception as e:  # noqa: BLE001
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise TextDistillError(f"int8 {mode} quantization failed: {type(e).__name__}: {first}") from None


def compare(reference: np.ndarray, logits: np.ndarray, task=None, labels=None) -> dict:
    """Agreement of ``logits`` with the PyTorch ``reference`` (argmax; within REGRESSION_TOL for one output)."""
    from ..evaluate import compute_metrics

    diff = np.abs(reference - logits)
    if reference.shape[1] == 1:
        agree = diff[:, 0] <= REGRESSION_TOL
    else:
        agree = reference.argmax(-1) == logits.argmax(-1)
    out = {"rows": int(len(reference)), "agreement": float(agree.mean()), "disagreeing_rows": int((~agree).sum()),
           "max_abs_logit_diff": float(diff.max()), "mean_abs_logit_diff": float(diff.mean())}
    if task is not None and labels is not None and None not in labels:
        out["metrics"] = compute_metrics(task, logits, labels)
    return out


def _check_data(task, data_dir, file, split: str = "dev"):
    """The rows of the agreement check: ``(examples, description)``; ``(None, 'sample')`` without data."""
    from ..data.readers import Examples, load_examples, resolve_file

    if task is None:
        return Examples(list(SAMPLE), None, None, "built-in sample", list(range(1, len(SAMPLE) + 1))), None
    path = Path(file) if file else resolve_file(task, split, data_dir)
    ex = load_examples(task, path, require_labels=False)
    if not len(ex):
        raise TextDistillError(f"{path}: no rows to check the export on")
    return ex, str(path)


def _calibration_rows(task, data_dir, calibration, rows: int, seed: int = 0):
    from ..data.readers import load_examples, resolve_file

    path = Path(calibration) if calibration else resolve_file(task, "train", data_dir)
    ex = load_examples(task, path, require_labels=False)
    if not len(ex):
        raise TextDistillError(f"{path}: no calibration rows")
    picked = sorted(random.Random(seed).sample(range(len(ex)), min(rows, len(ex))))
    return ex.subset(picked), str(path)


def export(model_dir, out_dir, *, int8: str | None = None, task: str | None = None, data_dir=None, file=None,
           split: str = "dev", calibration=None, calibration_rows: int = 200, min_agreement: float = 0.97,
           opset: int = MIN_OPSET, batch_size: int = 32, max_length: int = 128, overwrite: bool = False,
           per_channel: bool | None = None) -> dict:
    """Export the student in ``model_dir`` to ``out_dir`` (see the module's docstring); returns export.json."""
    from ..data.batching import encode, eval_loader
    from ..data.tasks import get_task
    from ..evaluate import predict
    from ..schemes.teachers import commit_output, prepare_output
    from .loading import load_model, load_tokenizer

    # every check before anything is loaded or written
    src = check_student(model_dir)
    if int8 not in (None, "dynamic", "static"):
        raise TextDistillError(f"--int8 {int8}: use dynamic or static")
    if opset < MIN_OPSET:
        raise TextDistillError(f"--opset {opset}: {MIN_OPSET} or later")
    if not 0 <= min_agreement <= 1:
        raise TextDistillError(f"--min-agreement {min_agreement}: a fraction between 0 and 1")
    if calibration_rows < 1:
        raise TextDistillError(f"--calibration-rows {calibration_rows}: at least 1")
    if (data_dir or file or calibration) and not task:
        raise TextDistillError("export: --data-dir, --file and --calibration need --task (to read the file)")
    if data_dir and file:
        raise TextDistillError("export: give --data-dir or --file, not both")
    if int8 == "static" and not (calibration or data_dir):
        raise TextDistillError("--int8 static: needs calibration texts: --task T with --data-dir D (its train file) "
                               "or --calibration FILE")
    qat_scheme = json.loads((src / "config.json").read_text()).get("textdistill_quantization")
    if per_channel and int8 != "dynamic":
        raise TextDistillError("--per-channel: only for --int8 dynamic (static is always per channel)")
    if per_channel is None:  # a quantization-aware student: the scheme it was trained with (ternary: per row)
        per_channel = int8 == "dynamic" and bool(qat_scheme) and bool(
            qat_scheme.get("per_channel", "per output channel" in str(qat_scheme.get("weights")))
            or qat_scheme.get("weights_bits") == 2)
    if int8 != "static" and calibration:
        raise TextDistillError("--calibration: only used by --int8 static")
    task_obj = get_task(task) if task else None
    if task_obj is not None and not (data_dir or file or calibration):
        raise TextDistillError("export: --task needs --data-dir or --file (the rows of the check)")
    check_ex, check_src = _check_data(task_obj if (data_dir or file) else None, data_dir, file, split)
    calib_ex, calib_src = _calibration_rows(task_obj, data_dir, calibration, calibration_rows) \
        if int8 == "static" else (None, None)

    if task_obj is not None:
        model, head_new = load_model(str(src), task_obj.num_labels, task_obj.labels)
    else:  # the head as saved
        id2label = json.loads((src / "config.json").read_text()).get("id2label") or {"0": "LABEL_0", "1": "LABEL_1"}
        saved = tuple(str(v) for _, v in sorted((int(k), v) for k, v in id2label.items()))
        model, head_new = load_model(str(src), len(saved), None if len(saved) == 1 else saved)
    if head_new:
        raise TextDistillError(f"{model_dir}: not a student folder (the model has no classification head)")
    model.eval()
    tokenizer = load_tokenizer(str(src))

    out, tmp = prepare_output(out_dir, overwrite)
    try:
        t0 = time.perf_counter()
        work = tmp / ".work"
        work.mkdir()
        fp32 = work / "fp32.onnx"
        names = export_onnx(model, tokenizer, fp32, opset)
        export_seconds = time.perf_counter() - t0

        data = encode(tokenizer, check_ex, max_length, task_obj is not None and task_obj.is_regression)
        loader = eval_loader(data, tokenizer, batch_size)
        reference = predict(model, loader)
        labels = check_ex.labels if task_obj is not None else None
        check = {"data": check_src or "built-in sample", "rows": len(check_ex)}
        if labels is not None and None not in labels:
            from ..evaluate import compute_metrics

            check["pytorch_metrics"] = compute_metrics(task_obj, reference, labels)
        check["fp32"] = compare(reference, onnx_predict(_session(fp32), loader), task_obj, labels)
        if check["fp32"]["agreement"] < FP32_AGREEMENT:
            c = check["fp32"]
            raise TextDistillError(f"the ONNX export disagrees with PyTorch on {c['disagreeing_rows']} of {c['rows']} "
                                   f"rows ({100 * c['agreement']:.2f}% agree, {100 * FP32_AGREEMENT:.1f}% needed; max "
                                   f"|logit difference| {c['max_abs_logit_diff']:.3g}); nothing written")
        final = tmp / ONNX_FILE
        sizes = {"pytorch_bytes": sum(p.stat().st_size for p in src.glob("*.safetensors")),
                 "onnx_fp32_bytes": fp32.stat().st_size}
        calib_info = None
        if int8:
            t1 = time.perf_counter()
            calib = _Calibration(tokenizer, calib_ex, names, max_length) if int8 == "static" else None
            quantize(fp32, final, int8, work, calib, per_channel=per_channel)
            export_seconds += time.perf_counter() - t1
            check["int8"] = compare(reference, onnx_predict(_session(final), loader), task_obj, labels)
            if check["int8"]["agreement"] < min_agreement:
                c = check["int8"]
                raise TextDistillError(f"the int8 ({int8}) model agrees with PyTorch on only {100 * c['agreement']:.2f}%"
                                       f" of {c['rows']} rows (--min-agreement {100 * min_agreement:.1f}%); nothing "
                                       f"written")
            if calib is not None:
                calib_info = {"format": "QDQ", "per_channel": True, "ops": list(STATIC_OPS), "weights": "int8",
                              "activations": "uint8", "calibration": {"file": calib_src, "rows": len(calib_ex),
                                                                      "batch": CALIBRATION_BATCH, "method": "minmax"}}
            sizes["onnx_int8_bytes"] = final.stat().st_size
        else:
            fp32.rename(final)
        sizes["onnx_bytes"] = final.stat().st_size
        shutil.rmtree(work)
        for name in ("config.json", *TOKENIZER_FILES):
            if (src / name).is_file():
                shutil.copy2(src / name, tmp / name)
        import onnx
        import onnxruntime
        import torch
        import transformers

        from .. import __version__

        info = {"source": str(src.resolve()), "format": "onnx", "file": ONNX_FILE, "opset": opset,
                "exporter": "torch.onnx.export (TorchScript, dynamo=False)", "inputs": names, "outputs": ["logits"],
                "dynamic_axes": {"batch": 0, "sequence": 1}, "int8": int8,
                "int8_detail": None if not int8 else (
                    {"method": "onnxruntime.quantization.quantize_dynamic", "weights": "int8",
                     "per_channel": per_channel, "quantization_aware": qat_scheme} if int8 == "dynamic"
                    else {"method": "onnxruntime.quantization.quantize_static", **calib_info}),
                "min_agreement": {"fp32": FP32_AGREEMENT, **({"int8": min_agreement} if int8 else {})},
                "check": check, "sizes": sizes, "export_seconds": round(export_seconds, 2),
                "versions": {"textdistill": __version__, "torch": torch.__version__,
                             "transformers": transformers.__version__, "onnx": onnx.__version__,
                             "onnxruntime": onnxruntime.__version__}}
        (tmp / EXPORT_JSON).write_text(json.dumps(info, indent=2) + "\n")
        commit_output(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return info
