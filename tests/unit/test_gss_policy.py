"""Unit tests for gss/policy.py: gssproxy's credential environment decision and gates."""

from __future__ import annotations

import dataclasses

import pytest

from gssproxy_py.config.model import CredUsage, Mech, Service
from gssproxy_py.gss import policy
from gssproxy_py.gss.policy import CredRequest, NameSpec
from gssproxy_py.gss.status import EACCES, GSS_S_FAILURE, GSS_S_UNAUTHORIZED, GssFailure
from gssproxy_py.vocab import oids

SVC = Service(name="s", euid=100, mechs=(Mech.KRB5,), cred_store=(("keytab", "/kt"),))


def svc(**kw: object) -> Service:
    return dataclasses.replace(SVC, **kw)  # type: ignore[arg-type]


def users(uid: int) -> str:
    return {100: "svc", 1000: "alice", 1001: "bob"}[uid]


def decide(service: Service, peer: int, name: NameSpec | None, usage: CredUsage) -> CredRequest:
    return policy.decide_cred_environment(service, peer, name, usage, user_name=users)


@pytest.mark.parametrize(
    ("service", "requested", "expected"),
    [
        (CredUsage.BOTH, 1, CredUsage.INITIATE),
        (CredUsage.BOTH, 3, CredUsage.BOTH),
        (CredUsage.ACCEPT, 3, CredUsage.ACCEPT),
        (CredUsage.INITIATE, 3, CredUsage.INITIATE),
        (CredUsage.ACCEPT, 2, CredUsage.ACCEPT),
    ],
)
def test_narrow_usage(service: CredUsage, requested: int, expected: CredUsage) -> None:
    assert policy.narrow_usage(service, requested) is expected


def test_narrow_usage_conflict_is_eacces() -> None:
    with pytest.raises(GssFailure) as info:
        policy.narrow_usage(CredUsage.ACCEPT, 1)
    assert (info.value.major, info.value.minor) == (GSS_S_FAILURE, EACCES)
    with pytest.raises(GssFailure):
        policy.narrow_usage(CredUsage.BOTH, 7)


def test_trusted_self_without_name_uses_keytab() -> None:
    r = decide(svc(trusted=True), 100, None, CredUsage.ACCEPT)
    assert r == CredRequest(100, True, None, CredUsage.ACCEPT)


def test_untrusted_self_without_name_uses_neither() -> None:
    r = decide(svc(), 100, None, CredUsage.ACCEPT)
    assert not r.use_service_keytab and r.name is None and r.target_uid == 100


def test_user_request_without_name() -> None:
    r = decide(svc(allow_any_uid=True), 1000, None, CredUsage.INITIATE)
    assert r == CredRequest(1000, False, None, CredUsage.INITIATE)


def test_named_request_from_euid_uses_keytab() -> None:
    name = NameSpec(b"host/x@R", oids.NT_KRB5_PRINCIPAL)
    r = decide(svc(), 100, name, CredUsage.BOTH)
    assert r.use_service_keytab and r.name == name


def test_trusted_uid_name_switches_target_uid() -> None:
    for name in (
        NameSpec(b"1000", oids.NT_STRING_UID_NAME),
        NameSpec((1000).to_bytes(4, "little"), oids.NT_MACHINE_UID_NAME),
        NameSpec(b"1000", oids.NT_MACHINE_UID_NAME),
    ):
        r = decide(svc(trusted=True), 100, name, CredUsage.INITIATE)
        assert r == CredRequest(1000, False, None, CredUsage.INITIATE)


def test_uid_name_ignored_unless_trusted_self() -> None:
    name = NameSpec(b"1000", oids.NT_STRING_UID_NAME)
    r = decide(svc(), 100, name, CredUsage.INITIATE)
    assert r.target_uid == 100 and r.name == name
    r = decide(svc(trusted=True, allow_any_uid=True), 1001, name, CredUsage.INITIATE)
    assert r.target_uid == 1001


def test_bad_uid_name() -> None:
    with pytest.raises(GssFailure):
        decide(svc(trusted=True), 100, NameSpec(b"alice", oids.NT_STRING_UID_NAME), CredUsage.BOTH)


