"""A model zoo: the set-ups practitioners bring, which babysit's thresholds were *not* chosen on.

The catalogue (:mod:`babysit.checks.catalogue`) holds the lecture's own set-ups (MLPs and
convnets on MNIST-1D and digits, classification, ``(x, y)`` batches), on which the thresholds
were tuned. The zoo is the held-out evaluation (issue 12): ResNets with batch norm, Transformer
encoders, LSTM/GRU sequence models with embeddings, a token tagger with ``ignore_index``,
regression, multilabel, an autoencoder, losses that go below zero, soft targets, frozen
backbones and adapters, models that return dicts or tuples, dict batches read by ``forward=``
— each healthy, and broken the way users report it.

Every entry builds afresh (seeded) a :class:`Setup`: the model, the data (small, synthetic or
bundled; nothing is downloaded), the loss, ``forward`` when the batch is not ``(x, y)``, the
optimizer and learning rate. Healthy entries must get no warning and no error from
``diagnose``; broken ones list the codes that must be found (each item a set: any of its codes,
at warning or error severity, will do). ``tests/checks/test_zoo.py`` asserts it and
``benchmarks/diagnose.py`` prints the confusion table, per-model times and, for healthy
entries, whether ``fit``/``watch`` stay silent, ``lr_find`` suggests and the report renders
(``docs/architecture.md``, "Healthy means silent").

Everything here is built lazily: importing this module builds no model and loads no data.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["FAMILIES", "ZOO", "Entry", "Setup"]

FAMILIES = (
    "cnn",
    "transformer",
    "rnn",
    "tagger",
    "regression",
    "multilabel",
    "autoencoder",
    "custom_loss",
    "transfer",
    "mlp",
    "outputs",
)


@dataclass
class Setup:
    """What a user would pass: ``diagnose(model, data, **setup.kwargs())``.

    ``forward`` and ``task`` are passed only when set, so a set-up that needs neither runs on
    an API that has neither; ``task=None`` means the default (``"auto"``).
    """

    model: nn.Module
    data: Any
    loss_fn: Callable[[Any, Any], torch.Tensor] | None = None
    forward: Callable[[nn.Module, Any], tuple[Any, Any]] | None = None
    optimizer: str = "adam"
    lr: float | None = 1e-3
    weight_decay: float = 0.0
    task: Any = None

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``diagnose`` (and, less ``lr=None``, ``fit``)."""
        out: dict[str, Any] = {
            "loss_fn": self.loss_fn,
            "optimizer": self.optimizer,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
        }
        if self.forward is not None:
            out["forward"] = self.forward
        if self.task is not None:
            out["task"] = self.task
        return out

    def compute(self, model: nn.Module, batch: Any) -> tuple[Any, Any]:
        """``(output, target)`` of one batch, read by ``forward`` (default: ``(x, y)``)."""
        if self.forward is not None:
            return self.forward(model, batch)
        x, y = batch
        return model(x), y

    def loss(self, output: Any, target: Any) -> torch.Tensor:
        """The loss a plain training loop would use (cross-entropy when ``loss_fn`` is None)."""
        return (self.loss_fn or F.cross_entropy)(output, target)


@dataclass(frozen=True)
class Entry:
    name: str
    family: str
    description: str
    make: Callable[[], Setup]
    expect: tuple[frozenset[str], ...] = ()  # empty: healthy
    slow: bool = False  # more than a few seconds to diagnose on one core

    @property
    def healthy(self) -> bool:
        return not self.expect

    def wrong(self, findings: Any) -> str | None:
        """Why ``diagnose``'s findings on this entry are wrong, or None when they are right.

        Healthy: no warning or error; an entry of the ``outputs`` family (a classifier on float
        features, where every default check applies) must also skip no check that reads the
        output, since a skipped check there means the output was not read (under ``forward=``
        the checks that need the input tensor itself, ``INPUT_CHECKS``, are skipped as info).
        Broken: each item of ``expect`` has a code
        found at warning or error severity.
        """
        loud = {f.code for f in findings if f.severity != "info"}
        if self.healthy:
            if loud:
                return f"false alarm: {sorted(loud)}"
            if self.family == "outputs" and any(_output_unread(f) for f in findings):
                return "silent only because checks were skipped (CHECKS_SKIPPED)"
            return None
        missed = [sorted(alt) for alt in self.expect if not alt & loud]
        return f"not found: {missed} (loud: {sorted(loud)})" if missed else None

    def build(self) -> Setup:
        """A fresh, seeded :class:`Setup`."""
        torch.manual_seed(0)
        return self.make()


