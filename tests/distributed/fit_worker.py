"""One ``bs.fit`` of the MNIST-1D MLP, in one process or under torchrun (tests/distributed).

``python fit_worker.py CONFIG_JSON``: CONFIG_JSON names ``out`` (results: ``rank<r>.pt`` with
the final weights, the history and the rollbacks) and optionally ``run_dir``, ``resume``,
``batch_size``, ``epochs``, ``every_steps`` (mid-epoch checkpoints), ``kill_at_step`` (every
rank SIGKILLs itself when that step starts: the whole job dies mid-epoch), ``nan_at_step``
(rank 1 alone gets a NaN loss at that step), ``hang_at_step`` with ``timeout_s`` (rank 1
stops answering; the group is created here with that collective timeout), ``n_train``,
``monitors`` (``"default"`` or ``null``), ``dropout`` and ``wrap`` (the script creates the
group and wraps the model in DDP itself).
"""

from __future__ import annotations

import datetime
import json
import math
import os
import signal
import sys
import time

import torch
import torch.nn.functional as F

import babysit as bs
from babysit import distributed as bd
from babysit.data import Standardize, load
from babysit.nn import mlp
from babysit.train import Callback, Checkpoint


def main() -> None:
    cfg = json.loads(sys.argv[1])
    os.makedirs(cfg["out"], exist_ok=True)
    if cfg.get("timeout_s"):
        torch.distributed.init_process_group(
            "gloo", timeout=datetime.timedelta(seconds=cfg["timeout_s"])
        )
    splits = load("mnist1d", seed=0)
    (x, y), (xv, yv) = splits.train.tensors, splits.val.tensors
    scaler = Standardize().fit(x)
    x, xv = scaler.transform(x), scaler.transform(xv)
    n = cfg.get("n_train")
    if n is not None:
        x, y = x[:n], y[:n]
    torch.manual_seed(0)
    model = mlp(x.shape[1], [64, 64], 10, dropout=cfg.get("dropout", 0.0))
    step = [0]
    rank = int(os.environ.get("RANK", "0"))

    class Spy(Callback):
        def on_train_batch_start(self, trainer, batch_index):
            step[0] = trainer.step
            if cfg.get("kill_at_step") == trainer.step:
                os.kill(os.getpid(), signal.SIGKILL)
            if cfg.get("hang_at_step") == trainer.step and rank == 1:
                time.sleep(cfg.get("hang_s", 30))
                os._exit(3)

    injected = [False]

    def loss_fn(output, target):
        loss = F.cross_entropy(output, target)
        at = cfg.get("nan_at_step")
        if torch.is_grad_enabled() and rank == 1 and step[0] == at and not injected[0]:
            injected[0] = True
            return loss * math.nan
        return loss

    callbacks = [Spy()]
    if cfg.get("every_steps"):
        callbacks.append(Checkpoint(every_steps=cfg["every_steps"]))
    net = model
    if cfg.get("wrap"):  # the user's own group and DDP wrapper
        bd.init_from_env("cpu")
        net = torch.nn.parallel.DistributedDataParallel(model)
    device = "cpu"
    if cfg.get("device") == "cuda":  # nccl: one GPU per process
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    history = bs.fit(
        net,
        (x, y),
        val=(xv, yv),
        optimizer="adam",
        lr=cfg.get("lr", 1e-3),
        epochs=cfg.get("epochs", 2),
        batch_size=cfg.get("batch_size", 32),
        loss_fn=loss_fn,
        callbacks=callbacks,
        monitors=cfg.get("monitors", "default"),
        run_dir=cfg.get("run_dir"),
        resume=cfg.get("resume", False),
        progress=False,
        seed=0,
        task="classification",
        device=device,
    )
    rows = [{k: v for k, v in h.items() if k != "seconds"} for h in history.epochs]
    torch.save(
        {
            "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            "history": rows,
            "rollbacks": history.rollbacks,
            "codes": [f.code for f in history.findings],
            "group_left": bd.is_distributed(),
        },
        os.path.join(cfg["out"], f"rank{rank}.pt"),
    )


if __name__ == "__main__":
    main()
