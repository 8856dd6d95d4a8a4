"""The part both callbacks share, driven by a plain torch loop standing in for a framework."""

from __future__ import annotations

import importlib
import math
import sys

import pytest
import torch

from babysit.integrations import _bridge
from babysit.integrations._bridge import (
    Bridge,
    Steps,
    UnsupportedVersion,
    check_options,
    check_version,
    prepare_run_dir,
)

from .conftest import finite, mlp


def _options(**kw):
    base = dict(monitors="default", run_dir=None, on_error="stop", thresholds=None, ignore=())
    return check_options(**{**base, **kw})


@pytest.mark.parametrize("bad", ["stp", "Stop", "rollbak", None, 3])
def test_on_error_misspelt_lists_the_choices(bad):
    with pytest.raises(ValueError, match="on_error must be one of 'stop', 'rollback', 'warn'"):
        _options(on_error=bad)


def test_on_error_suggests_the_closest_choice():
    with pytest.raises(ValueError, match="did you mean 'rollback'"):
        _options(on_error="rolback")


def test_unknown_threshold_code_and_monitors_refused_at_construction():
    with pytest.raises(ValueError, match="unknown threshold 'loss_explode'"):
        _options(thresholds={"loss_explode": 2.0})
    with pytest.raises(ValueError, match="DEAD_RELU"):
        _options(ignore=["DEAD_RELUS"])
    with pytest.raises(ValueError, match="monitors must be"):
        _options(monitors="some")
    with pytest.raises(TypeError, match="run_dir must be a path"):
        _options(run_dir=3)


@pytest.mark.parametrize("version", ["1.9.5", "3.0.0", "garbage"])
def test_version_outside_the_range_names_it(version):
    with pytest.raises(UnsupportedVersion, match=r"lightning>=2\.0,<3\.0.*" + version):
        check_version("lightning", version)


def test_versions_inside_the_range_pass():
    check_version("lightning", "2.6.6")
    check_version("transformers", "5.25.0")
    check_version("transformers", "4.46.0.dev0")


@pytest.mark.parametrize(
    ("module", "package"),
    [
        ("babysit.integrations.lightning", "lightning"),
        ("babysit.integrations.transformers", "transformers"),
    ],
)
def test_missing_extra_says_what_to_install(monkeypatch, module, package):
    monkeypatch.setitem(sys.modules, package, None)  # import of it raises ImportError
    monkeypatch.delitem(sys.modules, module, raising=False)
    with pytest.raises(ImportError, match=rf"pip install babysit\[{package}\]"):
        importlib.import_module(module)


def test_import_babysit_integrations_stays_light():
    import json
    import subprocess

    code = (
        "import sys, json, babysit, babysit.integrations; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('lightning', 'pytorch_lightning', 'transformers', 'accelerate'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_steps_shares_groups_and_fires_hooks_once():
    a, b = mlp(4, 3, 2), mlp(4, 3, 2, seed=1)
    oa, ob = torch.optim.SGD(a.parameters(), 0.1), torch.optim.Adam(b.parameters(), 0.01)
    steps = Steps([oa, ob])
    calls = []
    steps.register_step_pre_hook(lambda *_: calls.append("pre"))
    steps.register_step_post_hook(lambda *_: calls.append("post"))
    steps.pre()
    steps.post()
    assert calls == ["pre", "post"]
    steps.param_groups[1]["lr"] = 0.5  # shared with the real optimizer
    assert ob.param_groups[0]["lr"] == 0.5
    with pytest.raises(RuntimeError):
        steps.step()


class _Loop:
    """A framework in miniature: it calls the bridge where Lightning and HF call the callbacks."""

    def __init__(self, on_error, lr=0.05, run_dir=None, scheduler=False):
        torch.manual_seed(0)
        self.model = mlp(8, 16, 3)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=lr, momentum=0.9)
        self.sched = (
            torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: 1.0) if scheduler else None
        )
        self.bridge = Bridge(
            self.model,
            [self.opt],
            options=_options(on_error=on_error),
            run_dir=run_dir,
            framework="test",
            schedulers=[self.sched] if self.sched else [],
        )
        self.x, self.y = torch.randn(64, 8), torch.randint(0, 3, (64,))

    def step(self, poison=False):
        self.opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(self.model(self.x), self.y)
        if poison:
            loss = loss * math.nan
        self.bridge.add_loss(loss)
        loss.backward()
        self.bridge.before_update()
        self.opt.step()
        self.bridge.end_step()
        if self.sched is not None:
            self.sched.step()


