"""Each rank's share of the data (babysit.train.sharding), checked in one process: the ranks'
batches i together are one process's batch i with the global batch size."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from babysit.batches import TensorBatches, UserLoader
from babysit.train.sharding import ShardedLoader, shard_eval, shard_training


def _ranks(batches, world: int, epoch: int):
    return [list(shard_training(batches, r, world, 0, "data").epoch(epoch)) for r in range(world)]


@pytest.mark.parametrize("world", [2, 4])
def test_the_ranks_batches_together_are_one_process_global_batches(world):
    n, per = 1024, 8
    x = torch.arange(n, dtype=torch.float32)[:, None]
    y = torch.arange(n)
    local = TensorBatches((x, y), per, shuffle=True, seed=3)
    one = TensorBatches((x, y), per * world, shuffle=True, seed=3)
    for epoch in (0, 1):
        shards = _ranks(local, world, epoch)
        single = list(one.epoch(epoch))
        assert all(len(s) == len(single) for s in shards)
        for i, (_, (_, ys)) in enumerate(single):
            together = torch.cat([shards[r][i][1][1] for r in range(world)])
            assert sorted(together.tolist()) == sorted(ys.tolist())
    first = [_ranks(local, world, e)[0][0][1][1].tolist() for e in (0, 1)]
    assert first[0] != first[1]  # set_epoch: each epoch its own order


def test_uneven_data_gives_every_rank_the_same_number_of_steps():
    x, y = torch.randn(1030, 3), torch.arange(1030)
    shards = _ranks(TensorBatches((x, y), 64, shuffle=True, seed=0), 4, 0)
    assert len({len(s) for s in shards}) == 1
    assert {len(b[1][1]) for s in shards for b in s[-1:]} == {len(shards[0][-1][1][1])}


def test_resume_position_skips_to_the_same_batches():
    batches = TensorBatches((torch.randn(100, 2), torch.arange(100)), 10, shuffle=True, seed=1)
    shard = shard_training(batches, 1, 2, 1, "data")
    full = list(shard.epoch(2))
    assert [i for i, _ in shard.epoch(2, 3)] == [3, 4]
    assert torch.equal(next(iter(shard.epoch(2, 3)))[1][1], full[3][1][1])


def test_evaluation_shards_count_every_example_once():
    x, y = torch.randn(11, 2), torch.arange(11)
    batches = TensorBatches((x, y), 4, shuffle=False, seed=0)
    seen = [
        int(v)
        for r in range(3)
        for _, (_, ys) in shard_eval(batches, r, 3, "val").epoch(0)
        for v in ys
    ]
    assert sorted(seen) == list(range(11))


def test_a_users_loader_gets_a_distributed_sampler_and_keeps_its_batching():
    data = TensorDataset(torch.randn(40, 2), torch.arange(40))
    loader = DataLoader(data, batch_size=5, shuffle=True)
    shards = [shard_training(UserLoader(loader), r, 2, 7, "data") for r in range(2)]
    assert all(isinstance(s, ShardedLoader) for s in shards)
    assert isinstance(shards[0].loader.sampler, DistributedSampler)
    epoch0 = [torch.cat([b[1] for _, b in s.epoch(0)]) for s in shards]
    assert sorted(torch.cat(epoch0).tolist()) == list(range(40))
    assert all(len(b[1]) == 5 for _, b in shards[0].epoch(0))
    epoch1 = torch.cat([b[1] for _, b in shards[0].epoch(1)])
    assert not torch.equal(epoch0[0], epoch1)  # set_epoch: another order each epoch


def test_an_iterable_of_batches_is_refused_with_what_to_pass():
    class Batches:
        def __iter__(self):
            yield torch.randn(2, 2), torch.tensor([0, 1])

    with pytest.raises(ValueError, match="DistributedSampler"):
        shard_training(UserLoader(Batches()), 0, 2, 0, "data")
