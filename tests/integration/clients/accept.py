"""Acceptor peer: accepts a GSSAPI context token with default (or named) creds.

One-shot:  accept.py TOKEN_B64      (or `-` to read the token from stdin)
           prints one JSON line (see peerlib: the `step` reply) and exits 0/1.
Serve:     accept.py --serve        JSON-lines loop, see peerlib.py.

`--service host@localhost` acquires named acceptor creds first (like gss-server
does) instead of using GSS_C_NO_CREDENTIAL.  Run it with the interposer env to
accept through a GSS-Proxy daemon.
"""

from __future__ import annotations

import argparse
import sys

import gssapi
import peerlib


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("token", nargs="?", help="base64 token, or - for stdin")
    ap.add_argument("--serve", action="store_true", help="JSON-lines request loop")
    ap.add_argument("--service", help="acquire creds for this host-based service name")
    args = ap.parse_args()

    def make_context() -> gssapi.SecurityContext:
        creds = None
        if args.service:
            name = gssapi.Name(args.service, gssapi.NameType.hostbased_service)
            creds = gssapi.Credentials(name=name, usage="accept")
        return gssapi.SecurityContext(usage="accept", creds=creds)

    peer = peerlib.Peer(make_context)
    if args.serve:
        return peerlib.serve(peer)
    if args.token is None:
        ap.error("a token (or -) is required without --serve")
    token = sys.stdin.read().strip() if args.token == "-" else args.token
    reply = peer.handle({"op": "step", "token": token})
    peerlib.emit(reply)
    return 0 if reply["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
