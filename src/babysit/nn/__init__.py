"""Building blocks: activations (Maxout included), init schemes and model builders."""

from .activations import ACTIVATIONS, ChannelMaxout, Maxout, activation, gain
from .init import INIT_SCHEMES, init_model
from .models import convnet, mlp

__all__ = [
    "ACTIVATIONS",
    "INIT_SCHEMES",
    "ChannelMaxout",
    "Maxout",
    "activation",
    "convnet",
    "gain",
    "init_model",
    "mlp",
]
