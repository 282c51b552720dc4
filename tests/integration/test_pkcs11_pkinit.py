"""PKINIT with the key on a SoftHSM token, the daemon supplying the PIN
through libkrb5's responder (gssproxy_py.pkcs11.pkinit), against a
throwaway MIT KDC; then a GSSAPI context initiated from the TGT it got.

The realm is testing.realm.Realm plus a second profile file per side
(KRB5_CONFIG / KRB5_KDC_PROFILE list both) holding the PKINIT settings; the
CA, KDC and client certificates are made here with `cryptography`.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from gssproxy_py.config import load_config_text
from gssproxy_py.pkcs11.errors import SignFailure
from gssproxy_py.pkcs11.pin import Pin
from gssproxy_py.pkcs11.pkinit import (
    PkinitError,
    PkinitRequest,
    obtain_tgt,
    obtain_tgt_sync,
    token_identity,
)
from gssproxy_py.pkcs11.program import build_token_sign
from gssproxy_py.pkcs11.uri import parse_uri
from gssproxy_py.proto.token_sign import TsStatus
from gssproxy_py.testing.realm import Realm
from tests.support.softhsm import MODULE, create_key_token

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not os.path.exists("/usr/lib/x86_64-linux-gnu/krb5/plugins/preauth/pkinit.so")
        or shutil.which("krb5kdc") is None
        or shutil.which("softhsm2-util") is None,
        reason="needs krb5-pkinit, the MIT KDC and SoftHSM2",
    ),
]

TOKEN = "pkinit"
PIN = "gpy-Pkinit-PIN-5937"
KEY_ID = b"\x42"
PKINIT_SAN = ObjectIdentifier("1.3.6.1.5.2.2")
PKINIT_KDC_EKU = ObjectIdentifier("1.3.6.1.5.2.3.5")
PKINIT_CLIENT_EKU = ObjectIdentifier("1.3.6.1.5.2.3.4")


def _der(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + content


def krb5_principal_name(realm: str, name_type: int, *components: str) -> bytes:
    """DER of KRB5PrincipalName (RFC 4556 §3.2.2), the otherName value."""
    names = b"".join(_der(0x1B, c.encode()) for c in components)  # GeneralString
    principal = _der(
        0x30,
        _der(0xA0, _der(0x02, bytes([name_type])))  # name-type INTEGER
        + _der(0xA1, _der(0x30, names)),  # name-string SEQUENCE OF
    )
    return _der(0x30, _der(0xA0, _der(0x1B, realm.encode())) + _der(0xA1, principal))


@dataclass(frozen=True)
class Pki:
    ca: Path
    kdc_cert: Path
    kdc_key: Path
    client_key_der: bytes
    client_cert_der: bytes


def make_pki(d: Path, realm: str, client: str) -> Pki:
    now = datetime.datetime.now(datetime.UTC)

    def key() -> rsa.RSAPrivateKey:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    # What MIT's PKINIT documentation puts in both end-entity certificates.
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=True,
        key_encipherment=True,
        data_encipherment=False,
        key_agreement=True,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )

    def builder(subject: str, pub: rsa.RSAPublicKey) -> x509.CertificateBuilder:
        b = x509.CertificateBuilder()
        if subject != "gpytest PKINIT CA":
            b = b.add_extension(usage, critical=False)
        return (
            b.subject_name(name(subject))
            .issuer_name(name("gpytest PKINIT CA"))
            .public_key(pub)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )

    ca_key = key()
    ca = (
        builder("gpytest PKINIT CA", ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    kdc_key = key()
    kdc = (
        builder("kdc", kdc_key.public_key())
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.OtherName(PKINIT_SAN, krb5_principal_name(realm, 2, "krbtgt", realm))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([PKINIT_KDC_EKU]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    client_key = key()
    client_cert = (
        builder(client, client_key.public_key())
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.OtherName(PKINIT_SAN, krb5_principal_name(realm, 1, client))]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([PKINIT_CLIENT_EKU, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    paths = Pki(d / "ca.pem", d / "kdc.pem", d / "kdckey.pem", b"", b"")
    paths.ca.write_bytes(ca.public_bytes(pem))
    paths.kdc_cert.write_bytes(kdc.public_bytes(pem))
    paths.kdc_key.write_bytes(
        kdc_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    paths.kdc_key.chmod(0o600)
    return Pki(
        paths.ca,
        paths.kdc_cert,
        paths.kdc_key,
        client_key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        client_cert.public_bytes(serialization.Encoding.DER),
    )


class PkinitRealm(Realm):
    """Realm whose realm blocks also carry the PKINIT settings: its config
    writer is extended (it runs again when the KDC has to move ports)."""

    def __init__(self, directory: Path, client: str = "tokenuser") -> None:
        super().__init__(directory)
        self.pki = make_pki(Path(directory).parent, self.realm, client)

    def _write_configs(self) -> None:
        super()._write_configs()
        block = f"    {self.realm} = {{\n"
        extra = {
            self.krb5_conf: f"        pkinit_anchors = FILE:{self.pki.ca}\n",
            self.kdc_conf: (
                f"        pkinit_identity = FILE:{self.pki.kdc_cert},{self.pki.kdc_key}\n"
                f"        pkinit_anchors = FILE:{self.pki.ca}\n"
            ),
        }
        for path, lines in extra.items():
            text = path.read_text()
            assert block in text
            path.write_text(text.replace(block, block + lines, 1))


@dataclass(frozen=True)
class Setup:
    realm: PkinitRealm
    principal: str
    keytab: Path
    softhsm_conf: Path
    identity: str

    def env(self) -> dict[str, str]:
        return {**os.environ, **self.realm.env(), "SOFTHSM2_CONF": str(self.softhsm_conf)}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    d = tmp_path_factory.mktemp("pkinit")
    realm = PkinitRealm(d / "realm")
    pki = realm.pki
    realm.create()
    principal = realm.addprinc("tokenuser", None, flags=["+requires_preauth"])
    host = realm.addprinc("host/localhost")
    keytab = realm.ktadd(host, d / "host.keytab")
    realm.start()
    conf = create_key_token(
        d / "softhsm", TOKEN, PIN, pki.client_key_der, pki.client_cert_der, KEY_ID
    )
    identity = token_identity(MODULE, parse_uri(f"pkcs11:token={TOKEN};id=%42"))
    yield Setup(realm, principal, keytab, conf, identity)
    realm.stop()


def _klist(env: dict[str, str], ccache: str) -> str:
    proc = subprocess.run(
        ["klist", "-c", ccache], env=env, capture_output=True, text=True, check=False
    )
    return proc.stdout + proc.stderr


def test_identity_string() -> None:
    uri = parse_uri("pkcs11:token=t;id=%01%ab;object=k;slot-id=3")
    assert token_identity("/m.so", uri) == (
        "PKCS11:module_name=/m.so:slotid=3:token=t:certid=01ab:certlabel=k"
    )
    with pytest.raises(PkinitError):
        token_identity("/m.so", parse_uri("pkcs11:token=a%3Ab"))


def test_tgt_from_the_token_then_a_gss_context(setup: Setup, tmp_path: Path) -> None:
    ccache = f"FILE:{tmp_path / 'tokenuser.ccache'}"
    request = PkinitRequest(setup.principal, setup.identity, ccache)
    asyncio.run(obtain_tgt(request, Pin(PIN, "test"), env=setup.env()))
    listing = _klist(setup.env(), ccache)
    assert f"Default principal: {setup.principal}" in listing
    assert f"krbtgt/{setup.realm.realm}@{setup.realm.realm}" in listing
    assert (tmp_path / "tokenuser.ccache").stat().st_mode & 0o077 == 0

    # Initiate as the token's principal, accept with host/localhost's keytab:
    # both in a child, with this realm's configuration.
    script = f"""
