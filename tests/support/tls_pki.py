"""A throwaway certificate authority for the TLS consumers' tests (curl,
openvpn, wpa_supplicant): a CA, a server key and certificate on disk, and
client certificates issued for keys that stay on the token (by their
SubjectPublicKeyInfo, as SoftHSM's fixture reports it).

The token's own certificates are signed by a CA whose key the SoftHSM
fixture threw away; a server must trust the client's issuer, so the tests
issue their own with the extensions TLS and EAP-TLS peers check.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    directory: Path
    _ca_key: ec.EllipticCurvePrivateKey

    def client_cert(self, name: str, spki_der: bytes) -> Path:
        """A PEM client certificate (CN=`name`) for the public key `spki_der`."""
        cert = _certificate(
            name,
            serialization.load_der_public_key(spki_der),
            self._ca_key,
            ExtendedKeyUsageOID.CLIENT_AUTH,
        )
        path = self.directory / f"client-{name}.pem"
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _certificate(
    cn: str,
    public: object,
    ca_key: ec.EllipticCurvePrivateKey,
    usage: x509.ObjectIdentifier | None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name("gpytest TLS CA"))
        .public_key(public)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if usage is None:  # the CA itself
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
    else:
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), False)
    if usage == ExtendedKeyUsageOID.SERVER_AUTH:  # curl checks the name it connected to
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(cn), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            False,
        )
    return builder.sign(ca_key, hashes.SHA256())


def make_pki(directory: Path) -> Pki:
    """The CA and a P-256 server key and certificate (CN=server) in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("gpytest TLS CA", ca_key.public_key(), ca_key, None)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _certificate(
        "server", server_key.public_key(), ca_key, ExtendedKeyUsageOID.SERVER_AUTH
    )
    paths = Pki(
        ca_cert=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        directory=directory,
        _ca_key=ca_key,
    )
    paths.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths.server_cert.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths.server_key.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths
