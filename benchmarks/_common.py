"""Shared helpers of the benchmark scripts: data, a plain training loop, tables, and
:func:`write_docs`, which puts a script's current table into ``docs/benchmarks.md``.

The training loop is deliberately small: in-memory tensors indexed with a fresh shuffled
permutation per epoch (no DataLoader), cross-entropy, an optimizer by name. It records the
minibatch loss of every step and, every ``log_every`` steps (and at step 0), the loss and
accuracy on the *whole* training set in eval mode (batch norm on its running statistics), so
curves of different runs are comparable at the same step.

Seeding: ``train`` does not seed the model; callers call :func:`seed_all` before building the
model (babysit's builders initialize from torch's global generator), and the shuffling uses its
own ``torch.Generator`` seeded with ``seed``.
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

import babysit
from babysit.data import Standardize, load

ROOT = Path(__file__).resolve().parents[1]
IMG_DIR = ROOT / "docs" / "img"
BENCHMARKS_DOC = ROOT / "docs" / "benchmarks.md"
LOAD_AT_START = os.getloadavg()  # the scripts import this module first thing


# ------------------------------------------------------------------------------------ data


@dataclass
class Data:
    """Standardized tensors of one data set; ``note`` says how they were made."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    note: str


def load_data(
    name: str = "mnist1d", *, with_val: bool = True, standardize: bool = True, seed: int = 0
) -> Data:
    """``babysit.data.load(name)``; train (+ val when ``with_val``) for training, test for test.

    With ``with_val`` the validation split (20% carved from train) goes back into training, so
    MNIST-1D trains on its full 4000 examples as in Greydanus (2020). ``Standardize`` is fitted
    on the training tensors and applied to both.
    """
    splits = load(name, seed=seed)
    x, y = splits.train.tensors
    if with_val:
        xv, yv = splits.val.tensors
        x, y = torch.cat([x, xv]), torch.cat([y, yv])
    x_test, y_test = splits.test.tensors
    if standardize:
        scaler = Standardize().fit(x)
        x, x_test = scaler.transform(x), scaler.transform(x_test)
    parts = "train+val" if with_val else "train"
    note = f"{name}: {len(y)} training examples ({parts}), {len(y_test)} test examples" + (
        ", standardized per feature (fitted on training)" if standardize else ", raw scale"
    )
    return Data(x.contiguous(), y, x_test.contiguous(), y_test, note)


# ------------------------------------------------------------------------------------ training


def seed_all(seed: int) -> None:
    """Seed torch's global generator (model init, dropout)."""
    torch.manual_seed(seed)


def make_optimizer(
    name: str, params, lr: float, *, momentum: float = 0.9, weight_decay: float = 0.0
) -> torch.optim.Optimizer:
    """``"sgd"`` (with ``momentum``), ``"adam"`` or ``"rmsprop"``."""
    key = name.lower()
    if key == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if key == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if key == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}: sgd, adam or rmsprop")


@dataclass
class Result:
    """What one training run recorded."""

    step_losses: list[float]  # minibatch loss of every step (train mode)
    log_steps: list[int]  # steps at which the whole training set was evaluated
    log_train_loss: list[float]  # full training-set loss at those steps (eval mode)
    log_train_acc: list[float]
    train_acc: float  # at the end
    test_acc: float  # at the end
    seconds: float
    diverged: bool = False  # a non-finite loss stopped the run
    log_test_acc: list[float] = field(default_factory=list)

    def loss_at(self, step: int) -> float:
        """The full training-set loss logged at ``step`` (nan if the run stopped before it)."""
        try:
            return self.log_train_loss[self.log_steps.index(step)]
        except ValueError:
            return math.nan

    def first_step_below(self, threshold: float) -> int | None:
        """First logged step whose full training-set loss is <= ``threshold``."""
        for step, loss in zip(self.log_steps, self.log_train_loss, strict=True):
            if loss <= threshold:
                return step
        return None

    def first_step_acc_above(self, threshold: float) -> int | None:
        """First logged step whose training accuracy is >= ``threshold``."""
        for step, acc in zip(self.log_steps, self.log_train_acc, strict=True):
            if acc >= threshold:
                return step
        return None


