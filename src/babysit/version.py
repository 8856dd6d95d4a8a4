"""The installed package's version, low in the layers so the report can stamp it."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__ = version("babysit")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"
