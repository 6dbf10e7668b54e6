from .losses import LOSSES, register_loss, get_loss
from .maps import MAPS, register_map, layer_map
from .terms import Term, build_terms

__all__ = ["LOSSES", "register_loss", "get_loss", "MAPS", "register_map", "layer_map", "Term", "build_terms"]
