"""The GSS major status vocabulary: codes in their fields, names from one table."""

from __future__ import annotations

from gssproxy_py.vocab import gss_status as st


def test_codes_sit_in_their_fields() -> None:
    # RFC 2744 3.9.1: calling errors in bits 24-31, routine errors in 16-23.
    assert st.GSS_S_NO_CRED == 7 << 16
    assert st.GSS_S_FAILURE == 13 << 16
    assert st.GSS_S_BAD_MECH_ATTR == 19 << 16
    assert st.GSS_S_CALL_BAD_STRUCTURE == 3 << 24
    assert st.GSS_S_GAP_TOKEN == 1 << 4


def test_names_of_each_field() -> None:
    assert st.major_status_names(st.GSS_S_COMPLETE) == []
    assert st.major_status_names(st.GSS_S_BAD_SIG) == ["GSS_S_BAD_MIC"]
    word = st.GSS_S_CALL_BAD_STRUCTURE | st.GSS_S_FAILURE | st.GSS_S_CONTINUE_NEEDED
    assert st.major_status_names(word) == [
        "GSS_S_CALL_BAD_STRUCTURE",
        "GSS_S_FAILURE",
        "GSS_S_CONTINUE_NEEDED",
    ]
    assert st.major_status_names(st.GSS_S_OLD_TOKEN | st.GSS_S_GAP_TOKEN) == [
        "GSS_S_OLD_TOKEN",
        "GSS_S_GAP_TOKEN",
    ]


def test_unknown_codes_are_shown_by_number() -> None:
    assert st.major_status_names(0x2A << 16) == ["routine error 42"]
    assert st.major_status_names(0x09 << 24) == ["calling error 9"]


def test_every_routine_error_has_a_distinct_name() -> None:
    assert len(set(st.ROUTINE_ERRORS.values())) == len(st.ROUTINE_ERRORS) == 19
    assert all(code & 0xFF00FFFF == 0 for code in st.ROUTINE_ERRORS)


def test_the_daemon_and_the_client_use_the_same_table() -> None:
    from gssproxy_py.client import gssproxy
    from gssproxy_py.gss import status

    assert gssproxy.major_status_names is st.major_status_names
    assert status.GSS_S_NO_CRED is st.GSS_S_NO_CRED
