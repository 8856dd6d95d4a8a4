"""What every monitor shares: the Callback interface plus a finding helper."""

from __future__ import annotations

from typing import Any

from ...findings import finding
from ..callbacks import Callback

__all__ = ["Monitor", "finding"]


class Monitor(Callback):
    """A callback that turns measurements into findings (``trainer.emit``).

    Monitors work under ``fit`` and under ``watch``: they read only the session's model,
    optimizer, counters and thresholds, and use the optimizer's and modules' own hooks for
    anything inside the step.
    """

    def state_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)
