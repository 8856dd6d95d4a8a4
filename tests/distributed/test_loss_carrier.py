"""The loss carried in DDP's gradient all-reduce (babysit.train.loss_carrier), in one process.

A one-process gloo group is enough to check the hook's arithmetic and its refusals; the
two-rank behaviour (a NaN on rank 1 seen by both in its step) is tests/distributed/
test_fit_ddp.py's NaN test with fit's own wrapper.
"""

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from babysit.train.loss_carrier import LossCarrier
from babysit.train.session import loss_slots


def _group(tmp_path):
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)


def test_gradients_are_ddps_and_the_slots_come_back(tmp_path):
    _group(tmp_path)
    try:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
        plain = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
        plain.load_state_dict(model.state_dict())
        ddp = DistributedDataParallel(model)
        carrier = LossCarrier.attach(ddp, 1)
        assert carrier is not None
        x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
        loss = nn.functional.cross_entropy(ddp(x), y)
        carrier.load(loss_slots(float("nan")))  # a NaN is carried as it is
        loss.backward()
        summed = carrier.take()
        assert summed.dtype == torch.float64 and summed.shape == (1,) and summed.isnan().all()
        nn.functional.cross_entropy(plain(x), y).backward()
        for a, b in zip(model.parameters(), plain.parameters(), strict=True):
            torch.testing.assert_close(a.grad, b.grad)
        # without slots loaded the hook is DDP's default, and take() says nothing was carried
        ddp.zero_grad()
        nn.functional.cross_entropy(ddp(x), y).backward()
        try:
            carrier.take()
        except RuntimeError as err:
            assert "not shared" in str(err)
        else:
            raise AssertionError("take() without a carried loss must raise")
        # a second hook is refused by DDP: attach says it cannot
        assert LossCarrier.attach(ddp, 1) is None
        # float16 parameters would round the loss: not carried
        half = DistributedDataParallel(nn.Linear(3, 2).half())
        assert LossCarrier.attach(half, 1) is None
    finally:
        dist.destroy_process_group()


def test_missing_count_tells_a_backward_without_a_loss_and_refusals_name_why(tmp_path):
    """The count ``watch(carry_loss=True)`` relies on: a backward with no loss loaded carries
    "missing" (so every rank falls back alike); a refused registration leaves DDP as it was."""
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    _group(tmp_path)
    try:
        torch.manual_seed(0)
        ddp = DistributedDataParallel(nn.Linear(5, 3))
        carrier = LossCarrier.register(ddp, 1)
        assert LossCarrier.of(ddp) is carrier and carrier.idle()
        x = torch.randn(4, 5)
        ddp(x).sum().backward()  # nothing loaded: the bucket carries the missing count
        assert not carrier.idle() and carrier.poll() is None and carrier.idle()
        carrier.load(loss_slots(2.5))
        assert carrier.idle()  # loaded, not reduced yet
        ddp(x).sum().backward()
        assert carrier.poll().tolist() == [2.5] and carrier.idle()
        carrier.load(loss_slots(1.0))
        carrier.reset()  # unloaded: the next backward carries nothing of it
        ddp(x).sum().backward()
        assert carrier.poll() is None
        # a second hook: refused, and DDP's list of hooks is left as it was
        kept = list(ddp._comm_hooks)
        try:
            LossCarrier.register(ddp, 1)
        except RuntimeError:
            pass
        else:
            raise AssertionError("a second hook must be refused")
        assert ddp._comm_hooks == kept
        mine = DistributedDataParallel(nn.Linear(5, 3))
        mine.register_comm_hook(None, allreduce_hook)
        assert LossCarrier.attach(mine, 1) is None and len(mine._comm_hooks) == 1
        # why not: named
        assert "not a DistributedDataParallel" in LossCarrier.refusal(nn.Linear(2, 2))
        half = DistributedDataParallel(nn.Linear(3, 2).half())
        assert "float16" in LossCarrier.refusal(half)
        mixed = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2).double())
        assert "mix dtypes" in LossCarrier.refusal(DistributedDataParallel(mixed))
        assert LossCarrier.refusal(ddp) is None
    finally:
        dist.destroy_process_group()
