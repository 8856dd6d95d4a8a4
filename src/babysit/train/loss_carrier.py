"""Every rank's loss, carried inside DDP's own gradient all-reduce: no extra round trip a step.

Under torchrun the loss guard must judge every rank's loss in the same step (a NaN or a
blow-up on one rank is a decision for all; docs/architecture.md, "Distributed training").
Sharing the loss with a collective of its own costs one latency-bound round trip per step —
on loopback gloo 0.2–0.3 ms, 10% of a small model's step (docs/benchmarks.md,
benchmarks/distributed.py). DDP already all-reduces the gradients every step, so the loss can
ride along: a communication hook (``DistributedDataParallel.register_comm_hook``) appends
``W + 1`` numbers to bucket 0 and splits them off after the sum: the rank's ``W`` loss slots
(its loss at its own index, zeros elsewhere) and a "missing" count, 1 on a rank that had no
loss loaded when its bucket left (zeros in its slots then). The gradient part is DDP's default
hook exactly (divide by ``W``, sum); the slots' sum is every rank's loss, NaN and Inf included,
and the missing count's sum tells every rank the same thing: 0 means every rank's loss rode
along, more means some rank's did not and every rank must share the losses another way
(``watch`` then falls back to an all-reduce of its own, on every rank alike).

``fit`` attaches it to the DDP wrapper it makes; ``babysit.watch(..., carry_loss=True)`` to a
user's wrapper, on request only (a hook cannot be removed, and DDP takes one per wrapper: a
user's own later ``register_comm_hook`` would fail). Only when every trainable parameter is
float32, or every one float64 (the numbers take the bucket's dtype: a float16 bucket would
round a loss and overflow above 65504), and DDP runs on the default process group (the
slots are indexed by global rank). Otherwise the loss is shared with an all-reduce of its own
(``Session.begin_loss_share``).

No ``from __future__ import annotations`` here: DDP checks the hook's annotations at run time
(``bucket: dist.GradBucket``, returning ``torch.futures.Future[torch.Tensor]``).
"""

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["LossCarrier"]

_CARRIED_DTYPES = (torch.float32, torch.float64)
_ATTR = "_babysit_loss_carrier"  # the carrier registered on a wrapper (a hook stays for good)


