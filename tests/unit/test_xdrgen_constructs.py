"""The IDL compiler over one small .x file per construct (tests/unit/data/xdrgen/ok).

Each file is compiled, the output is imported, type-checked by behaviour
(encode/decode exact bytes), and shown to be deterministic.
"""

from __future__ import annotations

import dataclasses
import struct
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from gssproxy_py.client import values
from gssproxy_py.errors import XdrEncodeError, XdrError
from gssproxy_py.xdr import decode_bytes, encode_bytes
from gssproxy_py.xdrgen import compile_file
from tests.support.xdr_strategies import load_generated

DATA = Path(__file__).parent / "data" / "xdrgen" / "ok"


def gen(name: str) -> ModuleType:
    return load_generated(compile_file(str(DATA / f"{name}.x")), f"_xdrgen_test_{name}")


def u32(*v: int) -> bytes:
    return b"".join(struct.pack(">I", x) for x in v)


def i32(*v: int) -> bytes:
    return b"".join(struct.pack(">i", x) for x in v)


def roundtrip(mod: ModuleType, name: str, value: Any, wire: bytes) -> None:
    assert encode_bytes(getattr(mod, f"encode_{name}"), value) == wire
    assert decode_bytes(getattr(mod, f"decode_{name}"), wire) == value


@pytest.mark.parametrize("name", sorted(p.stem for p in DATA.glob("*.x")))
def test_output_is_deterministic_and_compiles(name: str) -> None:
    a = compile_file(str(DATA / f"{name}.x"))
    b = compile_file(str(DATA / f"{name}.x"))
    assert a == b
    compile(a, name, "exec")


def test_const() -> None:
    m = gen("const")
    assert (m.DEC, m.NEG, m.HEX, m.OCT, m.BIG) == (42, -7, 31, 15, 2**64 - 1)
    roundtrip(m, "sized", b"x" * 31, b"x" * 31 + b"\0")


def test_typedef_chain() -> None:
    m = gen("typedef")
    v = m.Holder(a=b"ab", b=(b"", b"xyz"), c=(1, -1))
    roundtrip(m, "holder", v, u32(2) + b"ab\0\0" + u32(2, 0, 3) + b"xyz\0" + i32(1, -1))
    with pytest.raises(XdrEncodeError):
        encode_bytes(m.encode_blobs, (b"",) * 4)  # bound <3>
    with pytest.raises(XdrError, match="bound 3"):
        decode_bytes(m.decode_blobs, u32(4) + u32(0) * 4)


def test_enum() -> None:
    m = gen("enum")
    assert m.Color.BLUE == 16 and m.FAVOURITE == 16 and m.NEGATIVE == -2
    roundtrip(m, "paint", m.Paint(c=m.Color.NEGATIVE, others=(m.RED,)), i32(-2, 1, 0))
    with pytest.raises(XdrError, match="not a value of enum color"):
        decode_bytes(m.decode_color, i32(3))


def test_struct_is_frozen_and_slotted() -> None:
    m = gen("struct")
    p = m.Point(x=1, y=-2)
    with pytest.raises(AttributeError):
        p.x = 5
    assert not hasattr(p, "__dict__")
    roundtrip(m, "line", m.Line(from_=p, to=m.Point(3, 4), width=9), i32(1, -2, 3, 4) + u32(9))


