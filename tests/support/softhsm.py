"""A throwaway SoftHSM2 token set for the PKCS#11 tests.

`create_softhsm(directory)` writes a softhsm2.conf pointing at
`directory/tokens`, initialises the tokens below with softhsm2-util, and
fills them from a child Python process (so that the test process never
loads the module itself before the daemon code does: python-pkcs11 caches
modules per path, and a second C_Initialize of the same library through a
symlinked path fails). It returns what the tests need to know: module path,
labels, PINs, and per key its id, SubjectPublicKeyInfo and certificate.

Tokens:
* MAIN (`gpytest`): RSA-2048 `rsa` (id 01, with a certificate),
  P-256 `p256` (id 02, with a certificate), Ed25519 `ed25519` (id 03), all
  generated on the token (sensitive, not extractable); and `soft` (id 04), a
  P-256 key imported as EXTRACTABLE and not SENSITIVE, whose private scalar
  the tests know and search for in replies and logs;
* SECOND (`second`): P-256 `other` (id 11), for "another service
  may not use it";
* SPARE (`spare`): P-256 `spare` (id 21), for a service
  configured with the wrong PIN.

`shared_softhsm()` makes one such set per test process (in a temporary
directory removed at exit) and points SOFTHSM2_CONF at it: the module reads
the variable once, at C_Initialize.

`put_pins_in_session_keyring` gives the calling process a fresh session
keyring (what `keyctl session` does) and adds `user` keys holding PINs.
"""

from __future__ import annotations

import atexit
import datetime
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
SO_PIN = "12345678"
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class TokenSpec:
    label: str
    pin: str
    keys: tuple[tuple[str, str, bytes], ...]  # (kind, label, id)
    certified: tuple[bytes, ...] = ()  # ids that get a certificate


# PINs long and odd enough that finding one in a log or a reply cannot be chance.
MAIN = TokenSpec(
    "gpytest",
    "gpy-Main-PIN-4821",
    (("rsa", "rsa", b"\x01"), ("p256", "p256", b"\x02"), ("ed25519", "ed25519", b"\x03")),
    certified=(b"\x01", b"\x02"),
)
SECOND = TokenSpec("second", "gpy-Second-PIN-7390", (("p256", "other", b"\x11"),))
SPARE = TokenSpec("spare", "gpy-Spare-PIN-1564", (("p256", "spare", b"\x21"),))
TOKENS = (MAIN, SECOND, SPARE)
SOFT_LABEL = "soft"
SOFT_ID = b"\x04"


@dataclass(frozen=True)
class KeyFacts:
    token: str
    label: str
    key_id: bytes
    spki: bytes
    certificate: bytes | None


@dataclass(frozen=True)
class SoftHsm:
    directory: Path
    conf: Path
    module: str
    keys: dict[str, KeyFacts]  # by label
    serials: dict[str, str]  # token label -> serial
    soft_private_scalar: bytes  # the extractable key's private value

    def env(self) -> dict[str, str]:
        return {"SOFTHSM2_CONF": str(self.conf)}


def _run(argv: list[str], env: dict[str, str]) -> str:
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def create_softhsm(directory: str | os.PathLike[str]) -> SoftHsm:
    """Create and fill the tokens in `directory` (about half a second)."""
    d = Path(directory).absolute()
    tokens = d / "tokens"
    tokens.mkdir(parents=True, exist_ok=True)
    conf = d / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}\n"
        "objectstore.backend = file\n"
        "log.level = ERROR\n"
        "slots.removable = false\n",
        encoding="utf-8",
    )
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    for spec in TOKENS:
        _run(
            [
                "softhsm2-util",
                "--init-token",
                "--free",
                "--label",
                spec.label,
                "--so-pin",
                SO_PIN,
                "--pin",
                spec.pin,
            ],
            env,
        )
    env["PYTHONPATH"] = str(ROOT)
    out = _run([sys.executable, "-m", "tests.support.softhsm", "populate"], env)
    facts = json.loads(out)
    keys = {
        k["label"]: KeyFacts(
            token=k["token"],
            label=k["label"],
            key_id=bytes.fromhex(k["id"]),
            spki=bytes.fromhex(k["spki"]),
            certificate=bytes.fromhex(k["cert"]) if k["cert"] else None,
        )
        for k in facts["keys"]
    }
    return SoftHsm(
        directory=d,
        conf=conf,
        module=MODULE,
        keys=keys,
        serials=facts["serials"],
        soft_private_scalar=bytes.fromhex(facts["soft_private"]),
    )


@functools.cache
def _shared() -> SoftHsm:
    directory = tempfile.mkdtemp(prefix="gpytest-softhsm-")
    os.chmod(directory, 0o755)
    atexit.register(shutil.rmtree, directory, True)
    return create_softhsm(directory)