@torch.no_grad()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 2000
) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` on ``(x, y)`` in eval mode."""
    was_training = model.training
    model.eval()
    total_loss, correct = 0.0, 0
    for i in range(0, len(y), batch):
        logits = model(x[i : i + batch])
        total_loss += nn.functional.cross_entropy(logits, y[i : i + batch], reduction="sum").item()
        correct += (logits.argmax(1) == y[i : i + batch]).sum().item()
    model.train(was_training)
    return total_loss / len(y), correct / len(y)


def train(
    model: nn.Module,
    data: Data,
    *,
    optimizer: str = "sgd",
    lr: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    batch_size: int = 100,
    steps: int,
    log_every: int = 40,
    seed: int = 0,
    reshape: Callable[[torch.Tensor], torch.Tensor] | None = None,
    log_test: bool = False,
    stop_when: Callable[[Result], bool] | None = None,
) -> Result:
    """Train ``model`` for ``steps`` minibatch steps of cross-entropy; see the module docstring.

    ``reshape`` maps a (B, D) batch to the model's input shape (e.g. (B, 1, 40) for a conv1d).
    A non-finite minibatch loss stops the run (``diverged=True``; later logs are absent).
    ``stop_when(result)`` is checked after every log; True ends the run early (the final
    accuracies are then those of that step).
    """
    prep = reshape or (lambda t: t)
    x, y = data.x_train, data.y_train
    x_eval, x_test = prep(x), prep(data.x_test)
    opt = make_optimizer(
        optimizer, model.parameters(), lr, momentum=momentum, weight_decay=weight_decay
    )
    gen = torch.Generator().manual_seed(seed)
    n = len(y)
    per_epoch = n // batch_size  # drop the last partial batch
    result = Result([], [], [], [], math.nan, math.nan, 0.0)

    def log(step: int) -> None:
        loss, acc = evaluate(model, x_eval, y)
        result.log_steps.append(step)
        result.log_train_loss.append(loss)
        result.log_train_acc.append(acc)
        if log_test:
            result.log_test_acc.append(evaluate(model, x_test, data.y_test)[1])

    start = time.perf_counter()
    model.train()
    log(0)
    order = torch.randperm(n, generator=gen)
    for step in range(1, steps + 1):
        k = (step - 1) % per_epoch
        if k == 0 and step > 1:
            order = torch.randperm(n, generator=gen)
        idx = order[k * batch_size : (k + 1) * batch_size]
        loss = nn.functional.cross_entropy(model(prep(x[idx])), y[idx])
        if not torch.isfinite(loss):
            result.diverged = True
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        result.step_losses.append(loss.item())
        if step % log_every == 0 or step == steps:
            log(step)
            if stop_when is not None and stop_when(result):
                break
    result.seconds = time.perf_counter() - start
    if not result.diverged:
        result.train_acc = result.log_train_acc[-1]
        result.test_acc = evaluate(model, x_test, data.y_test)[1]
    return result


# ------------------------------------------------------------------------------------ reporting


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` -> [0, 1, 2]; ``"3"`` -> [0, 1, 2] (a count)."""
    if "," in text:
        return [int(s) for s in text.split(",") if s.strip()]
    return list(range(int(text)))


def add_common_args(parser, *, seeds: str) -> None:
    """``--seeds``, ``--quick``, ``--threads``, ``--no-plot``."""
    parser.add_argument(
        "--seeds", default=seeds, help=f"a count or a comma list of seeds (default {seeds})"
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run (minutes → s)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--no-plot", action="store_true", help="do not write the figure")


def header(title: str) -> str:
    """The lines printed above every table: the command line, torch and the machine."""
    command = "python " + " ".join(shlex.quote(a) for a in [_rel(sys.argv[0]), *sys.argv[1:]])
    return (
        f"### {title}\n\n"
        f"`{command}`  \n"
        f"babysit {babysit.__version__}, torch {torch.__version__}, "
        f"torch.get_num_threads() = {torch.get_num_threads()}, Python {platform.python_version()}, "
        f"{platform.machine()} {platform.system()} ({_cpu_name()})\n"
    )


def _rel(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return path


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def md_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table; numbers should already be formatted as strings."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def mean_std(values: Sequence[float], digits: int = 1, scale: float = 1.0) -> str:
    """``"m ± s"`` (sample std) of the finite values; ``"—"`` if none."""
    finite = [v * scale for v in values if math.isfinite(v)]
    if not finite:
        return "—"
    if len(finite) == 1:
        return f"{finite[0]:.{digits}f}"
    return f"{statistics.mean(finite):.{digits}f} ± {statistics.stdev(finite):.{digits}f}"


def fmt_loss(value: float) -> str:
    return "nan" if not math.isfinite(value) else f"{value:.3f}"


def save_figure(fig, name: str) -> Path:
    """Save ``fig`` as ``docs/img/<name>`` and return the path."""
    IMG_DIR.mkdir(parents=True, exist_ok=True)
    path = IMG_DIR / name
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def pyplot():
    """matplotlib.pyplot on the Agg backend, imported lazily."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def smooth(values: Sequence[float], window: int) -> list[float]:
    """Trailing moving average (for plotting minibatch losses)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


# ------------------------------------------------------------------------------------ docs


def add_write_docs_arg(parser) -> None:
    """``--write-docs``: replace this script's section of ``docs/benchmarks.md``."""
    parser.add_argument(
        "--write-docs",
        action="store_true",
        help="also write the tables into docs/benchmarks.md between this script's markers",
    )


