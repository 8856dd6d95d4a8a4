"""The launcher harness itself: two gloo ranks agree through babysit.distributed."""

import textwrap

from .harness import torchrun


def test_two_ranks_reduce_and_agree(tmp_path):
    script = tmp_path / "agree.py"
    script.write_text(
        textwrap.dedent(
            """
            import json, os, sys
            import torch
            from babysit import distributed as bd

            assert bd.init_from_env("cpu")
            r = bd.rank()
            total = bd.all_reduce_sum(torch.tensor([float(r + 1)])).item()
            flag = bd.any_rank(r == 1)
            obj = bd.broadcast_object({"from": r})
            out = {"rank": r, "world": bd.world_size(), "sum": total, "any": flag, "obj": obj}
            with open(os.path.join(sys.argv[1], f"rank{r}.json"), "w") as f:
                json.dump(out, f)
            bd.barrier()
            torch.distributed.destroy_process_group()
            """
        )
    )
    torchrun(script, str(tmp_path))
    import json

    got = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for r, g in enumerate(got):
        assert g == {"rank": r, "world": 2, "sum": 3.0, "any": True, "obj": {"from": 0}}
