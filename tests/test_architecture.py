"""The house rules of docs/architecture.md, checked on every module under src/babysit.

1. Every import points down (or sideways): a module may import modules of its own layer or of a
   lower one, never of a higher one. The layer table is read from docs/architecture.md (between
   the ``<!-- layers -->`` markers), so the doc and the rule cannot drift apart. A module gets
   the layer of the longest table entry that is its name or a package above it, so a new module
   (e.g. a new ``babysit.tuning.study``) is judged by its package without editing the table.
2. No module imports a private module (a name part starting with ``_``, dunders aside) or a
   private name (``from m import _x``) of another package: private means "this package only".

Every import statement counts: module level, inside functions (lazy imports are still arrows),
and under ``if TYPE_CHECKING:`` (a type hint couples the lower module to the higher one just as
much; it is only cheaper at run time). The modules are found by walking the source tree, so the
test needs no list of them and covers modules it has never seen.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
DOC = ROOT / "docs" / "architecture.md"
TOP = "babysit"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted((SRC / TOP).rglob("*.py"))}
PACKAGES = {name for name, path in MODULES.items() if path.name == "__init__.py"}


def layer_table(text: str) -> dict[str, int]:
    """``{module or package: layer}`` from the markdown table between the layer markers.

    Rows look like ``| 3 | checks | `babysit.checks` |``: the first cell is the layer number,
    the last lists the modules and packages in backticks.
    """
    match = re.search(r"<!-- layers -->(.*?)<!-- /layers -->", text, re.S)
    assert match, "docs/architecture.md lost its <!-- layers --> table"
    table: dict[str, int] = {}
    for line in match.group(1).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not cells or not cells[0].isdigit():
            continue
        for name in re.findall(r"`([\w.]+)`", cells[-1]):
            assert name not in table, f"{name} is listed twice in the layer table"
            table[name] = int(cells[0])
    return table


LAYERS = layer_table(DOC.read_text(encoding="utf-8"))


def layer_of(module: str) -> int | None:
    """The layer of the longest table entry that is ``module`` or a package above it; the
    top package itself (``babysit``, its ``__init__``) matches only exactly."""
    best: tuple[int, int] | None = None
    for entry, layer in LAYERS.items():
        covers = module == entry or (entry != TOP and module.startswith(entry + "."))
        if covers and (best is None or len(entry) > best[0]):
            best = (len(entry), layer)
    return None if best is None else best[1]


@dataclass(frozen=True)
class Import:
    importer: str
    target: str  # the module imported (a name imported from a package resolves to its module)
    name: str | None  # the name taken with ``from target import name`` (None for ``import``)
    line: int

    def __str__(self) -> str:
        what = self.target + (f" ({self.name})" if self.name else "")
        return f"{MODULES[self.importer].relative_to(ROOT)}:{self.line}: {self.importer} -> {what}"


def imports_of(module: str) -> list[Import]:
    """Every babysit import of ``module``, wherever it stands in the file."""
    path = MODULES[module]
    package = module if module in PACKAGES else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [Import(module, a.name, None, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if submodule in MODULES:  # ``from babysit import runs``: the module runs
                    found.append(Import(module, submodule, None, node.lineno))
                else:
                    found.append(Import(module, source, alias.name, node.lineno))
    return [i for i in found if i.target == TOP or i.target.startswith(TOP + ".")]


ALL_IMPORTS = [i for module in MODULES for i in imports_of(module)]


def _private(part: str) -> bool:
    return part.startswith("_") and not part.startswith("__")


def _home(module: str) -> str:
    """The package ``module`` belongs to (a package belongs to itself). A private name is for
    the modules of its own package only: ``babysit.train.x`` may not take ``_measure`` from
    ``babysit.initlab`` although both sit under ``babysit``."""
    return module if module in PACKAGES else module.rpartition(".")[0]


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_every_module_has_a_layer():
    missing = sorted(m for m in MODULES if layer_of(m) is None)
    assert not missing, f"add these modules (or their package) to docs/architecture.md: {missing}"


def test_every_table_entry_exists():
    stale = sorted(e for e in LAYERS if e not in MODULES)
    assert not stale, f"docs/architecture.md lists modules that do not exist: {stale}"


def test_every_import_points_down():
    uphill = [
        f"{i}: layer {layer_of(i.importer)} imports layer {layer_of(i.target)}"
        for i in ALL_IMPORTS
        if layer_of(i.target) is not None
        and layer_of(i.importer) is not None
        and layer_of(i.target) > layer_of(i.importer)
    ]
    assert not uphill, "imports that point up the layers:\n" + "\n".join(uphill)


def test_no_module_imports_another_packages_private_parts():
    bad = []
    for i in ALL_IMPORTS:
        parts = i.target.split(".")
        for k, part in enumerate(parts):
            if _private(part) and not _inside(i.importer, ".".join(parts[:k]) or TOP):
                bad.append(f"{i}: private module {'.'.join(parts[: k + 1])}")
                break
        else:
            own = _home(i.importer) == _home(i.target) or _inside(i.importer, i.target)
            if i.name and _private(i.name) and not own:
                bad.append(f"{i}: private name {i.name}")
    assert not bad, "imports of another package's private parts:\n" + "\n".join(bad)


# -- the checker itself must be able to fail ----------------------------------------------------


def test_the_table_parser_reads_rows_and_rejects_duplicates():
    doc = "\n".join(
        [
            "<!-- layers -->",
            "| layer | name | modules |",
            "|---|---|---|",
            "| 0 | a | `babysit.x`, `babysit.y` |",
            "| 2 | b | `babysit.z` |",
            "<!-- /layers -->",
        ]
    )
    assert layer_table(doc) == {"babysit.x": 0, "babysit.y": 0, "babysit.z": 2}
    with pytest.raises(AssertionError, match="twice"):
        layer_table(doc.replace("`babysit.z`", "`babysit.x`"))


def test_a_new_module_falls_in_its_packages_layer():
    assert layer_of("babysit.tuning.a_module_written_tomorrow") == layer_of("babysit.tuning")
    assert layer_of("babysit.some_new_top_level_module") is None  # must be added to the table
    assert layer_of(TOP) is not None and layer_of(TOP) > layer_of("babysit.tuning")


def test_private_names_stay_in_their_package():
    """The first wave's ``from ..initlab import _measure`` in babysit.train is what this catches."""
    uphill = Import("babysit.train.activation_snapshots", "babysit.initlab", "_measure", 1)
    sibling = Import("babysit.checks.learning_rate", "babysit.checks.overfit", "_helper", 1)
    assert _home(uphill.importer) != _home(uphill.target)
    assert _home(sibling.importer) == _home(sibling.target)


def test_the_walker_sees_function_level_and_type_checking_imports():
    lazy = [i for i in ALL_IMPORTS if i.importer == "babysit.train.loop"]
    assert any(i.target == "babysit.train.progress" for i in lazy)  # inside Trainer.__init__
    typing_only = [i for i in ALL_IMPORTS if i.importer == "babysit.train.monitors.loss"]
    assert any(i.target == "babysit.train.session" for i in typing_only)  # under TYPE_CHECKING
