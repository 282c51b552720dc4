"""The checked-in stubs are exactly what the compiler makes from idl/*.x today."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAIRS = [
    (x, ROOT / "gssproxy_py" / "proto" / f"{x.stem}.py") for x in sorted((ROOT / "idl").glob("*.x"))
]


def test_every_idl_file_has_a_stub() -> None:
    assert PAIRS, "no idl/*.x files"
    missing = [str(py) for _, py in PAIRS if not py.exists()]
    assert not missing, f"run `make stubs`: missing {missing}"


@pytest.mark.parametrize(("idl", "stub"), PAIRS, ids=[p[0].name for p in PAIRS])
def test_regeneration_matches_checked_in_stub(idl: Path, stub: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "gssproxy_py.xdrgen", str(idl.relative_to(ROOT))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert r.stdout == stub.read_text(), f"{stub.name} drifted from {idl.name}: run `make stubs`"
