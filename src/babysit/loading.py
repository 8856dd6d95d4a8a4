"""Load what the command line names: ``MODULE:FUNCTION`` returning a model or (model, data)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from torch import nn

__all__ = ["TargetError", "load_target"]


class TargetError(ValueError):
    """The user's ``MODULE:FUNCTION`` raised, or returned something unusable."""


def load_target(
    target: str, data: str | None = None, *, standardize: bool = False
) -> tuple[nn.Module, Any]:
    """Import ``MODULE:FUNCTION`` (or ``path/file.py:FUNCTION``), call it, and pair it with data.

    The function returns a model, or ``(model, data)``; ``data`` (a bundled data set name)
    overrides the function's data. Errors say what was wrong in one line.
    """
    module_name, sep, function_name = target.rpartition(":")
    if not sep or not module_name or not function_name:
        raise ValueError(f"expected MODULE:FUNCTION, e.g. mymodels:make_mlp; got {target!r}")
    module = _import(module_name)
    function = getattr(module, function_name, None)
    if not callable(function):
        raise AttributeError(f"{module_name} has no function {function_name!r}")
    try:
        made = function()
    except Exception as err:  # the user's builder: name it, keep its message
        raise TargetError(f"{target} raised {type(err).__name__}: {err}") from err
    model, made_data = made if isinstance(made, tuple) and len(made) == 2 else (made, None)
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"{target} returned {type(model).__name__}; it must return an nn.Module or "
            "(model, data)"
        )
    if data is not None:
        made_data = _bundled(data, standardize)
    if made_data is None:
        raise ValueError(f"{target} returned no data: pass --data NAME (digits, mnist1d, ...)")
    return model, made_data


def _import(name: str):
    if name.endswith(".py") or "/" in name:
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {path}")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        _run(lambda: spec.loader.exec_module(module), name)
        return module
    sys.path.insert(0, str(Path.cwd()))
    try:
        return _run(lambda: importlib.import_module(name), name)
    finally:
        sys.path.remove(str(Path.cwd()))


def _run(load, name: str):
    try:
        return load()
    except ImportError as err:
        raise ImportError(f"cannot import {name}: {err}") from err
    except Exception as err:  # an error while importing the user's module
        raise ImportError(f"importing {name} raised {type(err).__name__}: {err}") from err


def _bundled(name: str, standardize: bool):
    from .data import Standardize, load

    x, y = load(name).train.tensors
    if standardize:
        x = Standardize().fit(x).transform(x)
    return x, y
