"""The IDL compiler's error messages: one bad .x file per error
(tests/unit/data/xdrgen/bad), each reported as FILE:LINE:COL: message with a
non-zero exit status."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BAD = Path(__file__).parent / "data" / "xdrgen" / "bad"

EXPECTED = {
    "syntax.x": "3:1: syntax error: unexpected '}'; expected ';'",
    "undefined_type.x": "2:5: undefined type 'missing_t'",
    "duplicate_name.x": "2:8: duplicate name 'A' (first defined as constant at 1:7)",
    "duplicate_case.x": "4:10: union u: duplicate case value 1 (first at 2:10)",
    "enum_out_of_range.x": "1:16: enum value 2147483648 out of range [-2147483648, 2147483647]",
    "size_out_of_range.x": "1:21: opaque size 4294967296 out of range [0, 4294967295]",
    "case_out_of_range.x": "2:10: case value 2 out of range [0, 1]",
    "quadruple.x": "1:12: quadruple is not supported: Python has no 128-bit float to map it to",
    "infinite.x": "1:8: type 's' contains itself without an optional (*) or a variable-length array",
    "undefined_const.x": "1:18: undefined constant 'N'",
    "void_field.x": "1:19: void is only allowed in union arms (struct s)",
    "duplicate_field.x": "1:19: struct s: duplicate field 'a'",
    "duplicate_enum_value.x": "1:17: enum e: B repeats the value 1 of A",
    "bad_discriminant.x": "1:17: union u: the discriminant must be int, unsigned int, bool or an enum",
    "duplicate_proc.x": "1:54: version V: duplicate procedure number 1",
}


def test_every_bad_file_has_an_expectation() -> None:
    assert {p.name for p in BAD.glob("*.x")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_error_message(name: str) -> None:
    path = BAD / name
    r = subprocess.run(
        [sys.executable, "-m", "gssproxy_py.xdrgen", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 1
    assert r.stdout == ""
    assert r.stderr.startswith(f"{path}:{EXPECTED[name]}"), r.stderr


def test_missing_file() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "gssproxy_py.xdrgen", "/nonexistent.x"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 1 and r.stderr.strip() == "/nonexistent.x: No such file or directory"
