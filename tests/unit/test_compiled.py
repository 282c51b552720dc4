"""gssproxy_py/compiled.py: which build runs, and a stale build never does.

The decision is checked on a fake tree (sources and a manifest, no
extensions); the end-to-end cases run a fresh interpreter on a copy of this
tree, built or not: with `make deps` the modules are compiled and an edited
source must win over its extension; without a build the .py files run.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from gssproxy_py import compiled

ROOT = Path(__file__).resolve().parents[2]

_PROBE = """
import sys
from gssproxy_py import compiled
for name in compiled.MODULES:
    __import__(name)
print(compiled.STATE)
for name in compiled.MODULES:
    print(sys.modules[name].__file__)
"""


def fake_tree(tmp_path: Path) -> Path:
    """gssproxy_py/ with every compiled module's source and a matching manifest."""
    package = tmp_path / "gssproxy_py"
    lines = []
    for module in compiled.MODULES:
        source = tmp_path / (module.replace(".", "/") + ".py")
        source.parent.mkdir(parents=True, exist_ok=True)
        source.write_text(f"NAME = {module!r}\n")
        lines.append(f"{hashlib.sha256(source.read_bytes()).hexdigest()}  {module}\n")
    (package / compiled.MANIFEST).write_text("".join(lines))
    return package


def test_fresh_build_runs_compiled(tmp_path: Path) -> None:
    state, prefer_sources = compiled.decide(fake_tree(tmp_path), {})
    assert state == f"compiled with mypyc: {len(compiled.MODULES)} modules"
    assert not prefer_sources


def test_an_edited_source_sends_every_module_to_its_py_file(tmp_path: Path) -> None:
    package = fake_tree(tmp_path)
    edited = compiled.MODULES[-1]
    with (tmp_path / (edited.replace(".", "/") + ".py")).open("a") as f:
        f.write("# edited\n")
    assert compiled.stale_modules(package) == [edited]
    state, prefer_sources = compiled.decide(package, {})
    assert prefer_sources and state == f"pure Python: the mypyc build is stale for {edited}"


def test_switched_off_or_not_built(tmp_path: Path) -> None:
    package = fake_tree(tmp_path)
    assert compiled.decide(package, {compiled.NO_MYPYC_ENV: "1"}) == (
        f"pure Python ({compiled.NO_MYPYC_ENV} is set)",
        True,
    )
    assert compiled.decide(package, {compiled.NO_MYPYC_ENV: "0"})[1] is False
    (package / compiled.MANIFEST).unlink()
    assert compiled.stale_modules(package) is None
    # Extensions without a manifest (a build under way) are never loaded.
    assert compiled.decide(package, {}) == ("pure Python (no mypyc build)", True)


def test_source_first_finds_the_py_file(tmp_path: Path) -> None:
    fake_tree(tmp_path)
    finder = compiled.SourceFirst(tmp_path, compiled.MODULES)
    spec = finder.find_spec(compiled.MODULES[0], None)
    assert spec is not None and spec.origin == str(
        tmp_path / (compiled.MODULES[0].replace(".", "/") + ".py")
    )
    assert finder.find_spec("gssproxy_py.errors", None) is None


def probe(tree: Path, env: dict[str, str]) -> tuple[str, list[str]]:
    """compiled.STATE and the file each compiled module came from, in a fresh interpreter."""
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    state, *files = proc.stdout.splitlines()
    return state, files


def test_this_tree_runs_what_was_built() -> None:
    built = (ROOT / "gssproxy_py" / compiled.MANIFEST).is_file()
    env = {compiled.NO_MYPYC_ENV: ""}
    state, files = probe(ROOT, env)
    if built and not compiled.stale_modules(ROOT / "gssproxy_py"):
        assert state.startswith("compiled with mypyc")
        assert all(f.endswith(".so") for f in files), files
    else:
        assert state.startswith("pure Python")
        assert all(f.endswith(".py") for f in files), files
    state, files = probe(ROOT, {compiled.NO_MYPYC_ENV: "1"})
    assert all(f.endswith(".py") for f in files), files


def test_an_edited_copy_of_this_tree_runs_its_sources(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(
        ROOT / "gssproxy_py", tree / "gssproxy_py", ignore=shutil.ignore_patterns("__pycache__")
    )
    edited = tree / (compiled.MODULES[0].replace(".", "/") + ".py")
    with edited.open("a") as f:
        f.write("\nEDITED = True\n")
    state, files = probe(tree, {compiled.NO_MYPYC_ENV: ""})
    assert all(f.endswith(".py") for f in files), files
    if (tree / "gssproxy_py" / compiled.MANIFEST).is_file():
        assert state == f"pure Python: the mypyc build is stale for {compiled.MODULES[0]}"
    else:
        assert state == "pure Python (no mypyc build)"