def shared_softhsm() -> SoftHsm:
    """The token set of this test process, created on first use; points
    SOFTHSM2_CONF at it (again, in case a test pointed it elsewhere)."""
    hsm = _shared()
    os.environ["SOFTHSM2_CONF"] = str(hsm.conf)
    return hsm


def put_pins_in_session_keyring(pins: dict[str, str]) -> int:
    """Join a fresh session keyring and add each PIN as a `user` key named
    by its description; returns the keyring's serial."""
    from gssproxy_py.pkcs11.keyring import add_user_key, join_new_session_keyring

    ring = join_new_session_keyring()
    for description, pin in pins.items():
        add_user_key(description, pin.encode("utf-8"))
    return ring


def create_key_token(
    directory: str | os.PathLike[str],
    label: str,
    pin: str,
    key_pkcs8_der: bytes,
    cert_der: bytes,
    key_id: bytes,
) -> Path:
    """A separate SoftHSM token store in `directory` holding one imported RSA
    key (not extractable) and its certificate under `key_id`; returns the
    softhsm2.conf path. Used for PKINIT, where libkrb5 loads the module in
    its own process with this configuration."""
    d = Path(directory).absolute()
    (d / "tokens").mkdir(parents=True, exist_ok=True)
    conf = d / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {d / 'tokens'}\nobjectstore.backend = file\n"
        "log.level = ERROR\nslots.removable = false\n",
        encoding="utf-8",
    )
    env = {**os.environ, "SOFTHSM2_CONF": str(conf), "PYTHONPATH": str(ROOT)}
    _run(
        [
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            label,
            "--so-pin",
            SO_PIN,
            "--pin",
            pin,
        ],
        env,
    )
    request = json.dumps(
        {
            "label": label,
            "pin": pin,
            "key": key_pkcs8_der.hex(),
            "cert": cert_der.hex(),
            "id": key_id.hex(),
        }
    )
    proc = subprocess.run(
        [sys.executable, "-m", "tests.support.softhsm", "import"],
        input=request,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"importing the key failed:\n{proc.stdout}{proc.stderr}")
    return conf