def test_impersonate_user_request() -> None:
    r = decide(svc(impersonate=True, allow_any_uid=True), 1000, None, CredUsage.INITIATE)
    assert r.impersonate and r.use_service_keytab
    assert r.name == NameSpec(b"alice", oids.NT_USER_NAME)
    # accept-only requests never impersonate
    r = decide(svc(impersonate=True, allow_any_uid=True), 1000, None, CredUsage.ACCEPT)
    assert not r.impersonate


def test_krb5_principal_default_for_keytab() -> None:
    r = decide(svc(trusted=True, krb5_principal="nfs/h@R"), 100, None, CredUsage.BOTH)
    assert r.name == NameSpec(b"nfs/h@R", oids.NT_KRB5_PRINCIPAL)
    r = decide(svc(krb5_principal="nfs/h@R", allow_any_uid=True), 1000, None, CredUsage.BOTH)
    assert r.name is None


def test_build_store_service_keytab_and_private_ccache() -> None:
    req = CredRequest(100, True, None, CredUsage.BOTH)
    store = policy.build_store(svc(), req, private_ccache="MEMORY:p")
    assert store == {"keytab": "/kt", "client_keytab": "/kt", "ccache": "MEMORY:p"}
    store = policy.build_store(svc(), CredRequest(100, False, None, CredUsage.BOTH))
    assert "client_keytab" not in store and store["ccache"].startswith("MEMORY:")


def test_build_store_expands_uid() -> None:
    s = svc(cred_store=(("ccache", "FILE:/tmp/cc_%U"), ("client_keytab", "/ckt/%U.keytab")))
    store = policy.build_store(s, CredRequest(1000, False, None, CredUsage.INITIATE))
    assert store == {"ccache": "FILE:/tmp/cc_1000", "client_keytab": "/ckt/1000.keytab"}


def test_keytab_files() -> None:
    store = {"keytab": "FILE:/a", "client_keytab": "/b", "ccache": "FILE:/c"}
    assert policy.keytab_files(store) == ("/a", "/b")
    assert policy.keytab_files({"keytab": "MEMORY:x"}) == ()


def test_filter_flags_default_removes_delegate() -> None:
    assert policy.filter_req_flags(svc(), 1 | 2 | 32) == 2 | 32
    assert policy.filter_req_flags(svc(filter_flags=0, enforce_flags=16), 1) == 1 | 16


def test_protocol_transition_gate() -> None:
    with pytest.raises(GssFailure) as info:
        policy.may_impersonate_name(svc())
    assert info.value.major == GSS_S_UNAUTHORIZED
    policy.may_impersonate_name(svc(allow_protocol_transition=True))
    policy.may_impersonate_name(svc(trusted=True))


def test_constrained_delegation_gate() -> None:
    plain = svc()
    policy.constrained_delegation_allowed(plain, None, "anyone@R")  # not impersonated
    policy.constrained_delegation_allowed(plain, "host/h@R", "host/h@R")  # to itself
    policy.constrained_delegation_allowed(plain, "host/h@R", "host/h@")  # referral realm
    with pytest.raises(GssFailure) as info:
        policy.constrained_delegation_allowed(plain, "host/h@R", "proxy/h@R")
    assert info.value.major == GSS_S_UNAUTHORIZED
    for ok in (svc(trusted=True), svc(impersonate=True), svc(allow_constrained_delegation=True)):
        policy.constrained_delegation_allowed(ok, "host/h@R", "proxy/h@R")


def test_store_cred_target() -> None:
    with pytest.raises(GssFailure):
        policy.store_cred_target(svc(), 1000, CredUsage.INITIATE)  # no ccache configured
    shared = svc(cred_store=(("ccache", "FILE:/shared"),))
    with pytest.raises(GssFailure):
        policy.store_cred_target(shared, 1000, CredUsage.INITIATE)
    assert policy.store_cred_target(shared, 100, CredUsage.INITIATE) == {"ccache": "FILE:/shared"}
    per_user = svc(cred_store=(("ccache", "FILE:/cc_%U"),))
    assert policy.store_cred_target(per_user, 1000, CredUsage.BOTH) == {"ccache": "FILE:/cc_1000"}
    with pytest.raises(GssFailure):
        policy.store_cred_target(per_user, 1000, CredUsage.ACCEPT)
