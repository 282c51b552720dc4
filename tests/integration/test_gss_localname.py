"""gss_localname through ctypes (gss/localname.py) against MIT krb5 with a private krb5.conf.

No KDC is needed: auth_to_local is evaluated locally. Every test points
KRB5_CONFIG at a krb5.conf in tmp_path, never at /etc/krb5.conf.
"""

from __future__ import annotations

import errno
import threading
from pathlib import Path

import pytest

from gssproxy_py.errors import LocalError
from gssproxy_py.gss.localname import (
    GSS_S_BAD_NAMETYPE,
    GSS_S_UNAVAILABLE,
    KRB5_NT_PRINCIPAL_NAME,
    KRB5_OID,
    NT_EXPORT_NAME,
    NT_HOSTBASED_SERVICE,
    NT_USER_NAME,
    GssCallError,
    NoLocalMappingError,
    is_no_mapping,
    localname,
    localname_of_name,
    status_message,
)

pytestmark = pytest.mark.integration

KRB5_CONF = """\
[libdefaults]
    default_realm = {realm}
    dns_lookup_realm = false
    dns_lookup_kdc = false
    rdns = false
    dns_canonicalize_hostname = false

[realms]
    {realm} = {{
        kdc = 127.0.0.1:1
        auth_to_local = RULE:[2:$1/$2@$0](nfs/localhost@{realm_re})s/.*/root/
        auth_to_local = DEFAULT
    }}

[domain_realm]
    localhost = {realm}
"""


def write_conf(directory: Path, realm: str) -> Path:
    path = directory / f"krb5-{realm}.conf"
    path.write_text(KRB5_CONF.format(realm=realm, realm_re=realm.replace(".", r"\.")))
    return path


@pytest.fixture
def krb5_conf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = write_conf(tmp_path, "EXAMPLE.TEST")
    monkeypatch.setenv("KRB5_CONFIG", str(path))
    return path