def test_union_arms_are_classes() -> None:
    m = gen("union")
    roundtrip(m, "value", m.ValueN(-5), u32(1) + struct.pack(">q", -5))
    roundtrip(m, "value", m.ValueS(b"hi"), u32(2, 2) + b"hi\0\0")
    roundtrip(m, "value", m.ValueNothing(), u32(3))
    roundtrip(m, "value", m.ValueBoth(m.Kind.MORE, 7), u32(5, 7))
    # A single-case arm carries its discriminant as a read-only property, not
    # a field (so the class compiles under mypyc, and is built without it).
    n = m.ValueN(-5)
    assert n.k is m.Kind.NUMBER and m.ValueNothing().k is m.Kind.NOTHING
    assert [f.name for f in dataclasses.fields(n)] == ["n"]
    with pytest.raises(XdrEncodeError, match="does not select"):
        encode_bytes(m.encode_value, m.ValueBoth(m.Kind.TEXT, 1))
    roundtrip(m, "maybe", m.MaybeV(3), u32(1, 3))
    roundtrip(m, "maybe", m.MaybeFalse(), u32(0))
    roundtrip(m, "by_int", m.ByIntMinus(b"z"), i32(-1) + u32(1) + b"z\0\0\0")
    roundtrip(m, "by_int", m.ByIntDefault(99), u32(99))
    with pytest.raises(XdrEncodeError, match="selects another arm"):
        encode_bytes(m.encode_by_int, m.ByIntDefault(1))
    roundtrip(m, "by_uint", m.ByUintRest(8, b"abcd"), u32(8, 4) + b"abcd")
    # an arm named like the discriminant gets a trailing underscore
    roundtrip(m, "clash", m.ClashStat(4), u32(0, 4))
    assert m.ClashStat(4).stat_ == 4 and m.ClashStat(4).stat == 0

    def kind(v: object) -> str:
        match v:
            case m.ValueN(n=n):
                return f"number {n}"
            case m.ValueNothing():
                return "nothing"
        return "other"

    assert kind(decode_bytes(m.decode_value, u32(1, 0, 7))) == "number 7"


def test_union_without_default_rejects_unknown_discriminant() -> None:
    m = gen("union")
    with pytest.raises(XdrError, match="no arm for discriminant 5"):
        decode_bytes(m.decode_clash, u32(5))


def test_arrays_and_opaques() -> None:
    m = gen("arrays")
    v = m.Arrays(
        fixed=(1, 2, 3),
        bounded=(4,),
        unbounded=(),
        fixed_opaque=b"12345",
        var_opaque=b"abcdef",
        any_opaque=b"",
        name=b"name",
        any_name=b"a",
        empty=b"",
    )
    wire = (
        i32(1, 2, 3)
        + u32(1)
        + i32(4)
        + u32(0)
        + b"12345\0\0\0"
        + u32(6)
        + b"abcdef\0\0"
        + u32(0)
        + u32(4)
        + b"name"
        + u32(1)
        + b"a\0\0\0"
    )
    roundtrip(m, "arrays", v, wire)
    with pytest.raises(XdrEncodeError, match="needs 5 bytes"):
        encode_bytes(m.encode_arrays, dataclasses.replace(v, fixed_opaque=b"1"))
    with pytest.raises(XdrError, match="non-zero padding"):
        decode_bytes(m.decode_arrays, wire.replace(b"12345\0\0\0", b"12345\0\1\0"))
    with pytest.raises(XdrError, match="bound 6"):
        bad = wire.replace(u32(6) + b"abcdef\0\0", u32(7) + b"abcdefg\0")
        decode_bytes(m.decode_arrays, bad)


def test_optional_and_iterative_linked_list() -> None:
    m = gen("optional")
    roundtrip(m, "holder", m.Holder(list=None, maybe=5), u32(0, 1, 5))
    n = 200_000  # far beyond the recursion limit
    node = None
    for i in reversed(range(n)):
        node = m.Node(i, node)
    wire = encode_bytes(m.encode_node, node)
    assert len(wire) == 8 * n
    back = decode_bytes(m.decode_node, wire, max_depth=4)
    assert back == node  # iterative __eq__
    assert hash(back) == hash(node)
    assert repr(m.Node(1, m.Node(2, None))) == "Node[value=1; value=2]"


def test_recursion_depth_is_bounded() -> None:
    m = gen("optional")
    # a tree nested 70 deep through `left` exceeds max_depth=64
    wire = b"".join(i32(i) + u32(1) for i in range(70)) + i32(70) + u32(0, 0) + u32(0) * 70
    with pytest.raises(XdrError, match="nesting deeper than 64"):
        decode_bytes(m.decode_tree, wire)
    assert decode_bytes(m.decode_tree, wire, max_depth=100).value == 0