# the checks that read the model's input tensor (or the loader's labels), which forward= hides
INPUT_CHECKS = frozenset(
    {"batch_order", "data_finite", "data_scale", "gradient_check", "batch_independence"}
)


def _output_unread(f: Any) -> bool:
    """A ``CHECKS_SKIPPED`` finding that skipped more than the input checks, or could not
    read something (evidence ``unreadable``); a stand-in without evidence counts as unread."""
    if f.code != "CHECKS_SKIPPED":
        return False
    skipped = f.evidence.get("skipped")
    return not skipped or bool(f.evidence.get("unreadable")) or bool(set(skipped) - INPUT_CHECKS)


# ------------------------------------------------------------------------------------ data

N = 256  # examples per synthetic set: >= 256, so that dead-unit verdicts are allowed


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@cache
def images(n: int = 256, size: int = 32, classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic 3×size×size images: a smooth template per class plus unit noise."""
    g = _gen(1)
    coarse = torch.randn(classes, 3, 4, 4, generator=g)
    templates = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    y = torch.randint(0, classes, (n,), generator=g)
    x = templates[y] + torch.randn(n, 3, size, size, generator=g)
    return (x - x.mean()) / x.std(), y


DIGITS = 384  # of the 1149 training digits: enough for dead-unit verdicts, quick to diagnose


@cache
def digit_images() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled digits as standardized 1×8×8 images."""
    from ..data import load

    x, y = load("digits").train.tensors
    x, y = x[:DIGITS], y[:DIGITS]
    x = (x - x.mean()) / x.std()
    return x.reshape(-1, 1, 8, 8).contiguous(), y


VOCAB, SEQ_LEN, SEQ_CLASSES = 50, 16, 4


@cache
def token_sequences() -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (N, T) in [1, VOCAB); the label is which of 4 marker tokens occurs most."""
    g = _gen(2)
    x = torch.randint(1, VOCAB, (N, SEQ_LEN), generator=g)
    y = torch.randint(0, SEQ_CLASSES, (N,), generator=g)
    pos = torch.randint(0, SEQ_LEN, (N, 3), generator=g)
    x.scatter_(1, pos, (y + 1)[:, None].expand(-1, 3))
    return x, y


TAGS = 5


@cache
def tagged_tokens(pad_label: int = -100) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (N, T) right-padded with id 0, one tag per token (id mod 5); pads get
    ``pad_label`` (-100 is what ``CrossEntropyLoss`` ignores by default)."""
    g = _gen(3)
    x = torch.randint(1, VOCAB, (N, SEQ_LEN), generator=g)
    lengths = torch.randint(SEQ_LEN // 2, SEQ_LEN + 1, (N,), generator=g)
    pad = torch.arange(SEQ_LEN)[None, :] >= lengths[:, None]
    x[pad] = 0
    y = x % TAGS
    y[pad] = pad_label
    return x, y


@cache
def tabular(n: int = N, d: int = 8, seed: int = 4) -> torch.Tensor:
    return torch.randn(n, d, generator=_gen(seed))


@cache
def regression(d: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardized features and a standardized, mildly nonlinear target of shape (N, 1)."""
    x = tabular(d=d)
    g = _gen(5)
    w = torch.randn(d, 1, generator=g)
    y = x @ w + 0.5 * torch.sin(2 * x[:, :1]) + 0.1 * torch.randn(N, 1, generator=g)
    return x, (y - y.mean()) / y.std()


@cache
def heteroscedastic() -> tuple[torch.Tensor, torch.Tensor]:
    """A target whose noise grows with the first feature (for a Gaussian NLL head)."""
    x = tabular(d=8)
    g = _gen(6)
    noise = (0.2 + x[:, :1].abs()) * torch.randn(N, 1, generator=g)
    y = x[:, 1:2] - 0.5 * x[:, 2:3] + noise
    return x, (y - y.mean()) / y.std()


@cache
def multilabel(d: int = 20, labels: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    x = tabular(d=d, seed=7)
    w = torch.randn(d, labels, generator=_gen(8))
    return x, (x @ w / math.sqrt(d) > 0.3).float()


@cache
def time_series(raw: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy sine windows (N, T, 1); the target is the next value (N, 1). ``raw``: the values
    on a sensor's scale (around 1000), as they came."""
    g = _gen(9)
    phase = torch.rand(N, 1, generator=g) * 2 * math.pi
    freq = 0.2 + 0.3 * torch.rand(N, 1, generator=g)
    t = torch.arange(SEQ_LEN + 1, dtype=torch.float32)[None, :]
    s = torch.sin(freq * t + phase) + 0.05 * torch.randn(N, SEQ_LEN + 1, generator=g)
    if raw:
        s = 1000 + 200 * s
    return s[:, :SEQ_LEN, None].contiguous(), s[:, SEQ_LEN:].contiguous()


@cache
def mnist1d() -> tuple[torch.Tensor, torch.Tensor]:
    from .catalogue import mnist1d_standardized

    return mnist1d_standardized()


@cache
def teacher_logits() -> torch.Tensor:
    """A fixed random 'teacher' on MNIST-1D: logits of a linear map, temperature 2."""
    x, _ = mnist1d()
    w = torch.randn(40, 10, generator=_gen(10)) / math.sqrt(40)
    return x @ w * 3


# ------------------------------------------------------------------------------------ models


class BasicBlock(nn.Module):
    """He et al. (2016)'s basic block: conv-BN-ReLU-conv-BN, plus the (projected) input."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """A CIFAR-style ResNet (He et al. 2016, section 4.2): 3 stages of ``blocks`` basic blocks,
    widths w, 2w, 4w. ``blocks=3, width=16`` is ResNet-20 (0.27M parameters).
    ``zero_init_residual``: each block's last BN scale starts at 0 (Goyal et al. 2017), so every
    block starts as the identity."""

    def __init__(
        self, blocks: int = 3, width: int = 16, classes: int = 10, zero_init_residual: bool = False
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        layers, cin = [], width
        for stage, w in enumerate((width, 2 * width, 4 * width)):
            for b in range(blocks):
                layers.append(BasicBlock(cin, w, 2 if stage > 0 and b == 0 else 1))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.layers(self.stem(x))).flatten(1))


class DigitsCNN(nn.Module):
    def __init__(self, bias: float | None = None) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU()
        )
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.head = nn.Linear(32 * 4, 10)
        if bias is not None:
            for m in self.features:
                if isinstance(m, nn.Conv2d):
                    nn.init.constant_(m.bias, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)).flatten(1))


class TransformerClassifier(nn.Module):
    """Embedding + learned positions + a 2-layer Transformer encoder, mean-pooled, linear head.

    ``mistake``: ``"batch_first"`` builds the encoder with ``batch_first=False`` but feeds it
    (N, T, E) (attention then runs across the batch); ``"view"`` builds it sequence-first and
    converts with ``view(T, N, E)`` instead of ``transpose(0, 1)`` (examples are interleaved).
    """

    def __init__(self, d: int = 32, mistake: str | None = None) -> None:
        super().__init__()
        self.mistake = mistake
        self.embed = nn.Embedding(VOCAB, d)
        self.pos = nn.Parameter(0.02 * torch.randn(1, SEQ_LEN, d))
        layer = nn.TransformerEncoderLayer(
            d, 4, dim_feedforward=64, dropout=0.1, batch_first=mistake is None
        )
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(d, SEQ_CLASSES)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens) + self.pos
        if self.mistake == "view":
            n, t, d = h.shape
            h = self.encoder(h.view(t, n, d)).view(n, t, d)
        else:
            h = self.encoder(h)
        return self.head(h.mean(1))


class RecurrentClassifier(nn.Module):
    """Embedding + LSTM/GRU; the last time step (or the mean of a bidirectional GRU) -> head.
    ``batch_first=False`` with (N, T) tokens is the classic confusion: the recurrence then runs
    over the examples of the batch."""

    def __init__(self, cell: str = "lstm", batch_first: bool = True, hidden: int = 32) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 16)
        bidirectional = cell == "gru"
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn(16, hidden, batch_first=batch_first, bidirectional=bidirectional)
        self.head = nn.Linear(hidden * (2 if bidirectional else 1), SEQ_CLASSES)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.embed(tokens))
        features = out.mean(1) if self.rnn.bidirectional else out[:, -1]
        return self.head(features)


class Tagger(nn.Module):
    """Embedding + bidirectional LSTM + per-token head; returns (N, C, T) as cross-entropy takes
    it (``permute=False``: (N, T, C), the forgotten permute)."""

    def __init__(self, permute: bool = True) -> None:
        super().__init__()
        self.permute = permute
        self.embed = nn.Embedding(VOCAB, 16, padding_idx=0)
        self.rnn = nn.LSTM(16, 24, batch_first=True, bidirectional=True)
        self.head = nn.Linear(48, TAGS)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out = self.head(self.rnn(self.embed(tokens))[0])
        return out.permute(0, 2, 1) if self.permute else out


class Forecaster(nn.Module):
    """GRU over (N, T, 1) windows; the last hidden state -> the next value."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(1, 32, batch_first=True)
        self.head = nn.Linear(32, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x)[0][:, -1])


def mlp(d_in: int, hidden: list[int], d_out: int, *, out: nn.Module | None = None) -> nn.Module:
    """Linear-ReLU stack with PyTorch's default init, optionally ending in ``out``."""
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(d_in, h), nn.ReLU()]
        d_in = h
    layers.append(nn.Linear(d_in, d_out))
    if out is not None:
        layers.append(out)
    return nn.Sequential(*layers)


class HeadInside(nn.Module):
    """A custom module (not a Sequential) whose forward ends in ``self.final`` — a Sigmoid or a
    Softmax module, which the structure is meant to see through the call order."""

    def __init__(self, final: nn.Module) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(40, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU())
        self.classifier = nn.Linear(100, 10)
        self.final = final

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.final(self.classifier(self.body(x)))


class ListLayers(nn.Module):
    """Hidden layers kept in a Python list: ``parameters()`` does not see them."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = [nn.Linear(40, 100), nn.Linear(100, 100)]
        self.act = nn.ReLU()
        self.head = nn.Linear(100, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.hidden:
            x = self.act(layer(x))
        return self.head(x)


class FoldsBatch(nn.Module):
    """``x.view(-1, 20)`` on (N, 40): twice as many rows come out as went in."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.view(-1, 20))


class _BadSwish(torch.autograd.Function):
    """x·σ(x) whose hand-written backward forgets the product rule's second term."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * torch.sigmoid(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * torch.sigmoid(x)


class BadSwish(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _BadSwish.apply(x)


class LayerNormMLP(nn.Module):
    """Pre-activation blocks Linear -> LayerNorm -> GELU (the Transformer MLP's habits)."""

    def __init__(self, act: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.blocks = nn.Sequential(
            nn.Linear(40, 128), nn.LayerNorm(128), act(), nn.Linear(128, 128), nn.LayerNorm(128),
            act(),
        )  # fmt: skip
        self.head = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(x))


class ConvAutoencoder(nn.Module):
    def __init__(self, final: nn.Module | None = None) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 8, 3, stride=2, padding=1),
            nn.ReLU(),
        )  # fmt: skip
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(8, 16, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 1, 3, padding=1),
        )  # fmt: skip
        self.final = final if final is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.final(self.decoder(self.encoder(x)))


