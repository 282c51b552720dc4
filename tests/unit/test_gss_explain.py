"""Why a GSS call failed, in the daemon log: status.explain_failure and
policy.explain_acquire_failure / explaining, and how status_for_exception logs them."""

from __future__ import annotations

import logging

import pytest

from gssproxy_py.config.model import CredUsage, Mech, Service
from gssproxy_py.gss import failure_log, policy
from gssproxy_py.gss.policy import CredRequest
from gssproxy_py.gss.status import (
    GSS_S_BAD_MECH,
    GSS_S_CREDENTIALS_EXPIRED,
    GSS_S_FAILURE,
    GSS_S_NO_CRED,
    KRB5_CC_NOTFOUND,
    KRB5_FCC_NOFILE,
    KRB5_KDC_UNREACH,
    KRB5_REALM_UNKNOWN,
    KRB5KDC_ERR_C_PRINCIPAL_UNKNOWN,
    KRB5KDC_ERR_S_PRINCIPAL_UNKNOWN,
    GssFailure,
    explain_failure,
    status_for_exception,
)
from gssproxy_py.vocab import oids

CIFS = Service(
    name="cifs-upcall",
    euid=0,
    mechs=(Mech.KRB5,),
    cred_store=(
        ("ccache", "FILE:/var/lib/gssproxy/clients/krb5cc_%U"),
        ("client_keytab", "/var/lib/gssproxy/clients/%U.keytab"),
    ),
    cred_usage=CredUsage.INITIATE,
    allow_any_uid=True,
    program="/usr/sbin/cifs.upcall",
)
ALICE = CredRequest(target_uid=4242, use_service_keytab=False, name=None, usage=CredUsage.INITIATE)
KEYTAB = "/var/lib/gssproxy/clients/4242.keytab"
CCACHE = "/var/lib/gssproxy/clients/krb5cc_4242"
REALM_MSG = "Cannot contact any KDC for realm 'EXAMPLE.TEST'"


def explain(failure: GssFailure, *existing: str, service: Service = CIFS) -> str | None:
    return policy.explain_acquire_failure(
        failure, service, ALICE, exists=lambda path: path in existing
    )


# -- from the krb5 code alone --------------------------------------------------------


@pytest.mark.parametrize("code", [KRB5_KDC_UNREACH, KRB5_REALM_UNKNOWN])
def test_kdc_unreachable(code: int) -> None:
    why = explain_failure(GssFailure(GSS_S_FAILURE, code, REALM_MSG))
    assert why == (
        f"KDC unreachable ({REALM_MSG}): check that the KDC is running and that "
        "krb5.conf names its address for the realm"
    )


def test_client_principal_unknown() -> None:
    msg = "Client 'ghost@EXAMPLE.TEST' not found in Kerberos database"
    why = explain_failure(GssFailure(GSS_S_NO_CRED, KRB5KDC_ERR_C_PRINCIPAL_UNKNOWN, msg))
    assert why is not None
    assert why.startswith(f"principal unknown to the KDC ({msg}): ")


def test_target_principal_unknown() -> None:
    msg = "Server cifs/nohost@EXAMPLE.TEST not found in Kerberos database"
    why = explain_failure(GssFailure(GSS_S_FAILURE, KRB5KDC_ERR_S_PRINCIPAL_UNKNOWN, msg))
    assert why is not None
    assert why.startswith(f"target principal unknown to the KDC ({msg}): create the service's")


def test_other_codes_say_nothing() -> None:
    assert explain_failure(GssFailure(GSS_S_NO_CRED, KRB5_FCC_NOFILE, "x")) is None
    assert explain_failure(GssFailure(GSS_S_BAD_MECH, 2, "only krb5")) is None


# -- from the cred_store of the uid -----------------------------------------------------


def test_missing_client_keytab_and_ccache_are_named() -> None:
    failure = GssFailure(GSS_S_NO_CRED, KRB5_FCC_NOFILE, "No credentials cache found")
    assert explain(failure) == (
        "no credentials for uid 4242 (service 'cifs-upcall'): "
        f"the client keytab {KEYTAB} does not exist; the ccache FILE:{CCACHE} does not exist"
    )


def test_existing_but_useless_files() -> None:
    failure = GssFailure(GSS_S_NO_CRED, KRB5_CC_NOTFOUND, "No Kerberos credentials available")
    assert explain(failure, KEYTAB, CCACHE) == (
        "no credentials for uid 4242 (service 'cifs-upcall'): "
        f"the client keytab {KEYTAB} holds no usable key; "
        f"the ccache FILE:{CCACHE} holds no usable credentials"
    )


