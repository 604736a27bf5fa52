"""Neural-network building blocks: Module, Parameter and the layers of a BERT."""
from .layers import Dropout, Embedding, LayerNorm, Linear
from .module import Module, ModuleList, Parameter

__all__ = ["Module", "ModuleList", "Parameter", "Linear", "Embedding", "LayerNorm", "Dropout"]