@pytest.mark.usefixtures("krb5_conf")
class TestMapping:
    def test_user_in_default_realm(self) -> None:
        assert localname(b"alice@EXAMPLE.TEST", KRB5_NT_PRINCIPAL_NAME) == b"alice"

    def test_default_name_type_and_realm(self) -> None:
        assert localname(b"alice", None) == b"alice"
        assert localname(b"alice", NT_USER_NAME) == b"alice"

    def test_rule_maps_service_principal_to_root(self) -> None:
        assert localname(b"nfs/localhost@EXAMPLE.TEST", KRB5_NT_PRINCIPAL_NAME) == b"root"

    def test_hostbased_service_name(self) -> None:
        assert localname(b"nfs@localhost", NT_HOSTBASED_SERVICE) == b"root"

    def test_unmatched_service_principal_has_no_mapping(self) -> None:
        with pytest.raises(NoLocalMappingError):
            localname(b"host/localhost@EXAMPLE.TEST", KRB5_NT_PRINCIPAL_NAME)

    def test_foreign_realm_has_no_mapping(self) -> None:
        with pytest.raises(NoLocalMappingError) as ei:
            localname(b"bob@OTHER.TEST", KRB5_NT_PRINCIPAL_NAME)
        err = ei.value
        assert isinstance(err, GssCallError)
        assert isinstance(err, LocalError)
        # What MIT 1.20 returns: GSS_S_UNAVAILABLE, minor ENOENT.
        assert err.routine_error == GSS_S_UNAVAILABLE
        assert err.major == GSS_S_UNAVAILABLE
        assert err.minor == errno.ENOENT
        assert err.no_mapping
        assert err.call == "gss_localname"
        assert "No such file or directory" in err.message
        assert "gss_localname" in str(err)

    def test_escaped_enterprise_style_name(self) -> None:
        # The DEFAULT rule yields the unparsed first component ("alice@x.com"),
        # which proves the escaped '@' survived our re-import.
        assert localname(b"alice\\@x.com@EXAMPLE.TEST", KRB5_NT_PRINCIPAL_NAME) == b"alice@x.com"

    def test_exported_name_token(self) -> None:
        import gssapi.raw as graw

        name = graw.import_name(b"alice@EXAMPLE.TEST", graw.NameType.kerberos_principal)
        token = graw.export_name(graw.canonicalize_name(name, graw.MechType.kerberos))
        assert localname(token, NT_EXPORT_NAME) == b"alice"

    def test_python_gssapi_name(self) -> None:
        import gssapi.raw as graw

        name = graw.import_name(b"nfs/localhost@EXAMPLE.TEST", graw.NameType.kerberos_principal)
        assert localname_of_name(name) == b"root"
        mn = graw.canonicalize_name(name, graw.MechType.kerberos)
        assert localname_of_name(mn) == b"root"
        with pytest.raises(NoLocalMappingError):
            localname_of_name(graw.import_name(b"x@OTHER.TEST", graw.NameType.kerberos_principal))

    def test_bad_name_type_is_other_failure(self) -> None:
        bogus_oid = bytes.fromhex("2b0601040182379999")
        with pytest.raises(GssCallError) as ei:
            localname(b"alice@EXAMPLE.TEST", bogus_oid)
        err = ei.value
        assert not isinstance(err, NoLocalMappingError)
        assert not err.no_mapping
        assert err.routine_error == GSS_S_BAD_NAMETYPE
        assert err.message

    def test_unknown_mech_is_other_failure(self) -> None:
        with pytest.raises(GssCallError) as ei:
            localname(b"alice@EXAMPLE.TEST", KRB5_NT_PRINCIPAL_NAME, bytes.fromhex("2b06010401"))
        assert not ei.value.no_mapping

    def test_empty_mech_refused(self) -> None:
        with pytest.raises(ValueError, match="mech_oid"):
            localname(b"alice", None, b"")

    def test_threads(self) -> None:
        cases = {
            b"alice@EXAMPLE.TEST": b"alice",
            b"nfs/localhost@EXAMPLE.TEST": b"root",
            b"bob@OTHER.TEST": None,
        }
        failures: list[str] = []

        def worker() -> None:
            for _ in range(50):
                for name, want in cases.items():
                    try:
                        got: bytes | None = localname(name, KRB5_NT_PRINCIPAL_NAME)
                    except NoLocalMappingError:
                        got = None
                    if got != want:
                        failures.append(f"{name!r}: {got!r} != {want!r}")

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert failures == []


def test_krb5_config_is_read_per_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = write_conf(tmp_path, "EXAMPLE.TEST")
    second = write_conf(tmp_path, "OTHER.TEST")
    for conf, mapped, unmapped in [
        (first, b"alice@EXAMPLE.TEST", b"alice@OTHER.TEST"),
        (second, b"alice@OTHER.TEST", b"alice@EXAMPLE.TEST"),
        (first, b"alice@EXAMPLE.TEST", b"alice@OTHER.TEST"),
    ]:
        monkeypatch.setenv("KRB5_CONFIG", str(conf))
        assert localname(mapped, KRB5_NT_PRINCIPAL_NAME) == b"alice"
        with pytest.raises(NoLocalMappingError):
            localname(unmapped, KRB5_NT_PRINCIPAL_NAME)
        assert localname(b"alice", None, KRB5_OID) == b"alice"


def test_is_no_mapping_classification() -> None:
    assert is_no_mapping(GSS_S_UNAVAILABLE, errno.ENOENT)
    assert is_no_mapping(GSS_S_UNAVAILABLE, 0)
    assert is_no_mapping(13 << 16, errno.ENOENT)
    assert is_no_mapping(13 << 16, -1765328208 & 0xFFFFFFFF)
    assert not is_no_mapping(13 << 16, errno.EACCES)
    assert not is_no_mapping(GSS_S_BAD_NAMETYPE, errno.ENOENT)


def test_status_message_text() -> None:
    text = status_message(GSS_S_UNAVAILABLE, errno.ENOENT)
    assert text.startswith("The operation or option is not available")
    assert "No such file or directory" in text
    assert status_message(GSS_S_UNAVAILABLE, 0)
