"""The backends the DDP tests run on: gloo always (CPU), nccl where two CUDA devices are present
(one per process, ``cuda:LOCAL_RANK``); skipped otherwise, with the reason."""

from __future__ import annotations

import pytest
import torch

NCCL = pytest.mark.skipif(
    torch.cuda.device_count() < 2, reason="nccl needs two CUDA devices (one per process)"
)
BACKENDS = ["gloo", pytest.param("nccl", marks=NCCL)]