class GaussianHead(nn.Module):
    """Predicts a mean and a variance; the variance goes through softplus (``positive=False``:
    the raw linear output, which can be negative)."""

    def __init__(self, positive: bool = True) -> None:
        super().__init__()
        self.positive = positive
        self.body = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        var = F.softplus(out[:, 1:]) + 1e-3 if self.positive else out[:, 1:]
        return torch.cat([out[:, :1], var], 1)


def gaussian_nll(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.gaussian_nll_loss(output[:, :1], target, output[:, 1:])


def negative_cosine(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """−cos(output, target): in [−1, 1], so it starts near 0 and goes below it."""
    return -F.cosine_similarity(output, target, dim=1).mean()


class LoRALinear(nn.Module):
    """A frozen 'pretrained' Linear plus a trainable low-rank update B·A (Hu et al. 2021):
    B starts at zero, so the model starts as the pretrained one (``zero_a``: A too — then
    neither gets a gradient, ever)."""

    def __init__(self, d_in: int, d_out: int, rank: int = 4, zero_a: bool = False) -> None:
        super().__init__()
        self.base = nn.Linear(d_in, d_out).requires_grad_(False)
        self.a = nn.Parameter(torch.zeros(rank, d_in) if zero_a else torch.randn(rank, d_in) / 8)
        self.b = nn.Parameter(torch.zeros(d_out, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + x @ self.a.T @ self.b.T


class AdapterNet(nn.Module):
    def __init__(self, zero_a: bool = False) -> None:
        super().__init__()
        self.l1 = LoRALinear(40, 100, zero_a=zero_a)
        self.act = nn.ReLU()
        self.l2 = LoRALinear(100, 10, zero_a=zero_a)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l2(self.act(self.l1(x)))


class DictOutput(nn.Module):
    """Returns ``{"logits", "features"}`` (Hugging Face style); ``softmax``: the logits pass
    through a Softmax module first."""

    def __init__(self, softmax: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(40, 100), nn.ReLU())
        self.classifier = nn.Linear(100, 10)
        self.softmax = nn.Softmax(dim=1) if softmax else nn.Identity()

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.body(x)
        return {"logits": self.softmax(self.classifier(features)), "features": features}


class TupleOutput(nn.Module):
    """Returns ``(logits, features)``."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(40, 100), nn.ReLU())
        self.classifier = nn.Linear(100, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(x)
        return self.classifier(features), features


class TwoInputs(nn.Module):
    """Numeric features and a categorical id: ``model(num, cat)``."""

    def __init__(self) -> None:
        super().__init__()
        self.cat = nn.Embedding(12, 8)
        self.net = nn.Sequential(nn.Linear(8 + 8, 64), nn.ReLU(), nn.Linear(64, 3))

    def forward(self, num: torch.Tensor, cat: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([num, self.cat(cat)], 1))


class DictDataset(torch.utils.data.Dataset):
    """Examples as dicts ``{"num", "cat", "label"}``; a DataLoader collates them to dict batches."""

    def __init__(self) -> None:
        g = _gen(11)
        self.num = tabular(d=8, seed=12)
        self.cat = torch.randint(0, 12, (N,), generator=g)
        self.label = ((self.num[:, 0] > 0).long() + (self.cat % 2)).clamp(max=2)

    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"num": self.num[i], "cat": self.cat[i], "label": self.label[i]}


def dict_forward(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[Any, Any]:
    return model(batch["num"], batch["cat"]), batch["label"]


def dict_batches() -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        DictDataset(), batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0)
    )


def frozen_backbone(freeze_head: bool = False) -> nn.Module:
    """A 'pretrained' MLP body, frozen, with a new head (transfer learning)."""
    backbone = nn.Sequential(nn.Linear(40, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU())
    backbone.requires_grad_(False)
    model = nn.Sequential(backbone, nn.Linear(100, 10))
    if freeze_head:  # the mistake: freezing after the head was added
        model.requires_grad_(False)
    return model


def frozen_bn_finetune() -> nn.Module:
    """A conv backbone whose BatchNorm layers are frozen on purpose (eval mode, no grad)."""
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(128, 10),
    )  # fmt: skip
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval().requires_grad_(False)
    return model


# ------------------------------------------------------------------------------------ entries


def _f(*codes: str) -> frozenset[str]:
    return frozenset(codes)


def _digits_mlp() -> Setup:
    from ..data import Standardize, load

    x, y = load("digits").train.tensors
    x = Standardize().fit(x).transform(x)
    return Setup(nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10)), (x, y))


def _distillation(soft: bool = True) -> Setup:
    x, _ = mnist1d()
    logits = teacher_logits()
    target = F.softmax(logits / 2, dim=1) if soft else logits
    return Setup(mlp(40, [100, 100], 10), (x, target))


def _everything_frozen() -> Setup:
    return Setup(frozen_backbone(freeze_head=True), mnist1d())


_HEALTHY = [
    Entry("resnet20_bn", "cnn", "ResNet-20 with batch norm (0.27M) on 3×32×32, Adam 1e-3",
          lambda: Setup(ResNet(), images()), slow=True),
    Entry("resnet_zero_init_residual", "cnn",
          "small ResNet (1 block per stage, 8×8 images), zero-init residual BN scales, "
          "SGD-momentum 0.05",
          lambda: Setup(ResNet(blocks=1, width=8, zero_init_residual=True), images(128, 8),
                        optimizer="momentum", lr=0.05)),
    Entry("digits_cnn", "cnn", "2-conv net on 1×8×8 digits, Adam 1e-3",
          lambda: Setup(DigitsCNN(), digit_images())),
    Entry("transformer_classifier", "transformer",
          "Embedding + 2-layer TransformerEncoder (batch_first=True), mean pool, Adam 1e-3",
          lambda: Setup(TransformerClassifier(), token_sequences())),
    Entry("lstm_classifier", "rnn", "Embedding + LSTM (batch_first), last step, Adam 1e-3",
          lambda: Setup(RecurrentClassifier("lstm"), token_sequences())),
    Entry("gru_bidirectional", "rnn", "Embedding + bidirectional GRU, mean pool, Adam 1e-3",
          lambda: Setup(RecurrentClassifier("gru"), token_sequences())),
    Entry("gru_forecaster", "rnn", "GRU on standardized sine windows, next value, MSE",
          lambda: Setup(Forecaster(), time_series(), loss_fn=nn.MSELoss())),
    Entry("token_tagger", "tagger",
          "BiLSTM tagger, (N, C, T) output, pads labelled -100 (CrossEntropyLoss ignores them)",
          lambda: Setup(Tagger(), tagged_tokens(), loss_fn=nn.CrossEntropyLoss())),
    Entry("mse_regression", "regression", "MLP, standardized (N, 1) targets, MSELoss",
          lambda: Setup(mlp(8, [64, 64], 1), regression(), loss_fn=nn.MSELoss())),
    Entry("huber_regression", "regression", "MLP, standardized targets, SmoothL1Loss",
          lambda: Setup(mlp(8, [64], 1), regression(), loss_fn=nn.SmoothL1Loss())),
    Entry("gaussian_nll", "regression",
          "mean and softplus variance, GaussianNLL (a loss that goes below 0)",
          lambda: Setup(GaussianHead(), heteroscedastic(), loss_fn=gaussian_nll,
                        task="regression")),
    Entry("multilabel_bce", "multilabel", "MLP, 5 multi-hot labels, BCEWithLogitsLoss",
          lambda: Setup(mlp(20, [64], 5), multilabel(), loss_fn=nn.BCEWithLogitsLoss())),
    Entry("binary_bce", "multilabel", "one output, (N, 1) 0/1 targets, BCEWithLogitsLoss",
          lambda: Setup(mlp(20, [32], 1), (multilabel()[0], multilabel()[1][:, :1]),
                        loss_fn=nn.BCEWithLogitsLoss())),
    Entry("conv_autoencoder", "autoencoder", "conv encoder/decoder on digits, MSE to the input",
          lambda: Setup(ConvAutoencoder(), (digit_images()[0], digit_images()[0]),
                        loss_fn=nn.MSELoss())),
    Entry("negative_cosine", "custom_loss",
          "embedding regressor, loss −cos(output, target): starts near 0 and goes below it",
          lambda: Setup(mlp(8, [64], 8), (tabular(), F.normalize(tabular() @ torch.randn(8, 8))),
                        loss_fn=negative_cosine, task="custom")),
    Entry("label_smoothing", "custom_loss", "MNIST-1D MLP, CrossEntropyLoss(label_smoothing=0.1)",
          lambda: Setup(mlp(40, [100, 100], 10), mnist1d(),
                        loss_fn=nn.CrossEntropyLoss(label_smoothing=0.1))),
    Entry("distillation_soft_targets", "transfer",
          "student MLP, cross-entropy on a teacher's probabilities (temperature 2)",
          _distillation),
    Entry("frozen_backbone_new_head", "transfer",
          "pretrained-style body frozen (requires_grad=False), a new trainable head",
          lambda: Setup(frozen_backbone(), mnist1d())),
    Entry("frozen_batchnorm_finetune", "transfer",
          "conv net on digits whose BatchNorm layers are frozen on purpose (eval, no grad)",
          lambda: Setup(frozen_bn_finetune(), digit_images())),
    Entry("lora_adapter", "transfer",
          "frozen Linear layers + LoRA updates B·A with B initialised to zero",
          lambda: Setup(AdapterNet(), mnist1d())),
    Entry("layernorm_gelu_mlp", "mlp", "Linear -> LayerNorm -> GELU blocks, Adam 1e-3",
          lambda: Setup(LayerNormMLP(), mnist1d())),
    Entry("adamw_default_decay", "mlp", "MNIST-1D MLP, AdamW 1e-3 with PyTorch's decay 0.01",
          lambda: Setup(mlp(40, [100, 100], 10), mnist1d(), optimizer="adamw",
                        weight_decay=0.01)),
    Entry("digits_mlp_adam", "mlp", "standardized digits, 64-128-10, Adam 1e-3",
          _digits_mlp),
    Entry("dict_output", "outputs", "model returns {'logits', 'features'}",
          lambda: Setup(DictOutput(), mnist1d())),
    Entry("tuple_output", "outputs", "model returns (logits, features)",
          lambda: Setup(TupleOutput(), mnist1d())),
    Entry("two_inputs_dict_batches", "outputs",
          "model(num, cat) on dict batches from a DataLoader, read by forward=",
          lambda: Setup(TwoInputs(), dict_batches(), forward=dict_forward)),
]  # fmt: skip

_BROKEN = [
    Entry("transformer_batch_first_confusion", "transformer",
          "encoder built with batch_first=False, fed (N, T, E): attention across the batch",
          lambda: Setup(TransformerClassifier(mistake="batch_first"),
                        tuple(t[:96] for t in token_sequences())),
          (_f("BATCH_DEPENDENCE"),)),
    Entry("transformer_view_not_transpose", "transformer",
          "(N, T, E) -> (T, N, E) by view instead of transpose: examples interleaved",
          lambda: Setup(TransformerClassifier(mistake="view"), token_sequences()),
          (_f("BATCH_DEPENDENCE"),)),
    Entry("lstm_batch_first_confusion", "rnn",
          "LSTM with batch_first=False fed (N, T, E): the recurrence runs over the examples",
          lambda: Setup(RecurrentClassifier("lstm", batch_first=False), token_sequences()),
          (_f("BATCH_DEPENDENCE"),)),
    Entry("gru_raw_scale_inputs", "rnn", "GRU forecaster on raw sensor values (~1000)",
          lambda: Setup(Forecaster(), time_series(raw=True), loss_fn=nn.MSELoss()),
          (_f("DATA_SCALE", "DATA_NOT_CENTERED", "SATURATED_ACTIVATIONS", "TARGET_SCALE"),)),
    Entry("tagger_pad_label_minus_one", "tagger",
          "pads labelled -1 while CrossEntropyLoss ignores -100",
          lambda: Setup(Tagger(), tagged_tokens(pad_label=-1), loss_fn=nn.CrossEntropyLoss()),
          (_f("LABELS_OUT_OF_RANGE"),)),
    Entry("tagger_forgot_permute", "tagger",
          "per-token logits left as (N, T, C): cross-entropy wants (N, C, T)",
          lambda: Setup(Tagger(permute=False), tagged_tokens(), loss_fn=nn.CrossEntropyLoss()),
          (_f("LOSS_FAILED", "FORWARD_FAILED"),)),
    Entry("sigmoid_head_in_custom_module", "mlp",
          "custom module ending in a Sigmoid module, trained with cross-entropy",
          lambda: Setup(HeadInside(nn.Sigmoid()), mnist1d()), (_f("ACTIVATION_ON_OUTPUT"),)),
    Entry("softmax_in_custom_module", "mlp",
          "custom module ending in a Softmax module, trained with cross-entropy",
          lambda: Setup(HeadInside(nn.Softmax(dim=1)), mnist1d()), (_f("DOUBLE_SOFTMAX"),)),
    Entry("layers_in_python_list", "mlp",
          "hidden Linear layers kept in a Python list: no optimizer sees them",
          lambda: Setup(ListLayers(), mnist1d()), (_f("UNREGISTERED_PARAMS"),)),
    Entry("output_batch_size_differs", "mlp", "x.view(-1, 20) on (N, 40): 2N rows of logits",
          lambda: Setup(FoldsBatch(), mnist1d()), (_f("LOSS_FAILED"),)),
    Entry("wrong_custom_backward", "mlp",
          "a hand-written Swish whose backward drops a term (default checks)",
          lambda: Setup(LayerNormMLP(act=BadSwish), mnist1d()), (_f("GRADIENT_CHECK_FAILED"),)),
    Entry("adamw_huge_decay", "mlp", "AdamW 1e-3 with weight decay 100 (10% shrink per step)",
          lambda: Setup(mlp(40, [100, 100], 10), mnist1d(), optimizer="adamw",
                        weight_decay=100.0),
          (_f("REG_TOO_STRONG"),)),
    Entry("cnn_dead_relu_init", "cnn", "digits CNN whose conv biases start at -5",
          lambda: Setup(DigitsCNN(bias=-5.0), digit_images()), (_f("DEAD_RELU"),)),
    Entry("resnet_raw_pixels", "cnn", "small ResNet on 0..255 pixel values",
          lambda: Setup(ResNet(blocks=1, width=8),
                        (images(128, 8)[0] * 60 + 128, images(128, 8)[1])),
          (_f("DATA_SCALE", "DATA_NOT_CENTERED"),)),
    Entry("resnet_zero_conv_init", "cnn", "small ResNet with every conv weight set to 0",
          lambda: Setup(_zero_convs(ResNet(blocks=1, width=8)), images(128, 8)),
          (_f("SYMMETRIC_INIT"),)),
    Entry("regression_unscaled_targets", "regression",
          "house-price-like targets (mean 2e5, std 5e4) with MSELoss",
          lambda: Setup(mlp(8, [64, 64], 1), (regression()[0], regression()[1] * 5e4 + 2e5),
                        loss_fn=nn.MSELoss()),
          (_f("TARGET_SCALE"),)),
    Entry("regression_relu_output", "regression",
          "a ReLU on the regression output, targets standardized (half negative)",
          lambda: Setup(mlp(8, [64, 64], 1, out=nn.ReLU()), regression(), loss_fn=nn.MSELoss()),
          (_f("ACTIVATION_ON_OUTPUT"),)),
    Entry("regression_target_broadcast", "regression",
          "output (N, 1) against targets (N,): MSELoss broadcasts to (N, N)",
          lambda: Setup(mlp(8, [64], 1), (regression()[0], regression()[1][:, 0]),
                        loss_fn=nn.MSELoss()),
          (_f("LOSS_FAILED"),)),
    Entry("default_loss_float_column", "regression",
          "(N, 1) float targets with the default (classification) loss: loss exactly 0",
          lambda: Setup(mlp(8, [64], 1), regression()),
          (_f("LABELS_NOT_INTEGER", "LOSS_FAILED"),)),
    Entry("gaussian_nll_negative_variance", "regression",
          "the variance head without softplus: GaussianNLL gets negative variances",
          lambda: Setup(GaussianHead(positive=False), heteroscedastic(), loss_fn=gaussian_nll,
                        task="regression"),
          (_f("LOSS_FAILED"),)),
    Entry("multilabel_sigmoid_before_bce_logits", "multilabel",
          "a Sigmoid module before BCEWithLogitsLoss (sigmoid applied twice)",
          lambda: Setup(mlp(20, [64], 5, out=nn.Sigmoid()), multilabel(),
                        loss_fn=nn.BCEWithLogitsLoss()),
          (_f("ACTIVATION_ON_OUTPUT", "DOUBLE_SOFTMAX"),)),
    Entry("multilabel_index_targets", "multilabel",
          "class indices (N,) given to BCEWithLogitsLoss with a (N, 5) output",
          lambda: Setup(mlp(20, [64], 5), (multilabel()[0], multilabel()[1].argmax(1)),
                        loss_fn=nn.BCEWithLogitsLoss()),
          (_f("LOSS_FAILED"),)),
    Entry("autoencoder_sigmoid_on_standardized", "autoencoder",
          "a Sigmoid output reconstructing standardized (negative) pixels",
          lambda: Setup(ConvAutoencoder(final=nn.Sigmoid()),
                        (digit_images()[0], digit_images()[0]), loss_fn=nn.MSELoss()),
          (_f("ACTIVATION_ON_OUTPUT"),)),
    Entry("distillation_logits_as_targets", "transfer",
          "the teacher's raw logits (not probabilities) as soft targets",
          lambda: _distillation(soft=False), (_f("LABELS_NOT_INTEGER", "LABELS_OUT_OF_RANGE"),)),
    Entry("everything_frozen", "transfer",
          "requires_grad_(False) called after the new head was added: nothing trains",
          _everything_frozen,
          (_f("PARAMS_WITHOUT_GRAD", "FROZEN_PARAMS", "CANNOT_OVERFIT", "LR_TOO_LOW"),)),
    Entry("lora_both_zero", "transfer", "LoRA with A and B both zero: neither ever gets a gradient",
          lambda: Setup(AdapterNet(zero_a=True), mnist1d()),
          (_f("SYMMETRIC_INIT", "PARAMS_WITHOUT_GRAD"),)),
    Entry("dict_output_softmax", "outputs",
          "model returns {'logits': softmax(...)} trained with cross-entropy",
          lambda: Setup(DictOutput(softmax=True), mnist1d()), (_f("DOUBLE_SOFTMAX"),)),
]  # fmt: skip


def _zero_convs(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.zeros_(m.weight)
    return model


ZOO: dict[str, Entry] = {entry.name: entry for entry in [*_HEALTHY, *_BROKEN]}