def test_stop_restores_the_good_weights_and_drops_the_bad_update():
    loop = _Loop("stop")
    for _ in range(3):
        loop.step()
    good = [p.detach().clone() for p in loop.model.parameters()]
    loop.step(poison=True)  # NaN loss: its NaN gradient must not reach the weights
    assert loop.bridge.stop_requested
    assert [f.code for f in loop.bridge.findings] == ["NAN_LOSS"]
    assert loop.bridge.findings[0].step == 3
    assert finite(loop.model)
    # the last snapshot is step 0's state (LossGuard snapshots every 25 steps): restored
    assert not all(torch.equal(a, b) for a, b in zip(good, loop.model.parameters(), strict=True))


def test_rollback_divides_lr_and_scheduler_base_by_ten_and_goes_on():
    loop = _Loop("rollback", scheduler=True)
    loop.step()
    loop.step(poison=True)
    assert not loop.bridge.stop_requested and loop.bridge.rollbacks == 1
    assert loop.opt.param_groups[0]["lr"] == pytest.approx(0.005)
    assert loop.sched.base_lrs == [pytest.approx(0.005)]  # the scheduler keeps the new lr
    loop.step()
    assert loop.opt.param_groups[0]["lr"] == pytest.approx(0.005)
    assert finite(loop.model)


def test_warn_only_reports():
    loop = _Loop("warn")
    loop.step()
    loop.step(poison=True)
    assert [f.code for f in loop.bridge.findings] == ["NAN_LOSS"]
    assert not loop.bridge.stop_requested
    assert not finite(loop.model)  # warn changes nothing, the NaN step went through
    assert loop.opt.param_groups[0]["lr"] == 0.05


def test_run_dir_holding_another_run_is_renamed_like_fit(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "findings.json").write_text('{"findings": []}')
    prepare_run_dir(run, resumed=False)
    assert list(run.iterdir()) == []
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("run-")]
    assert len(moved) == 1 and (moved[0] / "findings.json").read_text() == '{"findings": []}'


def test_resumed_run_keeps_its_directory(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("step,epoch,split,name,value\n")
    prepare_run_dir(run, resumed=True)
    assert (run / "metrics.csv").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_unwritable_run_dir_fails_before_training_and_keeps_the_file(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    with pytest.raises(OSError, match=r"not writable.*BabysitCallback\(run_dir=\.\.\.\)"):
        _Loop("stop", run_dir=blocker / "babysit")
    assert blocker.read_text() == "keep me"


def test_bridge_writes_the_run_directory(tmp_path):
    loop = _Loop("stop", run_dir=tmp_path / "run")
    for _ in range(3):
        loop.step()
    loop.bridge.end_epoch()
    loop.bridge.close()
    from babysit import runs

    config = runs.read_json(tmp_path / "run", runs.CONFIG)
    assert config["kind"] == "test" and config["on_error"] == "stop"
    rows = runs.read_metrics(tmp_path / "run")
    assert [r["step"] for r in rows if r["name"] == "loss"] == [0, 1, 2]


def test_supported_table_is_public():
    assert set(_bridge.SUPPORTED) == {"lightning", "transformers"}


def test_a_nan_loss_after_the_first_optimizer_of_a_step_is_still_caught():
    """Manual optimisation (a GAN): the second net's loss comes after the first step."""
    loop = _Loop("stop")
    loop.step()
    loop.opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(loop.model(loop.x), loop.y)
    loop.bridge.add_loss(loss)
    loss.backward()
    assert not loop.bridge.before_update()  # the first optimizer: a finite loss
    loop.bridge.add_loss(torch.tensor(math.nan))  # the second net's loss
    assert loop.bridge.before_update()  # its update is dropped
    loop.opt.step()
    loop.bridge.end_step()
    assert [f.code for f in loop.bridge.findings] == ["NAN_LOSS"] and finite(loop.model)
