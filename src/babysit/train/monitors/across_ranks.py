"""One sampled step's activation and gradient statistics, reduced across DDP ranks.

Under ``torchrun`` each rank's probe measures its own shard of the batch. A finding must be
judged on the global batch (docs/architecture.md, "Distributed training"): a ReLU unit silent
on rank 0's examples but alive on rank 1's is not dead, and a layer saturated on one shard only
is saturated in the proportion of the whole batch. So the counts behind every judged number are
summed across ranks (:func:`babysit.distributed.all_reduce_sum`) before anything is divided:

- dead units: per unit, a 1 where it was nonzero on some example of this rank ("ever alive");
  the sum is 0 exactly for the units dead on every example of every rank;
- saturation: saturated values and the values counted (``LayerStats.n_saturation_values``);
- moments: ``n``, ``Σx = n·mean``, ``n·mean²`` and ``M2 = Σ(x − mean)²`` per rank, combined
  as ``M2 = ΣM2_r + Σ n_r·mean_r² − N·mean²`` (float64), ``std = sqrt(M2 / (N − 1))``;
- weight-gradient norms: ``‖g‖²`` and a 1 per rank that has a gradient; the global norm is the
  root of their mean. Under DDP ``.grad`` is already the all-reduced average after backward,
  identical on every rank, and the mean of identical squares gives back that norm (summing
  norms would count it ``world_size`` times); a model whose gradients are not synchronised
  gets their root mean square.

Collectives, on every rank in the same order. The layout must agree across ranks (the same
layers, units and lengths: a layer whose unit count follows the data, e.g. a ReLU over
``(N, T, D)`` sequences of varying ``T``, would make the sums meaningless or the collective
fail). The first sampled step checks it with a 4-number header (:func:`layouts_agree`); from
then on each sampled step is one all-reduce of ``7·A + U + 2·L + 1`` float64s (``A`` judged
activation layers, ``U`` units of the ReLU layers among them, ``L`` weight layers, and a flag
raised by a rank whose layout no longer matches the agreed one, which then sends zeros). When
layouts differ nothing is judged for that step, the next sampled step checks the layout again,
and the caller says so (``CHECKS_SKIPPED``): cannot check means say so.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ... import distributed
from ...probes import LayerStats

__all__ = ["GlobalStats", "StepReducer", "layouts_agree"]

_HASH_MOD = 1 << 24  # squares x world size stay far inside int64


@dataclass(frozen=True)
class GlobalStats:
    """One activation layer's judged statistics over the global batch (all ranks' examples)."""

    name: str
    kind: str
    call: int
    n_examples: int  # summed over ranks
    n_units: int
    mean: float
    std: float
    dead_units: list[int] | None  # units zero on every example of every rank (ReLU family)
    dead_fraction: float | None
    saturated_fraction: float | None  # tanh/sigmoid: saturated values / values, all ranks


def layouts_agree(signature: str, length: int) -> bool:
    """Whether every rank recorded the same layout (one all-reduce of 4 int64s, every rank).

    Each rank sends ``[n, n², h, h²]`` for its payload length ``n`` and a CRC ``h`` of
    ``signature``; the sums satisfy ``W·Σx² = (Σx)²`` exactly when every rank's ``x`` is the
    same (Cauchy–Schwarz), so a difference anywhere is seen by all ranks alike.
    """
    h = zlib.crc32(signature.encode()) % _HASH_MOD
    sums = distributed.all_reduce_sum(torch.tensor([length, length**2, h, h * h]))
    n, n2, hs, h2 = (int(v) for v in sums.tolist())
    w = distributed.world_size()
    return w * n2 == n * n and w * h2 == hs * hs


class StepReducer:
    """Reduces sampled steps across ranks; remembers the layout every rank agreed on.

    The first sampled step checks the layout with :func:`layouts_agree`; later ones send one
    all-reduce of the agreed length plus a flag: a rank whose layout no longer matches sends
    zeros and a 1, so everyone learns of it from the same collective, nothing is judged for that
    step, and the next sampled step checks the layout again. Everything here is the same on
    every rank, so every rank runs the same collectives in the same order.
    """

    def __init__(self) -> None:
        self.agreed: tuple[str, int] | None = None  # (signature, payload length)

    def reduce(
        self, records: Sequence[LayerStats], grads: Sequence[tuple[str, torch.Tensor | None]]
    ) -> tuple[list[GlobalStats], dict[str, float]] | None:
        """The global statistics of one sampled step, or ``None`` when layouts differ.

        Args:
            records: this rank's records of the step (first calls of activation layers).
            grads: ``(layer name, weight gradient or None)`` for every weight layer, in the
                model's order (the same list on every rank).

        Returns:
            The records as :class:`GlobalStats`, in the same order, and each weight layer's
            global gradient norm (layers without a gradient on any rank left out).
        """
        payload, signature = _payload(records, grads)
        layout = (signature, payload.numel())
        if self.agreed is None:
            if not layouts_agree(*layout):
                return None
            self.agreed = layout
        mine = layout == self.agreed
        sent = payload if mine else torch.zeros(self.agreed[1], dtype=torch.float64)
        flag = torch.tensor([0.0 if mine else 1.0], dtype=torch.float64)
        total = distributed.all_reduce_sum(torch.cat([sent, flag])).tolist()
        if total.pop():  # some rank's layout changed: judge nothing, check again next time
            self.agreed = None
            return None
        grad_total = total[len(total) - 2 * len(grads) :]
        return _global_records(records, total), _global_grads(grads, grad_total)


def _payload(
    records: Sequence[LayerStats], grads: Sequence[tuple[str, torch.Tensor | None]]
) -> tuple[torch.Tensor, str]:
    """This rank's sums and counts in one float64 vector, and a signature of its layout."""
    parts: list[float] = []
    for r in records:
        n = r.n_values
        saturated = 0 if r.saturated_fraction is None else r.saturated_fraction
        over = r.n_saturation_values
        parts += [r.n_examples, n, n * r.mean, n * r.mean**2, r.std**2 * max(n - 1, 0)]
        parts += [round(saturated * over), over]
    alive: list[torch.Tensor] = []
    for r in records:
        if r.dead_units is not None:
            flags = torch.ones(r.n_units, dtype=torch.float64)
            if r.dead_units:
                flags[torch.tensor(r.dead_units, dtype=torch.long)] = 0.0
            alive.append(flags)
    with torch.no_grad():
        present = [g for _, g in grads if g is not None]
        squares = (
            torch.stack(torch._foreach_norm(present)).double().cpu().pow(2).tolist()
            if present
            else []
        )
    it = iter(squares)
    grad_part = []
    for _, g in grads:
        grad_part += [next(it), 1.0] if g is not None else [0.0, 0.0]
    f64 = torch.float64
    vectors = [torch.tensor(parts, dtype=f64), *alive, torch.tensor(grad_part, dtype=f64)]
    payload = torch.cat(vectors)
    signature = repr(
        [(r.name, r.kind, r.call, r.n_units, r.dead_units is None) for r in records]
        + [name for name, _ in grads]
    )
    return payload, signature


