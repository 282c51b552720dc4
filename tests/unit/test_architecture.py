"""docs/ARCHITECTURE.md's layer table against the imports in the code.

The last column of each row lists what that layer imports: other layers in
backticks, third-party packages as plain words, `stdlib` for nothing else.
Every import in the code (at module level or inside a function, and module
names handed as strings to `importlib.import_module` or to the program table
`server/programs.ProgramSource`)
must be listed, and everything listed must be imported, so the table can
neither miss a dependency nor keep a stale one. Every layer may import
`errors.py` (the one error root) and the package's `__version__`; those are
not listed.
"""

from __future__ import annotations

import ast
import re
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "gssproxy_py"
ARCHITECTURE = ROOT / "docs" / "ARCHITECTURE.md"
# Distribution names the table uses -> the name they are imported by.
IMPORT_NAMES = {"python-pkcs11": "pkcs11", "python-gssapi": "gssapi"}
# Imported by every layer, so not listed in the table.
EVERYWHERE = {"errors", "gssproxy_py"}
_ROW = re.compile(r"^\| `gssproxy_py/(\w+)(?:/|\.py)` \|.*\| ([^|]+) \|$")
_MODULE_STRING = re.compile(r"[A-Za-z_]\w*(\.\w+)*")


def declared() -> dict[str, set[str]]:
    """layer -> what its row lists ("layer" for ours, "+name" for third-party)."""
    table: dict[str, set[str]] = {}
    for line in ARCHITECTURE.read_text().splitlines():
        m = _ROW.match(line.strip())
        if not m:
            continue
        layer, column = m.groups()
        items: set[str] = set()
        for word in (w.strip() for w in re.split(r",(?![^()]*\))", column)):
            word = re.sub(r"\s*\(.*\)$", "", word)  # "cryptography (only ...)"
            if word in ("stdlib", "—", ""):
                continue
            if word.startswith("`"):
                items.add(word.strip("`"))
            else:
                items.add("+" + IMPORT_NAMES.get(word, word))
        table[layer] = items
    return table


def _layer_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _target(module: str, layers: set[str]) -> str | None:
    parts = module.split(".")
    if parts[0] == "gssproxy_py":
        if len(parts) == 1:
            return "gssproxy_py"
        return parts[1] if parts[1] in layers | EVERYWHERE else None
    if parts[0] in sys.stdlib_module_names or parts[0] == "__future__":
        return None
    return "+" + parts[0]


# Calls whose string arguments name a module that gets imported.
_BY_NAME_IMPORTERS = {"import_module", "ProgramSource"}


def _callee(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def _imported_names(tree: ast.AST) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names += [node.module]
            if node.module == "gssproxy_py":
                names += [f"gssproxy_py.{a.name}" for a in node.names]
        elif isinstance(node, ast.Call) and _callee(node) in _BY_NAME_IMPORTERS:
            # importlib.import_module("pyroute2.netns"), ProgramSource(..., "gssproxy_py.gss.program")
            names += [
                a.value
                for a in node.args
                if isinstance(a, ast.Constant)
                and isinstance(a.value, str)
                and _MODULE_STRING.fullmatch(a.value)
                and a.value.split(".")[0] in ("gssproxy_py", "pyroute2")
            ]
    return names


def actual(layers: set[str]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        layer = _layer_of(path)
        if layer not in layers:
            continue
        for name in _imported_names(ast.parse(path.read_text())):
            target = _target(name, layers)
            if target is not None and target != layer and target not in EVERYWHERE:
                found[layer].add(target)
    return found


def test_every_layer_has_a_row() -> None:
    table = declared()
    on_disk = {
        _layer_of(p)
        for p in PACKAGE.iterdir()
        if (p.is_dir() and (p / "__init__.py").exists())
        or (p.suffix == ".py" and p.stem not in ("__init__", *EVERYWHERE))
    }
    assert on_disk - {"errors"} <= set(table), "layers missing from the table"


def test_the_import_column_is_what_the_code_imports() -> None:
    table = declared()
    found = actual(set(table))
    wrong = {
        layer: {
            "imported but not listed": sorted(found[layer] - listed),
            "listed but not imported": sorted(listed - found[layer]),
        }
        for layer, listed in table.items()
        if found[layer] != listed
    }
    assert wrong == {}, "update the layer table in docs/ARCHITECTURE.md"


# Citations of notes kept outside the repository ("behaviour notes §3.6"):
# a reader of the code cannot follow them, so the fact belongs in the text.
_OUTSIDE_NOTES = re.compile(r"(behaviou?r|protocol) notes(?!\s*\(`?tests/)|reference, §|\(§\d")


def test_docstrings_cite_no_notes_outside_the_repository() -> None:
    cited = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if _OUTSIDE_NOTES.search(line)
    ]
    assert cited == []