def test_numbers() -> None:
    m = gen("numbers")
    v = m.Numbers(h=-1, uh=2**64 - 1, b=True, f=1.5, d=-2.25, u=2**32 - 1, i=-(2**31))
    wire = (
        struct.pack(">qQ", -1, 2**64 - 1)
        + u32(1)
        + struct.pack(">f", 1.5)
        + struct.pack(">d", -2.25)
        + u32(2**32 - 1)
        + i32(-(2**31))
    )
    roundtrip(m, "numbers", v, wire)
    with pytest.raises(XdrError, match="bool must be 0 or 1"):
        decode_bytes(m.decode_numbers, wire[:16] + u32(2) + wire[20:])
    with pytest.raises(XdrEncodeError):
        encode_bytes(m.encode_numbers, m.Numbers(-1, -1, True, 0.0, 0.0, 0, 0))


def test_program_table() -> None:
    m = gen("program")
    assert m.CALC == 0x20000001 and m.CALC_V1 == 1 and m.CALC_ADD == 1
    prog = m.CALC_PROGRAM
    assert prog.number == 0x20000001 and set(prog.versions) == {1, 2}
    v1 = prog.versions[1].procedures
    assert [(p.number, p.name) for p in v1.values()] == [
        (0, "CALC_PING"),
        (1, "CALC_ADD"),
        (2, "CALC_SUM"),
        (3, "CALC_RESET"),
        (4, "CALC_DIV"),
    ]
    add = v1[1]
    assert add.arg_type is m.Pair and add.res_type is int
    assert decode_bytes(add.decode_arg, i32(2, 3)) == m.Pair(2, 3)
    assert encode_bytes(add.encode_res, 5) == i32(5)
    assert decode_bytes(v1[2].decode_arg, i32(7, 8)) == (7, 8)
    assert decode_bytes(v1[3].decode_arg, b"") is None
    # a union result is described by its arm classes, and the client's JSON layer takes it
    div = v1[4]
    assert div.res_type == (m.OutcomeValue, m.OutcomeReason)
    assert values.type_name(div.res_type) == "OutcomeValue | OutcomeReason"
    got = values.value_from_json({"OutcomeReason": {"reason": "divide by 0"}}, div.res_type)
    assert got == m.OutcomeReason(b"divide by 0")
    assert encode_bytes(div.encode_res, got) == u32(0, 11) + b"divide by 0\0"
    # NULL (procedure 0) is added implicitly where the file does not define it
    v2 = prog.versions[2].procedures
    assert v2[0].name == "NULL" and v2[1].name == "CALC_MUL"


def test_inline_types_are_hoisted() -> None:
    m = gen("inline")
    v = m.Envelope(
        range=m.EnvelopeRange(1, 2), size=m.EnvelopeSize.LARGE, body=m.EnvelopeBodyZero(9)
    )
    roundtrip(m, "envelope", v, i32(1, 2, 2, 0, 9))


def test_comments_and_passthrough() -> None:
    m = gen("syntax")
    roundtrip(m, "s_alias", m.S(a=1), i32(1))


def test_cli_writes_and_checks(tmp_path: Path) -> None:
    out = tmp_path / "calc.py"
    cmd = [sys.executable, "-m", "gssproxy_py.xdrgen", str(DATA / "program.x"), "-o", str(out)]
    assert subprocess.run(cmd, check=False).returncode == 0
    assert out.read_text() == compile_file(str(DATA / "program.x"))
    assert subprocess.run([*cmd, "--check"], check=False).returncode == 0
    out.write_text(out.read_text() + "# drift\n")
    r = subprocess.run([*cmd, "--check"], capture_output=True, text=True, check=False)
    assert r.returncode == 1 and "out of date" in r.stderr
