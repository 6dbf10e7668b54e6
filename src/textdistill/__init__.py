"""textdistill: knowledge distillation for BERT-family text classifiers."""

__version__ = "0.1.0"


class TextDistillError(Exception):
    """An error caused by the user's input (file, row, option, recipe key).

    The CLI prints it as one line and exits with a non-zero code.
    """