def test_expired_ccache_without_keytab() -> None:
    failure = GssFailure(GSS_S_CREDENTIALS_EXPIRED, 100001, "Success")
    assert explain(failure, CCACHE) == (
        "credentials expired for uid 4242 (service 'cifs-upcall'): "
        f"the client keytab {KEYTAB} does not exist; "
        f"the credentials in the ccache FILE:{CCACHE} have expired"
    )


def test_unknown_principal_names_its_keytab() -> None:
    msg = "Client 'ghost@EXAMPLE.TEST' not found in Kerberos database"
    failure = GssFailure(GSS_S_NO_CRED, KRB5KDC_ERR_C_PRINCIPAL_UNKNOWN, msg)
    assert explain(failure, KEYTAB) == (
        f"principal unknown to the KDC ({msg}): it comes from the client keytab {KEYTAB} "
        "of uid 4242; re-create the principal or replace that keytab"
    )


def test_service_without_user_credentials() -> None:
    bare = Service(name="bare", euid=0, mechs=(Mech.KRB5,), allow_any_uid=True)
    failure = GssFailure(GSS_S_NO_CRED, KRB5_CC_NOTFOUND, "No Kerberos credentials available")
    assert explain(failure, service=bare) == (
        "no credentials for uid 4242: service 'bare' has neither client_keytab nor ccache "
        "in its cred_store"
    )


def test_non_file_ccache_is_named_not_checked() -> None:
    keyring = Service(
        name="kr",
        euid=0,
        mechs=(Mech.KRB5,),
        cred_store=(("ccache", "KEYRING:persistent:%U"),),
        allow_any_uid=True,
    )
    failure = GssFailure(GSS_S_NO_CRED, KRB5_CC_NOTFOUND, "No Kerberos credentials available")
    assert explain(failure, service=keyring) == (
        "no credentials for uid 4242 (service 'kr'): "
        "the ccache KEYRING:persistent:4242 holds no usable credentials"
    )


@pytest.mark.parametrize(
    "failure",
    [
        GssFailure(GSS_S_FAILURE, KRB5_KDC_UNREACH, REALM_MSG),  # explain_failure's
        GssFailure(GSS_S_BAD_MECH, KRB5_FCC_NOFILE, "not a credentials problem"),
        GssFailure(GSS_S_FAILURE, 2, "uid 4242 has no local user name"),
    ],
)
def test_other_failures_are_left_alone(failure: GssFailure) -> None:
    assert explain(failure) is None


def test_explaining_sets_the_explanation_once() -> None:
    with pytest.raises(GssFailure) as info, policy.explaining(CIFS, ALICE):
        raise GssFailure(GSS_S_NO_CRED, KRB5_FCC_NOFILE, "No credentials cache found")
    assert info.value.explanation is not None
    assert f"the client keytab {KEYTAB} does not exist" in info.value.explanation
    with pytest.raises(GssFailure) as info, policy.explaining(CIFS, ALICE):
        raise GssFailure(GSS_S_NO_CRED, KRB5_FCC_NOFILE, "x", explanation="known already")
    assert info.value.explanation == "known already"


# -- the log line ------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_repeats() -> None:
    """Each test starts with no failure seen (repeats are rate-limited)."""
    failure_log.forget_repeats()


def test_explained_failure_is_a_warning_with_why(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.explain")
    failure = GssFailure(GSS_S_FAILURE, KRB5_KDC_UNREACH, REALM_MSG)
    with caplog.at_level(logging.INFO, logger="test.explain"):
        status_for_exception(failure, oids.KRB5, log)
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith("GSS call failed: major 0x000d0000 (")
    assert record.getMessage().endswith(
        f"minor {KRB5_KDC_UNREACH} ({REALM_MSG}); why: KDC unreachable ({REALM_MSG}): "
        "check that the KDC is running and that krb5.conf names its address for the realm"
    )


def test_explanation_from_the_raiser_wins(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.explain")
    failure = GssFailure(GSS_S_NO_CRED, KRB5_FCC_NOFILE, "x", explanation="no keytab at /k")
    with caplog.at_level(logging.INFO, logger="test.explain"):
        st = status_for_exception(failure, oids.KRB5, log)
    assert caplog.records[0].getMessage().endswith("; why: no keytab at /k")
    # The client still gets the mechanism's own text.
    assert st.minor_status_string == b"x\0"


def test_every_failure_is_a_warning_with_a_why(caplog: pytest.LogCaptureFixture) -> None:
    """Without anything more precise, the why says what the major code means."""
    log = logging.getLogger("test.explain")
    with caplog.at_level(logging.INFO, logger="test.explain"):
        status_for_exception(GssFailure(GSS_S_BAD_MECH, 2, "only krb5"), oids.KRB5, log)
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage().endswith(
        "minor 2 (only krb5); why: the client asked for a mechanism other than krb5"
    )