def markers(script: str) -> tuple[str, str]:
    """The two HTML comments that delimit ``benchmarks/<script>``'s generated text."""
    name = f"benchmarks/{Path(script).name}"
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def provenance(note: str = "") -> str:
    """One line: when, by which command, at which commit, on what machine, under what load.

    The load average (1, 5, 15 min) is taken when ``_common`` was imported and again now: on a
    shared machine timing ratios are only as good as the load that was on it.
    """
    command = "python " + " ".join(shlex.quote(a) for a in [_rel(sys.argv[0]), *sys.argv[1:]])
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    start, end = LOAD_AT_START, os.getloadavg()
    load = (
        "/".join(f"{v:.1f}" for v in start) + " at the start, " + "/".join(f"{v:.1f}" for v in end)
    )
    busy = max(start[0], end[0]) >= 1.0
    threads = torch.get_num_threads()
    return (
        f"*Generated {now} by `{command}` at commit {git_commit()}; {_cpu_name()}, "
        f"{os.cpu_count()} cores, torch {torch.__version__} "
        f"({threads} thread{'s' if threads != 1 else ''}), Python {platform.python_version()}; "
        f"load average (1/5/15 min) {load} at the end"
        + (
            ": other processes shared the machine, so timings and their ratios are noisy"
            if busy
            else ""
        )
        + f".{' ' + note if note else ''}*"
    )


STATUS = ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"]


def git_commit() -> str:
    """The checkout's short commit, ``+ uncommitted changes`` when tracked files other than the
    docs differ from it (the docs are what the benchmarks write, not what they measure)."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            [*STATUS, "--", ".", ":(exclude)docs"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{sha} + uncommitted changes" if dirty else sha


def replace_between_markers(text: str, script: str, body: str) -> str:
    """``text`` with what lies between ``script``'s markers replaced by ``body``.

    Raises ``ValueError`` (naming the markers to add) unless each marker occurs exactly once,
    begin before end: a section is never appended twice, nor written to the wrong place.
    """
    begin, end = markers(script)
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise ValueError(
            f"expected one {begin} followed by one {end} in the document: add them where "
            f"the section of {Path(script).name} belongs"
        )
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{body.strip()}\n{end}{tail}"


def write_docs(script: str, body: str, *, note: str = "", doc: Path = BENCHMARKS_DOC) -> Path:
    """Replace ``script``'s section of ``doc`` with a :func:`provenance` line and ``body``.

    The new file is written next to the old one and renamed over it (``os.replace`` is atomic):
    an interrupted run leaves the old document, never half of one.
    """
    text = doc.read_text(encoding="utf-8")
    new = replace_between_markers(text, script, f"{provenance(note)}\n\n{body.strip()}")
    fd, tmp = tempfile.mkstemp(dir=doc.parent, prefix=f".{doc.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(new)
        os.replace(tmp, doc)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    print(f"wrote the section of {Path(script).name} in {_rel(str(doc))}", file=sys.stderr)
    return doc


def emit(args, script: str, lines: list[str], *, note: str = "") -> None:
    """Print ``lines``; with ``--write-docs`` also write them into ``docs/benchmarks.md``."""
    text = "\n".join(lines)
    print(text)
    if getattr(args, "write_docs", False):
        write_docs(script, text, note=note)
