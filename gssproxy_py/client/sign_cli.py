"""`gssproxy-py-sign`: list token keys and sign with them through the daemon.

    gssproxy-py-sign [--socket PATH] --list
    gssproxy-py-sign [--socket PATH] --key URI --mech NAME
                     [--in FILE] [--out FILE] [--digest]

`--list` prints one line per key the caller's service may use: the key's
URI, then its type and size (`rsa-2048`, `ec-P-256`, `edwards-Ed25519`),
`cert` when the token holds a certificate for it, and the mechanisms it
accepts, separated by tabs. Tokens that could not be listed are reported on
stderr. `--pubkey-dir DIR` also writes each key's public key (PEM) and
certificate (PEM) there, named after its label or id.

Signing reads the message (or, with `--digest`, a binary digest made with
the mechanism's hash, such as `openssl dgst -sha256 -binary`) from `--in`
or stdin and writes the raw signature to `--out` or stdout: PKCS#1 v1.5 or
PSS bytes for RSA, DER for ECDSA, 64 bytes for Ed25519, which is what
`openssl dgst -verify` / `openssl pkeyutl -verify` take.

Mechanisms: rsa-pkcs1-sha256, rsa-pkcs1-sha384, rsa-pkcs1-sha512,
rsa-pss-sha256, rsa-pss-sha384, rsa-pss-sha512, ecdsa-sha256, ecdsa-sha384,
ed25519.

The socket is `--socket`, else $GSSPROXY_SOCKET, else
/var/lib/gssproxy/default.sock, as for the interposer.

Exit status: 0 done; 1 the daemon could not be reached or answered wrongly;
2 the daemon refused the RPC call itself; 3 the daemon refused the request
(no service, key not permitted, wrong PIN...: the status is printed);
64 bad command line.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from typing import Final, NoReturn

from gssproxy_py.client.errors import RpcClientError, RpcRejected
from gssproxy_py.client.token_sign import (
    KeyInfo,
    TokenSignClient,
    TokenSignError,
    mechanism_from_name,
)
from gssproxy_py.client.wire import DEFAULT_TIMEOUT
from gssproxy_py.pkcs11.uri import UriError, parse_uri
from gssproxy_py.proto.token_sign import TsMechanism
from gssproxy_py.vocab.token_sign import MECHANISM_NAMES

EXIT_OK: Final = 0
EXIT_TRANSPORT: Final = 1
EXIT_REJECTED: Final = 2
EXIT_REFUSED: Final = 3
EXIT_USAGE: Final = 64

_MAX_INPUT: Final = 1 << 20  # the daemon's record limit bounds a message anyway


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"{self.prog}: {message}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def _parser() -> _Parser:
    ap = _Parser(
        prog="gssproxy-py-sign",
        description="List PKCS#11 keys and sign with them through gssproxy-py.",
    )
    ap.add_argument("--socket", help="daemon socket (default: $GSSPROXY_SOCKET or the default)")
    ap.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per call")
    what = ap.add_mutually_exclusive_group(required=True)
    what.add_argument("--list", action="store_true", help="list the keys this caller may use")
    what.add_argument("--key", metavar="URI", help="RFC 7512 URI of the key to sign with")
    ap.add_argument(
        "--mech",
        metavar="NAME",
        help="signature mechanism: " + ", ".join(MECHANISM_NAMES.values()),
    )
    ap.add_argument("--in", dest="infile", metavar="FILE", help="input (default: stdin)")
    ap.add_argument("--out", metavar="FILE", help="signature output (default: stdout)")
    ap.add_argument(
        "--digest", action="store_true", help="the input is a binary digest, not the message"
    )
    ap.add_argument(
        "--pubkey-dir", metavar="DIR", help="with --list: write public keys and certificates here"
    )
    return ap


def _describe(k: KeyInfo) -> str:
    size = f"{k.bits}" if not k.curve else k.curve
    fields = [k.uri, f"{k.type_name}-{size}"]
    if k.certificate:
        fields.append("cert")
    fields.append(",".join(k.mechanisms))
    return "\t".join(fields)


def _file_stem(k: KeyInfo, n: int) -> str:
    try:
        uri = parse_uri(k.uri)
    except UriError:
        return f"key{n}"
    name = uri.object or (uri.id.hex() if uri.id else f"key{n}")
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def _write_pubkeys(directory: str, keys: Sequence[KeyInfo]) -> None:
    # Only this option needs cryptography (to check the DER and write PEM):
    # signing and listing do not load it.
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    os.makedirs(directory, exist_ok=True)
    for n, k in enumerate(keys):
        stem = os.path.join(directory, _file_stem(k, n))
        if k.spki:
            pub = serialization.load_der_public_key(k.spki)
            with open(stem + ".pub.pem", "wb") as f:
                f.write(
                    pub.public_bytes(
                        serialization.Encoding.PEM,
                        serialization.PublicFormat.SubjectPublicKeyInfo,
                    )
                )
        if k.certificate:
            cert = x509.load_der_x509_certificate(k.certificate)
            with open(stem + ".crt.pem", "wb") as f:
                f.write(cert.public_bytes(serialization.Encoding.PEM))


def _read_input(path: str | None) -> bytes:
    if path is None or path == "-":
        data = sys.stdin.buffer.read(_MAX_INPUT + 1)
    else:
        with open(path, "rb") as f:
            data = f.read(_MAX_INPUT + 1)
    if len(data) > _MAX_INPUT:
        raise ValueError(f"input larger than {_MAX_INPUT} bytes; sign a digest instead (--digest)")
    return data


def _write_output(path: str | None, data: bytes) -> None:
    if path is None or path == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        with open(path, "wb") as f:
            f.write(data)


def _checked_mechanism(ap: argparse.ArgumentParser, args: argparse.Namespace) -> TsMechanism | None:
    """Refuse option combinations that make no sense; the --mech given, if any."""
    if args.key is not None and args.mech is None:
        ap.error("--key needs --mech")
    if args.list and (args.mech or args.infile or args.out or args.digest):
        ap.error("--list takes no --mech, --in, --out or --digest")
    if args.pubkey_dir and not args.list:
        ap.error("--pubkey-dir goes with --list")
    if args.mech is None:
        return None
    try:
        return mechanism_from_name(args.mech)
    except ValueError as e:
        ap.error(str(e))


def _list(client: TokenSignClient, args: argparse.Namespace) -> int:
    listing = client.list_keys()
    for k in listing.keys:
        print(_describe(k))
    for p in listing.problems:
        ckr = f" ({p.ckr})" if p.ckr else ""
        print(f"{p.token}: {p.status.name}: {p.message}{ckr}", file=sys.stderr)
    if args.pubkey_dir:
        _write_pubkeys(args.pubkey_dir, listing.keys)
    return EXIT_OK


def _sign(client: TokenSignClient, args: argparse.Namespace, mech: TsMechanism) -> int:
    try:
        data = _read_input(args.infile)
    except (OSError, ValueError) as e:
        print(f"gssproxy-py-sign: {e}", file=sys.stderr)
        return EXIT_USAGE
    signature = client.sign(args.key, mech, data, digest=args.digest)
    _write_output(args.out, signature)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    mech = _checked_mechanism(ap, args)
    try:
        with TokenSignClient(args.socket, timeout=args.timeout) as client:
            if args.list:
                return _list(client, args)
            assert mech is not None
            return _sign(client, args, mech)
    except TokenSignError as e:
        print(f"gssproxy-py-sign: {e}", file=sys.stderr)
        return EXIT_REFUSED
    except RpcRejected as e:
        print(f"gssproxy-py-sign: the daemon refused the call: {e}", file=sys.stderr)
        return EXIT_REJECTED
    except RpcClientError as e:
        print(f"gssproxy-py-sign: {e}", file=sys.stderr)
        return EXIT_TRANSPORT
    except OSError as e:
        print(f"gssproxy-py-sign: {e}", file=sys.stderr)
        return EXIT_TRANSPORT


if __name__ == "__main__":
    sys.exit(main())
