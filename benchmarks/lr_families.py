"""The families of ``benchmarks/lr_find.py`` that the range test's rule was NOT chosen on.

Ten tiny set-ups, each a model family, an optimizer and a batch size a practitioner would pick
(issue 17): convnets with and without normalization, recurrent and attention models, a
regression, plain SGD / Nesterov / SGD-momentum / Adam / AdamW, batches 16 to 256. Every model
is small enough that a whole quarter-decade grid trains on one CPU core in a few minutes.

Each family is trained by :func:`train` (a plain loop, a fixed number of steps at a constant
lr, seeded shuffling, no schedule) and scored on its validation split: accuracy in points for
classification, ``100 · R²`` clipped at 0 for the regression (a diverged or useless model scores
0, as a classifier at chance scores its chance accuracy). ``train`` also records the peak of
the update/weight ratio over the first 10 steps (the quantity of ``fit``'s ``UPDATE_RATIO_HIGH``
monitor: per step the median over weight tensors of ``‖ΔW‖ / ‖W‖``), for issue 12 item 8.

``TUNE`` are the families the verified suggestion was designed on; ``HELD_OUT`` were only
scored afterwards.
"""

from __future__ import annotations

import copy
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

import babysit
import babysit.divergence
from babysit.data import Standardize, load
from babysit.optim import make_optimizer
from babysit.train.loop import TRAIN_SAMPLE

EARLY_STEPS = 10  # as the UpdateRatio monitor


@dataclass
class Split:
    x: torch.Tensor
    y: torch.Tensor
    xv: torch.Tensor
    yv: torch.Tensor


_DATA: dict[str, Split] = {}


def data(name: str) -> Split:
    """``digits`` (1150 train / 288 val), ``mnist1d`` (3200 / 800) standardized on train, or
    ``friedman`` (a synthetic regression: 10 standard-normal features, 2000 / 500 examples,
    ``y = sin(π x0 x1) + 2 (x2 − ½)² + x3 − ½ x4 + noise 0.1``, standardized)."""
    if name not in _DATA:
        if name == "friedman":
            gen = torch.Generator().manual_seed(1234)
            x = torch.randn(2500, 10, generator=gen)
            y = (
                torch.sin(math.pi * x[:, 0] * x[:, 1])
                + 2 * (x[:, 2] - 0.5) ** 2
                + x[:, 3]
                - 0.5 * x[:, 4]
                + 0.1 * torch.randn(2500, generator=gen)
            )
            y = ((y - y[:2000].mean()) / y[:2000].std()).unsqueeze(1)
            _DATA[name] = Split(x[:2000], y[:2000], x[2000:], y[2000:])
        else:
            splits = load(name)
            x, y = splits.train.tensors
            xv, yv = splits.val.tensors
            scaler = Standardize().fit(x)
            _DATA[name] = Split(scaler.transform(x), y, scaler.transform(xv), yv)
    return _DATA[name]


class Image(nn.Module):
    """Reshapes flat features to ``shape`` (digits 64 → 1×8×8, MNIST-1D 40 → 1×40 or 20×2)."""

    def __init__(self, *shape: int) -> None:
        super().__init__()
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(len(x), *self.shape)


class Recurrent(nn.Module):
    """A GRU/LSTM over a sequence of ``steps`` × ``features``, its last hidden state → classes."""

    def __init__(self, kind: str, steps: int, features: int, hidden: int) -> None:
        super().__init__()
        self.steps, self.features = steps, features
        self.rnn = (nn.GRU if kind == "gru" else nn.LSTM)(features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x.reshape(len(x), self.steps, self.features))
        return self.head(out[:, -1])


