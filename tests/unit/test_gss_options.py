"""Unit tests for gss/options.py: exact NUL-terminated option strings and parsing."""

from __future__ import annotations

import pytest

from gssproxy_py.gss import options as o
from gssproxy_py.gss.status import EINVAL, GSS_S_FAILURE, GssFailure
from gssproxy_py.proto.gss_proxy import GssxOption


def opt(name: bytes, value: bytes) -> GssxOption:
    return GssxOption(option=name, value=value)


@pytest.mark.parametrize(
    ("value", "length"),
    [
        (o.EXPORTED_CONTEXT_TYPE, 22),
        (o.LINUX_LUCID_V1, 15),
        (o.EXPORTED_CREDS_TYPE, 20),
        (o.LINUX_CREDS_V1, 15),
        (o.SYNC_MODIFIED_CREDS, 20),
        (o.DEFAULT, 8),
        (o.SYNC_CREDS, 11),
        (o.ACQUIRE_TYPE, 13),
        (o.IMPERSONATE_NAME, 17),
        (o.LOCALNAME, 10),
        (o.KRB5_SET_ALLOWED_ENCTYPE_VALUES, 32),
        (o.KRB5_SET_NO_CI_FLAGS, 21),
    ],
)
def test_wire_constants(value: bytes, length: int) -> None:
    assert len(value) == length
    assert value.endswith(b"\0") and value.count(b"\0") == 1


def test_kernel_options() -> None:
    types = o.parse_call_options(
        [
            opt(o.EXPORTED_CONTEXT_TYPE, o.LINUX_LUCID_V1),
            opt(o.EXPORTED_CREDS_TYPE, o.LINUX_CREDS_V1),
        ]
    )
    assert types.context is o.ContextExport.LINUX_LUCID_V1
    assert types.creds is o.CredsExport.LINUX_CREDS_V1
    assert types.kernel


def test_no_options_is_default() -> None:
    types = o.parse_call_options([])
    assert types == o.ExportTypes()
    assert not types.kernel


@pytest.mark.parametrize(
    "bad",
    [
        opt(o.EXPORTED_CONTEXT_TYPE, b"linux_lucid_v1"),  # missing NUL
        opt(o.EXPORTED_CONTEXT_TYPE, b"linux_lucid_v2\0"),
        opt(o.EXPORTED_CREDS_TYPE, b"other\0"),
    ],
)
def test_unknown_values_are_einval(bad: GssxOption) -> None:
    with pytest.raises(GssFailure) as info:
        o.parse_call_options([bad])
    assert (info.value.major, info.value.minor) == (GSS_S_FAILURE, EINVAL)


def test_names_without_nul_do_not_match() -> None:
    assert o.parse_call_options([opt(b"exported_context_type", b"x")]) == o.ExportTypes()
    assert not o.wants_sync([opt(b"sync_modified_creds", o.DEFAULT)])


def test_first_match_wins() -> None:
    assert o.find_option([opt(b"a\0", b"1"), opt(b"a\0", b"2")], b"a\0") == b"1"


def test_acquire_type() -> None:
    assert not o.parse_acquire_type([])
    assert o.parse_acquire_type([opt(o.ACQUIRE_TYPE, o.IMPERSONATE_NAME)])
    with pytest.raises(GssFailure):
        o.parse_acquire_type([opt(o.ACQUIRE_TYPE, b"other\0")])


def test_wants_sync() -> None:
    assert o.wants_sync([opt(o.SYNC_MODIFIED_CREDS, o.DEFAULT)])
    assert not o.wants_sync([opt(o.SYNC_MODIFIED_CREDS, b"default")])
