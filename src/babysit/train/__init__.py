"""Training with a babysitter: ``fit`` (a plain, fast loop) and ``watch`` (your own loop),
both running the monitors of :mod:`babysit.train.monitors`."""

from . import monitors
from .callbacks import Callback
from .checkpoint import Checkpoint, CheckpointError
from .history import History
from .loop import fit
from .session import Session
from .watch import Watcher, watch

__all__ = [
    "Callback",
    "Checkpoint",
    "CheckpointError",
    "History",
    "Session",
    "Watcher",
    "fit",
    "monitors",
    "watch",
]
