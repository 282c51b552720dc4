"""Hypothesis round-trips for every type of idl/gss_proxy.x and idl/rpc_msg.x.

For each type: encode(value) decodes back to an equal value, and re-encoding
gives the same bytes. Strategies come from the compiler's own model of the
.x file (tests/support/xdr_strategies.py), so no type can be forgotten.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gssproxy_py.xdr import decode_bytes, encode_bytes
from gssproxy_py.xdrgen import load
from tests.support.xdr_strategies import Strategies

ROOT = Path(__file__).resolve().parents[2]
SPECS = {
    "gss_proxy": "gssproxy_py.proto.gss_proxy",
    "rpc_msg": "gssproxy_py.proto.rpc_msg",
    "admin": "gssproxy_py.proto.admin",
}


def _cases() -> list[tuple[str, str]]:
    out = []
    for spec in SPECS:
        model = load(str(ROOT / "idl" / f"{spec}.x"))
        out += [(spec, name) for name in Strategies(model, None).all_type_names()]  # type: ignore[arg-type]
    return out


CASES = _cases()
_STRATEGIES: dict[str, Strategies] = {}


def strategies(spec: str) -> Strategies:
    if spec not in _STRATEGIES:
        model = load(str(ROOT / "idl" / f"{spec}.x"))
        _STRATEGIES[spec] = Strategies(model, importlib.import_module(SPECS[spec]))
    return _STRATEGIES[spec]


def test_every_gss_proxy_type_is_covered() -> None:
    names = {n for s, n in CASES if s == "gss_proxy"}
    # the 15 procedures' argument and result structs, plus the shared types
    assert len([n for n in names if n.startswith("gssx_arg_")]) == 15
    assert len([n for n in names if n.startswith("gssx_res_")]) == 15
    assert {"gssx_ctx", "gssx_cred", "gssx_name", "gssx_handle", "gssx_status"} <= names


@pytest.mark.parametrize(("spec", "name"), CASES, ids=[f"{s}.{n}" for s, n in CASES])
@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(data=st.data())
def test_round_trip(spec: str, name: str, data: st.DataObject) -> None:
    strat = strategies(spec)
    mod = strat.mod
    value = data.draw(strat.named(name))
    encoded = encode_bytes(getattr(mod, f"encode_{name}"), value)
    assert len(encoded) % 4 == 0
    decoded = decode_bytes(getattr(mod, f"decode_{name}"), encoded)
    assert decoded == value
    assert encode_bytes(getattr(mod, f"encode_{name}"), decoded) == encoded
