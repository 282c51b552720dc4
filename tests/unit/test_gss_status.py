"""Unit tests for gss/status.py: the failure type and its one mapping to GssxStatus."""

from __future__ import annotations

import errno
import logging

import pytest
from gssapi.raw.misc import GSSError

from gssproxy_py.gss.linux_creds import LinuxCredsDecodeError
from gssproxy_py.gss.status import (
    GENERIC_FAILURE_MESSAGE,
    GSS_S_BAD_MECH,
    GSS_S_FAILURE,
    GSS_S_NO_CRED,
    GssFailure,
    failure_from_gsserror,
    nul_terminated,
    ok_status,
    status_for_exception,
    status_from_failure,
)
from gssproxy_py.netns.errors import NetnsError
from gssproxy_py.vocab import oids

LOG = logging.getLogger("test")


def test_ok_status_is_empty_apart_from_mech() -> None:
    st = ok_status(oids.KRB5)
    assert (st.major_status, st.minor_status) == (0, 0)
    assert st.mech == oids.KRB5
    assert st.major_status_string == st.minor_status_string == b""


def test_strings_are_nul_terminated_and_length_includes_nul() -> None:
    st = status_from_failure(GssFailure(GSS_S_NO_CRED, 13, "no service for uid 5"), oids.KRB5)
    assert st.major_status == GSS_S_NO_CRED
    assert st.minor_status == 13
    assert st.minor_status_string == b"no service for uid 5\0"
    assert st.major_status_string.endswith(b"\0")
    assert st.major_status_string.count(b"\0") == 1
    assert b"credentials" in st.major_status_string.lower()


def test_nul_terminated() -> None:
    assert nul_terminated("abc") == b"abc\0"
    assert len(nul_terminated("linux_creds_v1")) == 15


def test_gsserror_keeps_codes_and_krb5_text() -> None:
    try:
        import gssapi.raw as graw

        graw.acquire_cred_from({b"keytab": b"FILE:/nonexistent/kt"}, None, usage="accept")
    except GSSError as exc:
        failure = failure_from_gsserror(exc)
    else:  # pragma: no cover - MIT always refuses a missing keytab
        raise AssertionError("acquire from a missing keytab succeeded")
    assert failure.major == GSS_S_NO_CRED
    assert failure.minor != 0
    assert "nonexistent" in failure.message
    st = status_from_failure(failure, oids.KRB5)
    assert b"nonexistent" in st.minor_status_string


def test_major_zero_gsserror_never_reads_as_success() -> None:
    assert failure_from_gsserror(GSSError(0, 0)).major == GSS_S_FAILURE


def test_unexpected_exception_is_generic_failure(caplog: object) -> None:
    st = status_for_exception(RuntimeError("secret detail"), oids.KRB5, LOG)
    assert st.major_status == GSS_S_FAILURE
    assert st.minor_status_string == nul_terminated(GENERIC_FAILURE_MESSAGE)
    assert b"secret" not in st.minor_status_string


def test_a_peer_error_tells_the_caller_what_was_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The split by fault (errors.py): the caller's input is named to the caller."""
    with caplog.at_level(logging.INFO):
        st = status_for_exception(
            LinuxCredsDecodeError("linux_creds_v1 of 3 bytes"), oids.KRB5, LOG
        )
    assert (st.major_status, st.minor_status) == (GSS_S_FAILURE, errno.EINVAL)
    assert st.minor_status_string == b"linux_creds_v1 of 3 bytes\0"
    assert not any(r.exc_info for r in caplog.records)


def test_a_local_error_is_logged_without_a_traceback_and_not_sent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO):
        st = status_for_exception(NetnsError("/run/netns/blue: permission denied"), oids.KRB5, LOG)
    assert (st.major_status, st.minor_status) == (GSS_S_FAILURE, 0)
    assert st.minor_status_string == nul_terminated(GENERIC_FAILURE_MESSAGE)
    assert "on our side: /run/netns/blue: permission denied" in caplog.text
    assert not any(r.exc_info for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        status_for_exception(RuntimeError("a bug"), oids.KRB5, LOG)
    assert any(r.exc_info for r in caplog.records)  # a bug keeps its traceback


def test_gssfailure_passes_through() -> None:
    st = status_for_exception(GssFailure(GSS_S_BAD_MECH, 2, "only krb5"), oids.KRB5, LOG)
    assert (st.major_status, st.minor_status) == (GSS_S_BAD_MECH, 2)
    assert st.minor_status_string == b"only krb5\0"
    assert st.mech == oids.KRB5


def test_u32_codes_fit_u64_fields() -> None:
    st = status_from_failure(GssFailure(0xFFFFFFFF, 0x96C73A8D, "x"), b"")
    assert st.major_status == 0xFFFFFFFF
    assert st.minor_status == 0x96C73A8D