import gssapi
cred = gssapi.Credentials(usage="initiate", store={{"ccache": {ccache!r}}})
target = gssapi.Name("host@localhost", gssapi.NameType.hostbased_service)
init = gssapi.SecurityContext(name=target, creds=cred, usage="initiate")
acc_cred = gssapi.Credentials(usage="accept", store={{"keytab": {str(setup.keytab)!r}}})
acc = gssapi.SecurityContext(creds=acc_cred, usage="accept")
token = init.step()
while not (init.complete and acc.complete):
    token = acc.step(token)
    if token is not None and not init.complete:
        token = init.step(token)
print(acc.initiator_name)
"""
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env={**setup.env(), "KRB5RCACHEDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == setup.principal


def test_wrong_pin_is_a_clear_error(setup: Setup, tmp_path: Path) -> None:
    ccache = f"FILE:{tmp_path / 'bad.ccache'}"
    request = PkinitRequest(setup.principal, setup.identity, ccache)
    with pytest.raises(PkinitError) as e:
        obtain_tgt_sync(request, Pin("gpy-Not-The-PIN-1111", "test"), env=setup.env())
    assert "PKINIT for tokenuser@" in str(e.value) and "PIN supplied" in str(e.value)
    assert "gpy-Not-The-PIN" not in str(e.value) and PIN not in str(e.value)
    assert not (tmp_path / "bad.ccache").exists() or "krbtgt" not in _klist(setup.env(), ccache)


def test_principal_without_preauth_is_explained(setup: Setup, tmp_path: Path) -> None:
    other = setup.realm.addprinc("nopreauth", None)
    request = PkinitRequest(other, setup.identity, f"FILE:{tmp_path / 'x.ccache'}")
    with pytest.raises(PkinitError) as e:
        obtain_tgt_sync(request, Pin(PIN, "test"), env=setup.env())
    assert PIN not in str(e.value)


def test_through_the_backend_next_to_a_loaded_module(
    setup: Setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon's own worker has the module loaded (C_Initialize done in
    this process); PKINIT still works because it runs in a child."""
    pin_file = tmp_path / "pin"
    pin_file.write_text(PIN + "\n")
    pin_file.chmod(0o600)
    monkeypatch.setenv("SOFTHSM2_CONF", str(setup.softhsm_conf))
    text = f"""
[gssproxy]
[service/pkinit]
  mechs = krb5
  euid = 0
  krb5_principal = {setup.principal}
  cred_store = ccache:FILE:{tmp_path / "svc.ccache"}
  pkcs11_module = {MODULE}
  pkcs11_uri = pkcs11:token={TOKEN};id=%42
  pkcs11_pin = file:{pin_file}
"""
    config = load_config_text(text)
    _, backend = build_token_sign(config)
    service = config.services[0]

    async def go() -> None:
        keys, problems = await backend.list_keys(service)
        assert len(keys) == 1 and not problems  # the worker is logged in
        await backend.pkinit_tgt(service, env=setup.env())
        await backend.aclose()

    asyncio.run(go())
    assert "krbtgt/" in _klist(setup.env(), f"FILE:{tmp_path / 'svc.ccache'}")

    # A wrong PIN is caught by the worker's own login, named precisely, and
    # never handed to libkrb5.
    pin_file.write_text("gpy-Not-The-PIN-2222\n")
    _, backend = build_token_sign(config)

    async def wrong() -> SignFailure:
        try:
            await backend.pkinit_tgt(
                service, ccache=f"FILE:{tmp_path / 'no.ccache'}", env=setup.env()
            )
        except SignFailure as f:
            return f
        finally:
            await backend.aclose()
        raise AssertionError("PKINIT with a wrong PIN succeeded")

    failure = asyncio.run(wrong())
    assert failure.status is TsStatus.TS_PIN_ERROR and failure.ckr == "CKR_PIN_INCORRECT"
    assert not (tmp_path / "no.ccache").exists()
