"""BabysitCallback under Lightning's DDP strategy: 2 gloo ranks launched by torchrun."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("lightning")

from ..distributed.harness import torchrun

SCRIPT = Path(__file__).with_name("ddp_lightning_script.py")


def results(out: Path) -> list[dict]:
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


@pytest.mark.slow  # two processes start Lightning and a gloo group: ~10-20 s on 2 cores
def test_one_rank_blows_up_both_stop_together_and_rank_0_writes_once(tmp_path):
    run, out = tmp_path / "work" / "run", tmp_path / "out"
    out.mkdir()
    torchrun(SCRIPT, str(run), "poison", str(out), timeout=240)
    ranks = results(out)
    assert [r["rank"] for r in ranks] == [0, 1]
    first, second = ranks
    assert first["codes"] == second["codes"] and first["codes"], ranks  # one decision
    assert {code for code, _ in first["codes"]} & {"LR_TOO_HIGH", "NAN_LOSS"}
    assert first["codes"][0][1] == 5  # the step it happened, seen by both ranks
    assert first["global_step"] == second["global_step"] == 6  # stopped together
    assert first["finite"] and second["finite"]
    assert first["weights"] == pytest.approx(second["weights"])  # still in sync
    # written once, by rank 0: one run directory, nothing renamed by a second writer
    assert sorted(p.name for p in run.parent.iterdir()) == ["run"]
    saved = json.loads((run / "findings.json").read_text())["findings"]
    assert [f["code"] for f in saved] == [code for code, _ in first["codes"]]
