"""babysit: CS231n Lecture 6 ("Training Neural Networks I") as code you run on your own model.

Importing babysit is light: torch and numpy only. matplotlib, optuna, tensorboard, mnist1d and
scikit-learn are imported by the functions that need them.
"""

from . import data, nn
from .checks import diagnose
from .findings import Diagnosis, Finding
from .probes import LayerStats, Probe
from .repair import Repair, RepairStep, fix
from .reporting import report
from .tasks import Task
from .train import Callback, Checkpoint, History, Watcher, fit, watch
from .tuning import LRFinderResult, choice, intuniform, loguniform, lr_find, search, uniform
from .version import __version__

__all__ = [
    "Callback",
    "Checkpoint",
    "Diagnosis",
    "Finding",
    "History",
    "LRFinderResult",
    "LayerStats",
    "Probe",
    "Repair",
    "RepairStep",
    "Task",
    "Watcher",
    "__version__",
    "choice",
    "data",
    "diagnose",
    "fit",
    "fix",
    "intuniform",
    "loguniform",
    "lr_find",
    "nn",
    "report",
    "search",
    "uniform",
    "watch",
]
