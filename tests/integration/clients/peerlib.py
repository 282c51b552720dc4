"""The JSON-lines command loop shared by the peer programs accept.py and init.py.

A peer holds one GSSAPI security context.  In `--serve` mode it reads one JSON
request per stdin line and answers with one JSON line on stdout, so a test can
relay tokens between two peers (possibly running as different uids) and then
exercise per-message protection between them.  Binary values are base64.

Requests (`op` plus fields) and successful replies (always `"ok": true`):
    step        token?                -> token?, complete, [context info when complete]
    info                              -> complete, initiator, target, mech, flags, lifetime
    wrap        data, encrypt=true    -> token, encrypted
    unwrap      token                 -> data, encrypted
    get_mic     data                  -> token
    verify_mic  data, token           -> {}
    whoami                            -> uid, gid, euid, egid, groups, env
    quit                              -> {} and the program exits
A failure is `{"ok": false, "error": str, "type": str, "major": int?, "minor": int?}`.

Only python-gssapi and the stdlib are used: these run with the repo venv python
as arbitrary uids, outside pytest.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import gssapi


def b64e(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def b64d(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def error_reply(exc: BaseException) -> dict[str, Any]:
    reply: dict[str, Any] = {"ok": False, "error": str(exc), "type": type(exc).__name__}
    # GSSError carries the major/minor status codes; tests match on them.
    for attr, key in (("maj_code", "major"), ("min_code", "minor")):
        if hasattr(exc, attr):
            reply[key] = getattr(exc, attr)
    return reply


def context_info(ctx: gssapi.SecurityContext) -> dict[str, Any]:
    info: dict[str, Any] = {"complete": bool(ctx.complete)}
    if not ctx.complete:
        return info
    info["initiator"] = str(ctx.initiator_name)
    info["target"] = str(ctx.target_name)
    info["mech"] = str(ctx.mech)
    info["flags"] = sorted(f.name for f in ctx.actual_flags)
    info["lifetime"] = ctx.lifetime
    return info


class Peer:
    """Dispatches requests against one context, created lazily by make_context."""

    def __init__(self, make_context: Callable[[], gssapi.SecurityContext]) -> None:
        self._make_context = make_context
        self._ctx: gssapi.SecurityContext | None = None

    @property
    def ctx(self) -> gssapi.SecurityContext:
        if self._ctx is None:
            self._ctx = self._make_context()
        return self._ctx

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        try:
            method = getattr(self, f"op_{op}")
        except AttributeError:
            return {"ok": False, "error": f"unknown op {op!r}", "type": "ProtocolError"}
        try:
            return {"ok": True, **method(req)}
        except Exception as exc:  # any failure is data for the test, not a crash
            return error_reply(exc)

    def op_step(self, req: dict[str, Any]) -> dict[str, Any]:
        token = req.get("token")
        out = self.ctx.step(None if token is None else b64d(token))
        return {"token": b64e(out), **context_info(self.ctx)}

    def op_info(self, req: dict[str, Any]) -> dict[str, Any]:
        return context_info(self.ctx)

    def op_wrap(self, req: dict[str, Any]) -> dict[str, Any]:
        res = self.ctx.wrap(b64d(req["data"]), bool(req.get("encrypt", True)))
        return {"token": b64e(res.message), "encrypted": bool(res.encrypted)}

    def op_unwrap(self, req: dict[str, Any]) -> dict[str, Any]:
        res = self.ctx.unwrap(b64d(req["token"]))
        return {"data": b64e(res.message), "encrypted": bool(res.encrypted)}

    def op_get_mic(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"token": b64e(self.ctx.get_signature(b64d(req["data"])))}

    def op_verify_mic(self, req: dict[str, Any]) -> dict[str, Any]:
        self.ctx.verify_signature(b64d(req["data"]), b64d(req["token"]))
        return {}

    def op_whoami(self, req: dict[str, Any]) -> dict[str, Any]:
        return {
            "uid": os.getuid(),
            "gid": os.getgid(),
            "euid": os.geteuid(),
            "egid": os.getegid(),
            "groups": os.getgroups(),
            "env": dict(os.environ),
        }

    def op_quit(self, req: dict[str, Any]) -> dict[str, Any]:
        return {}


def emit(reply: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()


def serve(peer: Peer) -> int:
    """Answer JSON requests from stdin until `quit` or EOF."""
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
        except ValueError as exc:
            emit({"ok": False, "error": f"bad JSON: {exc}", "type": "ProtocolError"})
            continue
        emit(peer.handle(req))
        if req.get("op") == "quit":
            break
    return 0
