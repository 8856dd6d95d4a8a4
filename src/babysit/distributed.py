"""Collectives babysit needs under ``torch.distributed`` (torchrun; gloo on CPU, nccl on CUDA).

One place for "are we distributed, which rank am I, agree on this": ``fit``, ``watch``, the
monitors, ``lr_find`` and the integrations call these and never ``torch.distributed`` directly,
so a single process (the usual case) pays nothing and every decision taken across ranks is
taken the same way. See docs/architecture.md, "Distributed training".

Every function works without a process group (``WORLD_SIZE`` unset or 1): reductions return
their input, ``any_rank(flag)`` returns ``flag``, ``rank()`` is 0. Collectives run on the
device the backend needs: CUDA tensors for nccl, CPU tensors for gloo.

The rules every caller follows:

- **Judge on the global batch.** Statistics that decide a finding (dead fractions, saturated
  fractions, activation moments, gradient norms) are *sums and counts* reduced with
  :func:`all_reduce_sum` before they are divided, so a layer dead on the global batch is dead,
  whatever each shard says. Weights are in sync under DDP: the update ratio is measured once.
- **Decide together.** A NaN or a blow-up seen on any rank is seen by all ranks in the same
  step (:func:`any_rank`), so they roll back, lower the lr or stop together and no rank is left
  waiting in a collective another rank skipped.
- **Write once.** Only :func:`is_main` (rank 0) writes the run directory.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "all_reduce_mean",
    "all_reduce_sum",
    "all_reduce_sum_start",
    "any_rank",
    "backend_for",
    "barrier",
    "broadcast_object",
    "collective_device",
    "collective_failed",
    "env_world_size",
    "init_from_env",
    "is_distributed",
    "is_main",
    "process_group",
    "rank",
    "world_size",
]

# How long a collective waits for a rank that died before the others end with an error
# (torch's own default is 30 min for gloo, 10 min for nccl: far longer than a user waits).
DEFAULT_TIMEOUT_S = 120.0


def is_distributed() -> bool:
    """True when a process group with more than one process is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """The number of processes (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """This process's global rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def is_main() -> bool:
    """True on the process that writes files and prints (rank 0, or the only process)."""
    return rank() == 0


def env_world_size() -> int:
    """``WORLD_SIZE`` as torchrun sets it (1 when unset): the job's size before any group exists."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def backend_for(device: torch.device | str) -> str:
    """The backend for collectives on ``device``: ``"nccl"`` for CUDA, ``"gloo"`` otherwise."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def collective_device() -> torch.device:
    """Where tensors for a collective must live: the current CUDA device under nccl, else CPU."""
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def init_from_env(
    device: torch.device | str = "cpu", *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> bool:
    """Initialise the default process group from torchrun's environment when there is one.

    Returns True when this call created the group (the caller then destroys it when done),
    False when no group is needed (``WORLD_SIZE`` ≤ 1) or the user already created one.

    Raises:
        ValueError: the user's process group uses a backend ``device`` cannot run (nccl with
            a CPU device); the message names the right backend.
    """
    if dist.is_available() and dist.is_initialized():
        backend = dist.get_backend()
        wanted = backend_for(device)
        if backend == "nccl" and wanted != "nccl":
            raise ValueError(
                f"the process group uses the nccl backend, which runs only on CUDA devices, "
                f"but device={str(device)!r}: initialise it with backend='gloo' "
                "(torch.distributed.init_process_group('gloo')) or train on CUDA"
            )
        return False
    if env_world_size() <= 1:
        return False
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    dist.init_process_group(backend_for(device), timeout=datetime.timedelta(seconds=timeout_s))
    return True


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of ``tensor`` over all ranks (a new tensor on ``tensor``'s device and dtype)."""
    if not is_distributed():
        return tensor
    work = tensor.detach().to(collective_device(), copy=True)
    dist.all_reduce(work, op=dist.ReduceOp.SUM)
    return work.to(tensor.device, tensor.dtype)


def all_reduce_sum_start(tensor: torch.Tensor) -> Callable[[], torch.Tensor]:
    """Start :func:`all_reduce_sum` without waiting; calling the result waits for the sum.

    A small reduction then overlaps other work instead of adding a round trip (``fit``
    overlaps the loss's with DDP's backward). In one process the result returns ``tensor``.
    """
    if not is_distributed():
        return lambda: tensor
    work = tensor.detach().to(collective_device(), copy=True)
    handle = dist.all_reduce(work, op=dist.ReduceOp.SUM, async_op=True)

    def wait() -> torch.Tensor:
        handle.wait()
        return work.to(tensor.device, tensor.dtype)

    return wait


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of ``tensor`` over all ranks (each rank weighted equally)."""
    if not is_distributed():
        return tensor
    return all_reduce_sum(tensor) / world_size()


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is True on at least one rank (one MAX all-reduce)."""
    if not is_distributed():
        return bool(flag)
    work = torch.tensor([1 if flag else 0], dtype=torch.int32, device=collective_device())
    dist.all_reduce(work, op=dist.ReduceOp.MAX)
    return bool(work.item())


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` as rank ``src`` holds it, on every rank (a picklable object)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=collective_device())
    return box[0]


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if is_distributed():
        dist.barrier()


@contextlib.contextmanager
def process_group(device: torch.device | str = "cpu", *, who: str = "babysit") -> Iterator[None]:
    """Work under torchrun: the process group from its environment when the user made none
    (:func:`init_from_env`; destroyed on the way out, a user's group stays theirs), and a
    collective that timed out or lost its peers turned into an error that says so (another
    rank died or hangs). ``who`` names the caller in that message. In one process it does
    nothing."""
    created = init_from_env(device)
    try:
        yield
    except RuntimeError as err:
        if is_distributed() and collective_failed(err):
            raise RuntimeError(
                f"{who} on rank {rank()} of {world_size()}: the other processes did not "
                "answer a collective (it timed out or their connection closed), so another "
                "rank died or hangs: see that rank's output. This rank waited the process "
                f"group's timeout (babysit's default: {DEFAULT_TIMEOUT_S:g} s) and stops "
                f"instead of hanging ({str(err).splitlines()[0][:200]})"
            ) from err
        raise
    finally:
        if created:
            gc.collect()  # DDP reducers nobody holds go first (one outliving its group aborts)
            dist.destroy_process_group()


def collective_failed(err: BaseException) -> bool:
    """A collective that timed out or lost its peers (gloo and nccl say so in these words)."""
    backend_error = getattr(dist, "DistBackendError", ())
    text = str(err).lower()
    words = ("timed out", "timeout", "connection closed", "connection reset", "broken pipe")
    return isinstance(err, backend_error) or any(w in text for w in words)
