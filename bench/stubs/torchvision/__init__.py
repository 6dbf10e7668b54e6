"""Import-only stand-in for torchvision, for torchdistill in bench/ (see bench/README.md).

torchdistill 1.1.5 imports torchvision at import time (image models and datasets it registers);
no torchvision wheel on PyPI loads with the CPU torch 2.13.0 here ("operator torchvision::nms does
not exist"), and the text benchmark uses none of it. Any real use raises.
"""
from . import datasets, models, transforms  # noqa: F401
__version__ = "0.0-stub"
