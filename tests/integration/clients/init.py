"""Initiator peer: starts a GSSAPI context to a target service.

One-shot:  init.py --target host@localhost
           prints one JSON line with the first token (the `step` reply), exits 0/1.
Serve:     init.py --target host@localhost --serve    JSON-lines loop, see peerlib.py;
           the first `step` request carries no token.

Creds: the default ccache (KRB5CCNAME) unless `--principal alice` names the
initiator.  Flags: replay, sequence, confidentiality, integrity, and mutual unless
`--no-mutual`.
"""

from __future__ import annotations

import argparse
import sys

import gssapi
import peerlib


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", required=True, help="host-based service, e.g. host@localhost")
    ap.add_argument("--principal", help="initiator principal (default: default creds)")
    ap.add_argument("--serve", action="store_true", help="JSON-lines request loop")
    ap.add_argument("--no-mutual", action="store_true", help="do not request mutual auth")
    args = ap.parse_args()

    # The sample programs' usual set; RequirementFlag members OR together to an int.
    flags = (
        gssapi.RequirementFlag.replay_detection
        | gssapi.RequirementFlag.out_of_sequence_detection
        | gssapi.RequirementFlag.confidentiality
        | gssapi.RequirementFlag.integrity
    )
    if not args.no_mutual:
        flags |= gssapi.RequirementFlag.mutual_authentication

    def make_context() -> gssapi.SecurityContext:
        creds = None
        if args.principal:
            name = gssapi.Name(args.principal, gssapi.NameType.kerberos_principal)
            creds = gssapi.Credentials(name=name, usage="initiate")
        target = gssapi.Name(args.target, gssapi.NameType.hostbased_service)
        return gssapi.SecurityContext(name=target, usage="initiate", creds=creds, flags=flags)

    peer = peerlib.Peer(make_context)
    if args.serve:
        return peerlib.serve(peer)
    reply = peer.handle({"op": "step"})
    peerlib.emit(reply)
    return 0 if reply["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