def _global_records(records: Sequence[LayerStats], total: list[float]) -> list[GlobalStats]:
    out = []
    offset = 7 * len(records)  # the alive flags follow the fixed part
    for i, r in enumerate(records):
        n_examples, n, total_x, n_mean2, m2, saturated, over = total[7 * i : 7 * i + 7]
        mean = total_x / n if n else math.nan
        m2 = m2 + n_mean2 - n * mean * mean if n else 0.0
        dead = None
        if r.dead_units is not None:
            flags = total[offset : offset + r.n_units]
            offset += r.n_units
            dead = [u for u, v in enumerate(flags) if v == 0]
        out.append(
            GlobalStats(
                name=r.name,
                kind=r.kind,
                call=r.call,
                n_examples=int(n_examples),
                n_units=r.n_units,
                mean=mean,
                std=math.sqrt(max(m2, 0.0) / max(n - 1, 1)),
                dead_units=dead,
                dead_fraction=None if dead is None else len(dead) / max(r.n_units, 1),
                saturated_fraction=(
                    None if r.saturated_fraction is None or not over else saturated / over
                ),
            )
        )
    return out


def _global_grads(
    grads: Sequence[tuple[str, torch.Tensor | None]], total: list[float]
) -> dict[str, float]:
    out = {}
    for i, (name, _) in enumerate(grads):
        square, ranks = total[2 * i], total[2 * i + 1]
        if ranks:
            out[name] = math.sqrt(square / ranks)
    return out