class LossCarrier:
    """A DDP communication hook that carries this step's loss slots in bucket 0.

    ::

        carrier = LossCarrier.attach(ddp_model, world_size)   # None when it cannot
        carrier.load(slots)        # before backward: this rank's W loss slots
        loss.backward()            # DDP reduces the gradients and the slots together
        summed = carrier.take()    # after backward: every rank's loss, on every rank
    """

    def __init__(self, world_size: int) -> None:
        self.world_size = world_size
        self.user: Any = None  # a weak reference to the Watcher carrying with it (watch)
        self._slots: torch.Tensor | None = None
        self._summed: torch.Tensor | None = None  # W slots + the missing count, float64

    @staticmethod
    def refusal(ddp: nn.Module) -> str | None:
        """Why the loss cannot ride in ``ddp``'s gradient all-reduce (``None``: it can).

        Hooks already registered are not seen here (DDP refuses the second one:
        :meth:`register` raises)."""
        from torch.nn.parallel import DistributedDataParallel

        if not isinstance(ddp, DistributedDataParallel):
            return f"the model is a {type(ddp).__name__}, not a DistributedDataParallel wrapper"
        params = [p for p in ddp.parameters() if p.requires_grad]
        if not params:
            return "the model has no trainable parameters, so DDP reduces no gradient bucket"
        dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in params})
        if len(dtypes) > 1:
            return (
                f"the trainable parameters mix dtypes ({', '.join(dtypes)}), so the dtype of "
                "the gradient bucket the loss would ride in is not known in advance"
            )
        if params[0].dtype not in _CARRIED_DTYPES:
            return (
                f"the trainable parameters are {dtypes[0]}: the loss would be rounded to "
                f"{dtypes[0]} in the gradient bucket (float32 or float64 only)"
            )
        group = getattr(ddp, "process_group", None)
        if group is not None and group is not dist.group.WORLD:
            return (
                "the wrapper runs on a process group of its own, and the loss slots are "
                "indexed by global rank (the default group only)"
            )
        return None

    @classmethod
    def attach(cls, ddp: nn.Module, world_size: int) -> "LossCarrier | None":
        """Register the hook on ``ddp`` (a ``DistributedDataParallel`` fit made); None when
        :meth:`refusal` names a reason or the wrapper refuses a hook."""
        if cls.refusal(ddp) is not None:
            return None
        try:
            return cls.register(ddp, world_size)
        except RuntimeError:  # a hook is already registered
            return None

    @classmethod
    def register(cls, ddp: nn.Module, world_size: int) -> "LossCarrier":
        """Register a new carrier on ``ddp`` (check :meth:`refusal` first).

        Raises:
            RuntimeError: the wrapper already has a communication hook (DDP takes one); the
                wrapper is left as it was.
        """
        hooks = getattr(ddp, "_comm_hooks", None)
        if hooks:  # a Python hook registered: DDP would refuse after recording ours
            raise RuntimeError("register_comm_hook can only be called once")
        carrier = cls(world_size)
        kept = len(hooks) if hooks is not None else 0
        try:
            ddp.register_comm_hook(None, carrier._hook)
        except RuntimeError:  # a built-in hook: DDP appended ours to its list before refusing
            if hooks is not None:
                del hooks[kept:]
            raise
        setattr(ddp, _ATTR, carrier)
        return carrier

    @staticmethod
    def of(ddp: nn.Module) -> "LossCarrier | None":
        """The carrier babysit registered on ``ddp`` before, if any (it stays registered)."""
        return getattr(ddp, _ATTR, None)

    def load(self, slots: torch.Tensor) -> None:
        """This rank's loss slots for the coming backward (``W`` numbers)."""
        self._slots = slots
        self._summed = None

    def idle(self) -> bool:
        """True when no gradient bucket 0 was reduced since the last :meth:`reset` /
        :meth:`poll` / :meth:`take` (a loss loaded now rides in the next backward)."""
        return self._summed is None

    def reset(self) -> None:
        """Unload the slots and drop a sum not read: a later backward carries "missing"."""
        self._slots = None
        self._summed = None

    def poll(self) -> torch.Tensor | None:
        """Every rank's loss (``W`` float64s) when the last backward carried every rank's, else
        ``None`` (no bucket reduced since :meth:`load`, or a rank had loaded no loss). Resets.

        The answer is the same on every rank that loaded and polled at the same point of its
        step: the summed missing count is one number shared by all."""
        summed = self._summed
        self.reset()
        if summed is None or summed.tolist()[self.world_size] != 0:  # one read, not an item()
            return None
        return summed[: self.world_size]

    def take(self) -> torch.Tensor:
        """The slots summed over ranks (every rank's loss); valid once backward returned.

        Raises:
            RuntimeError: no gradient bucket was reduced in this backward (nothing carried),
                or a rank had no loss loaded.
        """
        summed = self._summed
        got = self.poll()
        if got is None:
            why = "reduced no gradient bucket" if summed is None else "carried no loss of a rank"
            raise RuntimeError(
                f"babysit: DDP {why} in this backward, so the ranks' losses were not shared; "
                "check that the loss depends on the model's parameters"
            )
        return got

    def _hook(self, state: Any, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
        grads = bucket.buffer()
        world = self.world_size
        if bucket.index() != 0:  # DDP's default: the mean of the gradients
            grads.div_(world)
            fut = dist.all_reduce(grads, async_op=True).get_future()
            return fut.then(lambda f: f.value()[0])
        # one buffer: the mean gradient, then the W slots and the missing count (built in
        # place: a cat of separate pieces cost ~40 µs a step more on a 61 kB bucket)
        n = grads.numel()
        work = torch.empty(n + world + 1, dtype=grads.dtype, device=grads.device)
        torch.div(grads, world, out=work[:n])
        slots, self._slots = self._slots, None  # carried once
        if slots is None:  # this rank's loss does not ride in this backward
            work[n:].zero_()
            work[n + world] = 1.0
        else:
            work[n : n + world].copy_(slots)
            work[n + world] = 0.0

        def split(fut: torch.futures.Future[list[torch.Tensor]]) -> torch.Tensor:
            out = fut.value()[0]
            self._summed = out[n:].to(torch.float64)
            return out[:n]

        return dist.all_reduce(work, async_op=True).get_future().then(split)
