"""Run by test_ddp.py under torchrun: Lightning DDP (gloo, CPU) with BabysitCallback.

Each rank trains on its own shard (Lightning adds a DistributedSampler); rank 1's shard is
poisoned with huge inputs when asked, so only rank 1's own loss blows up: the callback must
still take one decision on both ranks. Writes OUT/rank<r>.json per rank.
"""

from __future__ import annotations

import gc
import json
import logging
import sys
import warnings
from pathlib import Path

import lightning.pytorch as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from babysit.integrations.lightning import BabysitCallback

warnings.simplefilter("ignore")
for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
    logging.getLogger(name).setLevel(logging.ERROR)


class Classifier(L.LightningModule):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 2))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.poison and self.global_rank == 1 and self.global_step == 5:
            x = x * 1e6  # this rank's loss explodes at step 5
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def main() -> None:
    run_dir, poison, out = sys.argv[1], sys.argv[2] == "poison", Path(sys.argv[3])
    torch.manual_seed(0)
    x = torch.randn(640, 20)
    y = (x[:, 0] > 0).long()
    module = Classifier()
    module.poison = poison
    cb = BabysitCallback(run_dir=run_dir)
    trainer = L.Trainer(
        accelerator="cpu",
        strategy="ddp",
        devices=2,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[cb],
    )
    trainer.fit(module, DataLoader(TensorDataset(x, y), batch_size=32))
    finite = all(bool(torch.isfinite(p).all()) for p in module.parameters())
    report = {
        "rank": trainer.global_rank,
        "codes": [(f.code, f.step) for f in cb.findings],
        "global_step": trainer.global_step,
        "finite": finite,
        "weights": float(sum(p.sum() for p in module.parameters())),
    }
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(report))
    # DDP's reducer goes before the process group, which Lightning leaves up: torch aborts at
    # exit now and then otherwise ("terminate called without an active exception", rank exit
    # -6; seen once in a clean-clone CI run, 2026-12-07), as the other torchrun scripts do
    del trainer, module
    gc.collect()
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
