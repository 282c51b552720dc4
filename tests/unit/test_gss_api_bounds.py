"""Every number a client sends that reaches python-gssapi as an OM_uint32:
at 2**32-1 it gets there unchanged, beyond it the call is a GSS error
(GSS_S_FAILURE, EINVAL, naming the argument) and python-gssapi is never
called, so no OverflowError can reach the daemon's catch-all.

python-gssapi is replaced by a recorder in `gss.api` (the only module
that calls it)."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from gssproxy_py.gss import api
from gssproxy_py.gss.status import EINVAL, GSS_S_FAILURE, GssFailure
from gssproxy_py.vocab import oids

LIMIT = 2**32 - 1


class Recorder:
    """Stands in for `gssapi.raw`: records the numbers it is given."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def _record(self, name: str, result: Any) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.seen.append((name, args, kwargs))
            return result

        return call

    def __getattr__(self, name: str) -> Any:
        if name == "OID":
            return lambda elements: elements
        results: dict[str, Any] = {
            "init_sec_context": SimpleNamespace(
                context=None, token=b"", mech=None, flags=0, more_steps=False
            ),
            "get_mic": b"mic",
            "wrap": SimpleNamespace(message=b"w", encrypted=True),
            "wrap_size_limit": 10,
            "ChannelBindings": "bindings",
        }
        return self._record(name, results.get(name))


@pytest.fixture
def raw(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder()
    monkeypatch.setattr(api, "graw", recorder)
    return recorder


def _init(flags: int = 2, time_req: int = 0) -> api.StepResult:
    return api.init_sec_context(
        None,  # type: ignore[arg-type]
        None,
        None,
        oids.KRB5,
        flags,
        time_req,
        None,
        None,
    )


CALLS: dict[str, Callable[[int], object]] = {
    "req_flags": lambda v: _init(flags=v),
    "time_req": lambda v: _init(time_req=v),
    "initiator_addrtype": lambda v: api.channel_bindings(v, b"", 0, b"", b""),
    "acceptor_addrtype": lambda v: api.channel_bindings(0, b"", v, b"", b""),
    "qop_req": lambda v: api.get_mic(None, b"m", v),  # type: ignore[arg-type]
    "qop_state": lambda v: api.wrap(None, b"m", True, v),  # type: ignore[arg-type]
    "req_output_size": lambda v: api.wrap_size_limit(None, v, True, 0),  # type: ignore[arg-type]
}


def _values(raw: Recorder) -> list[Any]:
    out: list[Any] = []
    for _, args, kwargs in raw.seen:
        out.extend(args)
        out.extend(kwargs.values())
    return out


@pytest.mark.parametrize("what", sorted(CALLS))
def test_at_the_bound_the_value_reaches_python_gssapi(raw: Recorder, what: str) -> None:
    CALLS[what](LIMIT)
    assert LIMIT in _values(raw)


@pytest.mark.parametrize("what", sorted(CALLS))
@pytest.mark.parametrize("value", [LIMIT + 1, 2**64 - 1])
def test_beyond_the_bound_is_a_gss_error(raw: Recorder, what: str, value: int) -> None:
    with pytest.raises(GssFailure) as failure:
        CALLS[what](value)
    assert (failure.value.major, failure.value.minor) == (GSS_S_FAILURE, EINVAL)
    assert what in failure.value.message
    assert raw.seen == []


def test_wrap_size_limit_qop_is_bounded_too(raw: Recorder) -> None:
    api.wrap_size_limit(None, 10, True, LIMIT)  # type: ignore[arg-type]
    assert LIMIT in _values(raw)
    with pytest.raises(GssFailure):
        api.wrap_size_limit(None, 10, True, LIMIT + 1)  # type: ignore[arg-type]
