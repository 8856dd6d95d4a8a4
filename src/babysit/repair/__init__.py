"""Repair: ``babysit.fix`` applies the lecture's remedies to what ``diagnose`` finds and keeps
only those that verify (the finding goes, nothing new appears, and a short training run reaches
a lower validation loss). ``docs/architecture.md``, "Repair".

Modules: :mod:`.remedies` (the remedies as data: code -> ordered remedy functions),
:mod:`.verify` (the short training run), :mod:`.remaining` (what cannot be repaired, as
patch-like lines), :mod:`.loop` (the loop, ``fix``), :mod:`.result` (``Repair``, ``RepairStep``).
"""

from .loop import Order, default_order, fix
from .remedies import CODE_ORDER, ORDER, REMEDIES, Change, Remedy, Skip, remedies_for
from .result import Remaining, Repair, RepairStep, format_repair
from .setup import SetUp

__all__ = [
    "CODE_ORDER",
    "ORDER",
    "REMEDIES",
    "Change",
    "Order",
    "Remaining",
    "Remedy",
    "Repair",
    "RepairStep",
    "SetUp",
    "Skip",
    "default_order",
    "fix",
    "format_repair",
    "remedies_for",
]
