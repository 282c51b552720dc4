"""The display form of a krb5 name read from its exported token
(`convert.krb5_display_of_export`) is what `gss_display_name` says, for the
names MIT makes (real MIT libraries, no KDC: names are only parsed and
unparsed), and None for anything it cannot vouch for."""

from __future__ import annotations

from pathlib import Path

import pytest

from gssproxy_py.gss import api, convert
from gssproxy_py.vocab import oids

NAMES = [
    b"alice@EXAMPLE.TEST",
    b"host/localhost@EXAMPLE.TEST",
    b"nfs/server.example.test@EXAMPLE.TEST",
    b"we\\/ird\\@user@EXAMPLE.TEST",  # escaped separators
    b"tab\\tname@EXAMPLE.TEST",
    b"user@OTHER.REALM",
    b"caf\xc3\xa9@EXAMPLE.TEST",  # UTF-8
    b"a/b/c@EXAMPLE.TEST",
]


@pytest.fixture
def krb5_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "krb5.conf"
    conf.write_text("[libdefaults]\n default_realm = EXAMPLE.TEST\n")
    monkeypatch.setenv("KRB5_CONFIG", str(conf))
    monkeypatch.setenv("KRB5RCACHEDIR", str(tmp_path))


def _mn(value: bytes, name_type: bytes) -> api.Name:
    return api.canonicalize(api.import_name(value, name_type), oids.KRB5)


@pytest.mark.usefixtures("krb5_config")
@pytest.mark.parametrize("value", NAMES)
def test_the_display_read_from_the_export_is_gss_display_name(value: bytes) -> None:
    name = _mn(value, oids.NT_KRB5_PRINCIPAL)
    assert convert.krb5_display_of_export(api.export_name(name)) == api.display_name(name)


@pytest.mark.usefixtures("krb5_config")
def test_a_hostbased_and_an_enterprise_name_too() -> None:
    for value, name_type in (
        (b"host@localhost", oids.NT_HOSTBASED_SERVICE),
        (b"bob", oids.NT_USER_NAME),
    ):
        name = _mn(value, name_type)
        assert convert.krb5_display_of_export(api.export_name(name)) == api.display_name(name)
    enterprise = api.canonicalize(
        api.import_name(b"bob@example.org", oids.encode_oid("1.2.840.113554.1.2.2.6")), oids.KRB5
    )
    shown = convert.krb5_display_of_export(api.export_name(enterprise))
    assert shown == api.display_name(enterprise)


@pytest.mark.usefixtures("krb5_config")
def test_the_anonymous_principal_is_left_to_gss_display_name() -> None:
    name = _mn(b"WELLKNOWN/ANONYMOUS@WELLKNOWN:ANONYMOUS", oids.NT_KRB5_PRINCIPAL)
    assert convert.krb5_display_of_export(api.export_name(name)) is None
    assert api.display_name(name)[1] == oids.NT_ANONYMOUS
    wire = convert.gssx_name(name)
    assert (wire.display_name, wire.name_type) == api.display_name(name)


@pytest.mark.usefixtures("krb5_config")
def test_the_wire_name_is_unchanged() -> None:
    name = _mn(b"alice@EXAMPLE.TEST", oids.NT_KRB5_PRINCIPAL)
    wire = convert.gssx_name(name)
    assert (wire.display_name, wire.name_type) == (b"alice@EXAMPLE.TEST", oids.NT_KRB5_PRINCIPAL)
    assert wire.exported_name == api.export_name(name)


def test_anything_else_is_not_read() -> None:
    good = convert.krb5_display_of_export
    head = b"\x04\x01\x00\x0b\x06\x09" + oids.KRB5
    assert good(head + b"\x00\x00\x00\x05alice") == (b"alice", oids.NT_KRB5_PRINCIPAL)
    other_mech = b"\x04\x01\x00\x08\x06\x06" + oids.KRB5_OLD
    for token in (
        b"",
        head,
        head + b"\x00\x00\x00",
        head + b"\x00\x00\x00\x06alice",  # length says more than there is
        head + b"\x00\x00\x00\x04alice",  # and less
        other_mech + b"\x00\x00\x00\x05alice",
        b"\x04\x02" + head[2:] + b"\x00\x00\x00\x05alice",  # a composite token
    ):
        assert good(token) is None, token


@pytest.mark.usefixtures("krb5_config")
@pytest.mark.parametrize("value", NAMES)
def test_the_export_read_from_the_composite_is_gss_export_name(value: bytes) -> None:
    name = _mn(value, oids.NT_KRB5_PRINCIPAL)
    composite = api.export_name_composite(name)
    assert convert.krb5_export_of_composite(composite) == api.export_name(name)
    wire = convert.gssx_name(name)
    assert wire.exported_composite_name == composite
    assert wire.exported_name == api.export_name(name)


def test_a_composite_with_attributes_and_malformed_ones() -> None:
    read = convert.krb5_export_of_composite
    mech = b"\x00\x0b\x06\x09" + oids.KRB5
    plain = b"\x04\x01" + mech + b"\x00\x00\x00\x05alice"
    assert read(b"\x04\x02" + mech + b"\x00\x00\x00\x05alice" + b"\x00\x00\x00\x03abc") == plain
    assert read(b"\x04\x02" + mech + b"\x00\x00\x00\x05alice" + b"\x00\x00\x00\x00") == plain
    for token in (
        b"",
        plain,  # not a composite token
        b"\x04\x02" + mech + b"\x00\x00\x00\x05alice",  # no attribute length
        b"\x04\x02" + mech + b"\x00\x00\x00\x05alice" + b"\x00\x00\x00\x04abc",  # short
        b"\x04\x02" + mech + b"\x00\x00\x00\x05alice" + b"\x00\x00\x00\x02abc",  # long
        b"\x04\x02" + mech + b"\x00\x00\x00\x09alice" + b"\x00\x00\x00\x00",
    ):
        assert read(token) is None, token