class Transformer(nn.Module):
    """Digits' 8 rows as 8 tokens: linear embedding + learned positions, 2 post-norm encoder
    layers (d=32, 4 heads, feed-forward 64, no dropout), mean pooling, linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(8, 32)
        self.pos = nn.Parameter(torch.randn(1, 8, 32) * 0.02)
        layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(self.embed(x.reshape(len(x), 8, 8)) + self.pos)
        return self.head(h.mean(1))


class Residual(nn.Module):
    """Pre-norm residual MLP: ``h + W2 GELU(W1 LN(h))``, three blocks of width 64."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(40, 64)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(64), nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 64))
            for _ in range(3)
        )
        self.out = nn.Sequential(nn.LayerNorm(64), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for block in self.blocks:
            h = h + block(h)
        return self.out(h)


def _conv2d(norm: bool) -> nn.Module:
    def bn(c: int) -> list[nn.Module]:
        return [nn.BatchNorm2d(c)] if norm else []

    return nn.Sequential(
        Image(1, 8, 8),
        nn.Conv2d(1, 16, 3, padding=1),
        *bn(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        *bn(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 16, 10),
    )


def _conv1d() -> nn.Module:
    return nn.Sequential(
        Image(1, 40),
        nn.Conv1d(1, 16, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool1d(2),
        nn.Conv1d(16, 32, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool1d(2),
        nn.Flatten(),
        nn.Linear(32 * 10, 10),
    )


@dataclass
class Family:
    name: str
    dataset: str
    build: Callable[[], nn.Module]
    optimizer: str
    batch: int
    steps: int  # the training budget, in optimizer steps
    k: tuple[int, int]  # the grid: lr = 10 ** (k / 4) for k in [k0, k1]
    regression: bool = False

    def model(self, seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return self.build()

    def loss_fn(self) -> nn.Module:
        return nn.MSELoss() if self.regression else nn.CrossEntropyLoss()


FAMILIES = {
    f.name: f
    for f in [
        Family("conv2d nesterov b16", "digits", lambda: _conv2d(False), "nesterov", 16, 360,
               (-14, 0)),
        Family("conv2d-bn momentum b32", "digits", lambda: _conv2d(True), "momentum", 32, 360,
               (-12, 2)),
        Family("conv1d adamw b128", "mnist1d", _conv1d, "adamw", 128, 400, (-16, 0)),
        Family("gru adam b64", "mnist1d", lambda: Recurrent("gru", 20, 2, 32), "adam", 64, 400,
               (-16, 0)),
        Family("lstm adam b32", "digits", lambda: Recurrent("lstm", 8, 8, 48), "adam", 32, 360,
               (-16, 0)),
        Family("transformer adamw b64", "digits", Transformer, "adamw", 64, 360, (-18, -2)),
        Family("regression mlp sgd b32", "friedman",
               lambda: babysit.nn.mlp(10, [64, 64], 1), "sgd", 32, 400, (-12, 2), True),
        Family("tanh mlp sgd b256", "mnist1d",
               lambda: babysit.nn.mlp(40, [100, 100], 10, activation="tanh", init="xavier"),
               "sgd", 256, 400, (-8, 6)),
        Family("bn-dropout mlp adam b16", "digits",
               lambda: babysit.nn.mlp(64, [128] * 4, 10, batchnorm=True, dropout=0.3), "adam",
               16, 360, (-16, 0)),
        Family("residual-ln mlp adamw b256", "mnist1d", Residual, "adamw", 256, 400, (-16, 0)),
    ]
}  # fmt: skip
TUNE = (
    "conv2d nesterov b16",
    "gru adam b64",
    "transformer adamw b64",
    "regression mlp sgd b32",
    "bn-dropout mlp adam b16",
)
HELD_OUT = tuple(name for name in FAMILIES if name not in TUNE)


@torch.no_grad()
def score(fam: Family, model: nn.Module, split: Split) -> float:
    """Validation accuracy in points, or ``100 · R²`` clipped to [0, 100] for the regression."""
    model.eval()
    out = model(split.xv)
    if not torch.isfinite(out).all():
        return 0.0 if fam.regression else 100.0 * float((split.yv == 0).float().mean())
    if fam.regression:
        r2 = 1 - float(((out - split.yv) ** 2).mean() / split.yv.var())
        return 100.0 * min(max(r2, 0.0), 1.0)
    return 100.0 * float((out.argmax(1) == split.yv).float().mean())


def start_loss(fam: Family, model: nn.Module, split: Split, seed: int) -> tuple[float, float]:
    """``fit``'s LossGuard start and spread (docs/architecture.md, "The divergence rule"),
    measured as ``fit`` measures them: the mean training-mode loss of the initial weights over
    the first ``START_BATCHES`` batches of ``fit``'s fixed training sample (every k-th example,
    ``TRAIN_SAMPLE`` of them, in order) and the standard deviation of those losses; on a copy,
    with torch's RNG put back, so the training is unchanged. ``seed`` is not used: the sample
    is the data's, as in ``fit``. (Until session 10 the first batches of the loop's own order:
    another sample of the same distribution, whose spread could differ from fit's enough to
    flip a flag on the noisy regression.)"""
    del seed
    initial = copy.deepcopy(model)
    initial.train()
    stride = max(len(split.x) // TRAIN_SAMPLE, 1)
    x, y = split.x[::stride][:TRAIN_SAMPLE], split.y[::stride][:TRAIN_SAMPLE]
    loss_fn, b = fam.loss_fn(), fam.batch
    starts = range(0, len(x), b)[: babysit.divergence.START_BATCHES]
    with torch.random.fork_rng(), torch.no_grad():
        losses = [float(loss_fn(initial(x[i : i + b]), y[i : i + b])) for i in starts]
    sizes = [len(x[i : i + b]) for i in starts]
    return statistics.fmean(losses), babysit.divergence.spread(losses, sizes)


def train(fam: Family, lr: float, seed: int, shuffle: int | None = None) -> dict:
    """``fam.steps`` optimizer steps at constant ``lr``; ``{lr, val, ratio, diverged,
    breaks_out}`` (``breaks_out``: some mini-batch loss rose above 3x the start, the mean loss
    of the initial weights over the first batches, where ``fit``'s LossGuard rolls back and
    divides the lr by 10; this plain loop goes on).

    ``seed`` draws the initial weights and, unless ``shuffle`` is given, the order of the
    examples (and dropout's masks). ``shuffle``: another order and other masks from the same
    initial weights (a repeat of the training, to measure its noise)."""
    split = data(fam.dataset)
    model = fam.model(seed)
    if shuffle is not None:
        torch.manual_seed(shuffle)  # dropout's masks
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(fam.optimizer, params, lr)
    weights = [p for p in params if p.dim() >= 2]
    loss_fn = fam.loss_fn()
    first, spread = start_loss(fam, model, split, seed if shuffle is None else shuffle)
    gen = torch.Generator().manual_seed(seed if shuffle is None else shuffle)
    n, step, peak, diverged = len(split.x), 0, 0.0, False
    breaks_out = False
    while step < fam.steps and not diverged:
        order = torch.randperm(n, generator=gen)
        for start in range(0, n - fam.batch + 1, fam.batch):
            index = order[start : start + fam.batch]
            loss = loss_fn(model(split.x[index]), split.y[index])
            if not torch.isfinite(loss):
                diverged = breaks_out = True
                break
            value = float(loss.detach())
            breaks_out = breaks_out or babysit.divergence.diverged(value, first, spread=spread)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            before = [w.detach().clone() for w in weights] if step < EARLY_STEPS else None
            opt.step()
            if before is not None:
                ratios = [
                    float((w.detach() - b).norm() / b.norm().clamp_min(1e-12))
                    for w, b in zip(weights, before, strict=True)
                ]
                peak = max(peak, statistics.median(ratios))
            step += 1
            if step >= fam.steps:
                break
    return {
        "lr": lr,
        "val": 0.0 if diverged and fam.regression else score(fam, model, split),
        "ratio": peak,
        "diverged": diverged,
        # a mini-batch loss above 3x the first: fit's LossGuard would have rolled back here
        "breaks_out": breaks_out,
    }


def early_peak(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    optimizer: str,
    lr: float,
    batch: int,
    seed: int,
    loss_fn: nn.Module,
) -> float:
    """The peak over the first ``EARLY_STEPS`` steps of the per-step median (over weight
    tensors) of ``‖ΔW‖ / ‖W‖``: what ``fit``'s UpdateRatio monitor judges, on a fresh model."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(optimizer, params, lr)
    weights = [p for p in params if p.dim() >= 2]
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    peak = 0.0
    for step in range(EARLY_STEPS):
        index = order[step * batch : (step + 1) * batch]
        loss = loss_fn(model(x[index]), y[index])
        if not torch.isfinite(loss):
            return math.inf
        opt.zero_grad(set_to_none=True)
        loss.backward()
        before = [w.detach().clone() for w in weights]
        opt.step()
        ratios = [
            float((w.detach() - b).norm() / b.norm().clamp_min(1e-12))
            for w, b in zip(weights, before, strict=True)
        ]
        peak = max(peak, statistics.median(ratios))
    return peak
