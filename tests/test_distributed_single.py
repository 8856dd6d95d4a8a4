"""babysit.distributed without a process group: every collective is the identity."""

import torch

from babysit import distributed as bd


def test_single_process_is_identity(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not bd.is_distributed()
    assert bd.world_size() == 1 and bd.rank() == 0 and bd.is_main()
    t = torch.tensor([1.0, 2.0])
    assert torch.equal(bd.all_reduce_sum(t), t)
    assert torch.equal(bd.all_reduce_mean(t), t)
    assert bd.any_rank(True) is True and bd.any_rank(False) is False
    assert bd.broadcast_object({"a": 1}) == {"a": 1}
    assert bd.init_from_env("cpu") is False
    bd.barrier()


def test_backend_for_device():
    assert bd.backend_for("cpu") == "gloo"
    assert bd.backend_for("cuda") == "nccl"


def test_env_world_size(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert bd.env_world_size() == 3
    monkeypatch.setenv("WORLD_SIZE", "junk")
    assert bd.env_world_size() == 1
