"""Import-only stub: the names torchdistill's image models subclass; using them raises."""
from . import densenet, resnet  # noqa: F401


def __getattr__(name):
    raise AttributeError(f"torchvision stub: models.{name} is not available")
