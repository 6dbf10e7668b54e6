from .loading import resolve_model_path, load_model, load_tokenizer, ALIASES
from .student import build_student, parse_layer_spec, find_layers

__all__ = ["resolve_model_path", "load_model", "load_tokenizer", "ALIASES", "build_student", "parse_layer_spec",
           "find_layers"]

from .bilstm import register as _register_bilstm  # noqa: E402

_register_bilstm()  # the BiLSTM student loads through transformers' Auto classes
