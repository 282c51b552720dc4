"""No function, method or class in gssproxy_py above cyclomatic complexity
15, as radon measures it (`radon cc`), the generated stubs in
gssproxy_py/proto aside. A function that grows past it is split into named
helpers, as the issue that set the bound did (docs/ARCHITECTURE.md)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from radon.complexity import cc_visit
from radon.visitors import Class, Function

MAX_COMPLEXITY = 15
PACKAGE = Path(__file__).resolve().parents[2] / "gssproxy_py"
GENERATED = PACKAGE / "proto"


def _blocks(block: Function | Class) -> Iterator[Function | Class]:
    """The block and its closures (radon lists methods with the blocks)."""
    yield block
    for closure in getattr(block, "closures", ()):
        yield from _blocks(closure)


def measured() -> Iterator[tuple[str, Function | Class]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.is_relative_to(GENERATED):
            continue
        where = str(path.relative_to(PACKAGE.parent))
        for block in cc_visit(path.read_text(encoding="utf-8")):
            for inner in _blocks(block):
                yield where, inner


def test_the_package_is_measured() -> None:
    files = {where for where, _ in measured()}
    assert "gssproxy_py/server/daemon.py" in files and "gssproxy_py/executors.py" in files
    assert not any(f.startswith("gssproxy_py/proto/") for f in files)


def test_no_block_above_the_bound() -> None:
    over = [
        f"{where}:{block.lineno} {block.fullname} ({block.complexity})"
        for where, block in measured()
        if block.complexity > MAX_COMPLEXITY
    ]
    assert not over, f"above cyclomatic complexity {MAX_COMPLEXITY}: " + "; ".join(over)