def _import_key(request: dict[str, str]) -> None:
    import pkcs11
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import load_der_private_key
    from pkcs11 import Attribute, CertificateType, KeyType, ObjectClass

    key = load_der_private_key(bytes.fromhex(request["key"]), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    cert_der = bytes.fromhex(request["cert"])
    cert = x509.load_der_x509_certificate(cert_der)
    key_id = bytes.fromhex(request["id"])
    n = key.private_numbers()
    pub = n.public_numbers

    def b(v: int) -> bytes:
        return v.to_bytes((v.bit_length() + 7) // 8, "big")

    lib = pkcs11.lib(MODULE)
    token = lib.get_token(token_label=request["label"])
    with token.open(rw=True, user_pin=request["pin"]) as session:
        common = {
            Attribute.TOKEN: True,
            Attribute.LABEL: request["label"],
            Attribute.ID: key_id,
            Attribute.KEY_TYPE: KeyType.RSA,
            Attribute.MODULUS: b(pub.n),
            Attribute.PUBLIC_EXPONENT: b(pub.e),
        }
        session.create_object(
            {
                **common,
                Attribute.CLASS: ObjectClass.PRIVATE_KEY,
                Attribute.PRIVATE: True,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                Attribute.SIGN: True,
                Attribute.DECRYPT: True,
                Attribute.PRIVATE_EXPONENT: b(n.d),
                Attribute.PRIME_1: b(n.p),
                Attribute.PRIME_2: b(n.q),
                Attribute.EXPONENT_1: b(n.dmp1),
                Attribute.EXPONENT_2: b(n.dmq1),
                Attribute.COEFFICIENT: b(n.iqmp),
            }
        )
        session.create_object(
            {**common, Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.VERIFY: True}
        )
        session.create_object(
            {
                Attribute.CLASS: ObjectClass.CERTIFICATE,
                Attribute.CERTIFICATE_TYPE: CertificateType.X_509,
                Attribute.TOKEN: True,
                Attribute.LABEL: request["label"],
                Attribute.ID: key_id,
                Attribute.SUBJECT: cert.subject.public_bytes(),
                Attribute.VALUE: cert_der,
            }
        )


# -- the child process -----------------------------------------------------


def _populate() -> dict[str, Any]:
    import pkcs11
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.x509.oid import NameOID
    from pkcs11 import Attribute, CertificateType, KeyType, ObjectClass
    from pkcs11.util.ec import encode_named_curve_parameters

    lib = pkcs11.lib(MODULE)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gpytest CA")])
    now = datetime.datetime.now(datetime.UTC)
    private_template = {Attribute.EXTRACTABLE: False, Attribute.SENSITIVE: True}
    p256_params = encode_named_curve_parameters("secp256r1")
    out_keys = []
    serials = {}

    def spki_of(pub: Any, kind: str) -> Any:
        if kind == "rsa":
            n = int.from_bytes(pub[Attribute.MODULUS], "big")
            e = int.from_bytes(pub[Attribute.PUBLIC_EXPONENT], "big")
            return rsa.RSAPublicNumbers(e, n).public_key()
        point = bytes(pub[Attribute.EC_POINT])
        raw = point[2:]  # DER OCTET STRING, short form for these sizes
        if kind == "ed25519":
            return ed25519.Ed25519PublicKey.from_public_bytes(raw)
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)

    def der(pub: Any) -> bytes:
        return bytes(
            pub.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    for spec in TOKENS:
        token = lib.get_token(token_label=spec.label)
        serials[spec.label] = token.serial.decode().strip()
        with token.open(rw=True, user_pin=spec.pin) as session:
            for kind, label, key_id in spec.keys:
                if kind == "rsa":
                    pub, _ = session.generate_keypair(
                        KeyType.RSA,
                        2048,
                        id=key_id,
                        label=label,
                        store=True,
                        private_template=private_template,
                    )
                elif kind == "p256":
                    params = session.create_domain_parameters(
                        KeyType.EC, {Attribute.EC_PARAMS: p256_params}, local=True
                    )
                    pub, _ = params.generate_keypair(
                        id=key_id, label=label, store=True, private_template=private_template
                    )
                else:
                    params = session.create_domain_parameters(
                        KeyType.EC_EDWARDS,
                        {Attribute.EC_PARAMS: bytes.fromhex("06032b6570")},
                        local=True,
                    )
                    pub, _ = params.generate_keypair(
                        id=key_id, label=label, store=True, private_template=private_template
                    )
                public = spki_of(pub, kind)
                cert_der = b""
                if key_id in spec.certified:
                    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, label)])
                    cert = (
                        x509.CertificateBuilder()
                        .subject_name(subject)
                        .issuer_name(ca_name)
                        .public_key(public)
                        .serial_number(x509.random_serial_number())
                        .not_valid_before(now - datetime.timedelta(minutes=5))
                        .not_valid_after(now + datetime.timedelta(days=1))
                        .sign(ca_key, hashes.SHA256())
                    )
                    cert_der = cert.public_bytes(serialization.Encoding.DER)
                    session.create_object(
                        {
                            Attribute.CLASS: ObjectClass.CERTIFICATE,
                            Attribute.CERTIFICATE_TYPE: CertificateType.X_509,
                            Attribute.TOKEN: True,
                            Attribute.LABEL: label,
                            Attribute.ID: key_id,
                            Attribute.SUBJECT: subject.public_bytes(),
                            Attribute.VALUE: cert_der,
                        }
                    )
                out_keys.append(
                    {
                        "token": spec.label,
                        "label": label,
                        "id": key_id.hex(),
                        "spki": der(public).hex(),
                        "cert": cert_der.hex(),
                    }
                )
            if spec is MAIN:
                soft = ec.generate_private_key(ec.SECP256R1())
                scalar = soft.private_numbers().private_value.to_bytes(32, "big")
                point = soft.public_key().public_bytes(
                    serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
                )
                common = {
                    Attribute.TOKEN: True,
                    Attribute.LABEL: SOFT_LABEL,
                    Attribute.ID: SOFT_ID,
                    Attribute.KEY_TYPE: KeyType.EC,
                    Attribute.EC_PARAMS: p256_params,
                }
                session.create_object(
                    {
                        **common,
                        Attribute.CLASS: ObjectClass.PRIVATE_KEY,
                        Attribute.PRIVATE: True,
                        Attribute.SIGN: True,
                        Attribute.SENSITIVE: False,
                        Attribute.EXTRACTABLE: True,
                        Attribute.VALUE: scalar,
                    }
                )
                session.create_object(
                    {
                        **common,
                        Attribute.CLASS: ObjectClass.PUBLIC_KEY,
                        Attribute.VERIFY: True,
                        Attribute.EC_POINT: bytes([0x04, len(point)]) + point,
                    }
                )
                out_keys.append(
                    {
                        "token": spec.label,
                        "label": SOFT_LABEL,
                        "id": SOFT_ID.hex(),
                        "spki": der(soft.public_key()).hex(),
                        "cert": "",
                    }
                )
                soft_private = scalar.hex()
    return {"keys": out_keys, "serials": serials, "soft_private": soft_private}


if __name__ == "__main__" and sys.argv[1:] == ["populate"]:
    print(json.dumps(_populate()))
elif __name__ == "__main__" and sys.argv[1:] == ["import"]:
    _import_key(json.loads(sys.stdin.read()))
