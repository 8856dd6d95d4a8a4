"""What babysit's framework callbacks cost: ``Trainer.fit`` / ``Trainer.train`` with ÷ without.

Two set-ups, each trained with and without ``BabysitCallback()`` (default monitors, the default
run directory in a temporary folder, on_error="stop"), on CPU:

    Lightning      ``lightning.pytorch.Trainer.fit`` of a LightningModule MLP 40-100-100-10 on
                   MNIST-1D (3200 examples, batch 100, Adam 1e-3): 32 steps an epoch; no logger,
                   checkpointing, progress bar or model summary.
    Hugging Face   ``transformers.Trainer.train`` of a 2-layer BERT (hidden 32, vocabulary 64,
                   built from a config) on synthetic 16-token sequences (batch 32, AdamW 1e-3,
                   ``report_to=[]``, ``use_cpu=True``, no saving, no evaluation).

A run is timed from the Trainer's construction to the end of training (so the callback's
start and its run-directory writes count). The machine may be shared, so the two variants are
interleaved: after one untimed warm-up of each, every repeat runs both, in an order that
alternates from repeat to repeat. Columns: seconds per run (median, min-max); ÷ without: the
with-callback time over the without time *of the same repeat*, then the median (min-max) over
repeats — the target (≤ 1.05, the same monitor budget as ``fit``) is judged on this median; in
CPU time: the same paired ratio on the process's CPU time, which a busy machine disturbs less.

Run: ``python benchmarks/integrations.py [--repeats 7] [--threads 1] [--write-docs]``.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import LOAD_AT_START, add_write_docs_arg, emit, header, load_data, md_table

TARGET = 1.05


def quiet() -> None:
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.simplefilter("ignore")


def lightning_classifier() -> type:
    """The LightningModule MLP 40-100-100-10 (Adam 1e-3) both Lightning benchmarks train."""
    import lightning.pytorch as L

    class Classifier(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.net = nn.Sequential(
                nn.Linear(40, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 10)
            )

        def forward(self, inputs):
            return self.net(inputs)

        def training_step(self, batch, batch_idx):
            inputs, labels = batch
            return nn.functional.cross_entropy(self(inputs), labels)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    return Classifier


def lightning_fit(epochs: int, root: Path, callbacks: list) -> int:
    """One ``Trainer.fit`` of :func:`lightning_classifier` on MNIST-1D (batch 100, 32 steps an
    epoch; no logger, checkpointing, progress bar or summary); returns the steps taken."""
    import lightning.pytorch as L
    from torch.utils.data import DataLoader, TensorDataset

    data = _MNIST1D.get("data") or _MNIST1D.setdefault("data", load_data("mnist1d", with_val=False))
    loader = DataLoader(
        TensorDataset(data.x_train, data.y_train),
        batch_size=100,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(root),
        callbacks=callbacks,
    )
    trainer.fit(lightning_classifier()(), loader)
    return trainer.global_step


_MNIST1D: dict = {}  # the data, loaded once per process


def lightning_runner(epochs: int) -> Callable[[bool, Path], int]:
    from babysit.integrations.lightning import BabysitCallback

    def run(with_callback: bool, root: Path) -> int:
        return lightning_fit(epochs, root, [BabysitCallback()] if with_callback else [])

    return run


def transformers_runner(epochs: int, examples: int) -> Callable[[bool, Path], int]:
    import transformers as T

    from babysit.integrations.transformers import BabysitCallback

    T.logging.set_verbosity_error()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 64, (examples, 16), generator=g)
    labels = (ids == 7).any(1).long()

    class Tokens(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return examples

        def __getitem__(self, i):
            return {"input_ids": ids[i], "labels": labels[i]}

    config = T.BertConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
        num_labels=2,
    )

    def run(with_callback: bool, root: Path) -> int:
        torch.manual_seed(0)
        model = T.BertForSequenceClassification(config)
        args = T.TrainingArguments(
            output_dir=str(root),
            per_device_train_batch_size=32,
            num_train_epochs=epochs,
            learning_rate=1e-3,
            report_to=[],
            use_cpu=True,
            save_strategy="no",
            eval_strategy="no",
            logging_strategy="no",
            disable_tqdm=True,
            seed=0,
        )
        trainer = T.Trainer(
            model=model,
            args=args,
            train_dataset=Tokens(),
            callbacks=[BabysitCallback()] if with_callback else [],
        )
        trainer.remove_callback(T.trainer_callback.PrinterCallback)  # no log lines printed
        trainer.train()
        return trainer.state.global_step

    return run


def measure(run: Callable[[bool, Path], int], repeats: int) -> dict[str, list[float]]:
    """Interleaved timed runs; returns wall and CPU seconds of each variant, per repeat."""
    out: dict[str, list[float]] = {"without": [], "with": [], "cpu_without": [], "cpu_with": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        steps = {flag: run(flag, root / f"warm-{flag}") for flag in (False, True)}
        if steps[False] != steps[True]:
            raise RuntimeError(f"the variants ran different step counts: {steps}")
        for r in range(repeats):
            order = (False, True) if r % 2 == 0 else (True, False)
            for flag in order:
                wall, cpu = time.perf_counter(), time.process_time()
                run(flag, root / f"{r}-{flag}")
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                key = "with" if flag else "without"
                out[key].append(wall)
                out[f"cpu_{key}"].append(cpu)
    out["steps"] = [float(steps[True])]
    return out


def spread(values: list[float], digits: int = 3) -> str:
    return (
        f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}–"
        f"{max(values):.{digits}f})"
    )


def row(name: str, times: dict[str, list[float]]) -> list[str]:
    ratios = [w / o for w, o in zip(times["with"], times["without"], strict=True)]
    cpu = [w / o for w, o in zip(times["cpu_with"], times["cpu_without"], strict=True)]
    median = statistics.median(ratios)
    return [
        name,
        str(int(times["steps"][0])),
        spread(times["without"], 2),
        spread(times["with"], 2),
        f"**{median:.3f}** ({min(ratios):.3f}–{max(ratios):.3f})",
        spread(cpu),
        f"≤ {TARGET}: {'met' if median <= TARGET else 'NOT met'}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed pairs of each set-up")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--lightning-epochs", type=int, default=50, help="x32 steps")
    parser.add_argument("--hf-epochs", type=int, default=3)
    parser.add_argument("--hf-examples", type=int, default=1024, help="/32 = steps an epoch")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 repeats, short")
    parser.add_argument("--only", choices=("lightning", "hf"), help="one set-up only")
    add_write_docs_arg(parser)
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.lightning_epochs, args.hf_epochs, args.hf_examples = 2, 2, 1, 256
    torch.set_num_threads(args.threads)
    runners = []
    if args.only in (None, "lightning"):
        runners.append(
            ("Lightning Trainer.fit, MNIST-1D MLP", lightning_runner(args.lightning_epochs))
        )
    if args.only in (None, "hf"):
        runners.append(
            (
                "HF Trainer.train, 2-layer BERT",
                transformers_runner(args.hf_epochs, args.hf_examples),
            )
        )
    quiet()  # after the imports, which set the frameworks' own log levels
    rows = [row(name, measure(run, args.repeats)) for name, run in runners]
    import os

    load = f"{LOAD_AT_START[0]:.1f} at start, {os.getloadavg()[0]:.1f} at the end"
    lines = [
        header("Integrations: the callbacks' cost"),
        f"{args.repeats} interleaved pairs after a warm-up of each; load average {load}.\n",
        md_table(
            [
                "set-up",
                "steps",
                "s without",
                "s with BabysitCallback",
                "÷ without (paired)",
                "in CPU time",
                "target",
            ],
            rows,
        ),
    ]
    emit(args, __file__, lines)


if __name__ == "__main__":
    main()
