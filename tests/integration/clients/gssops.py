"""A scriptable GSSAPI client: named credentials and contexts, driven in JSON lines.

The integration tests run this as an unprivileged uid with the interposer
environment, so every call below goes through proxymech.so to a GSS-Proxy
daemon (or fails). It covers what gssproxy's own C test programs do
(t_acquire, t_impersonate, t_names) with python-gssapi, plus gss_localname
through ctypes (python-gssapi does not bind it).

    gssops.py --serve          JSON-lines loop (requests below)
    gssops.py OPS_JSON         run a JSON list of requests, print one JSON
                               line per reply, stop at the first failure;
                               exit status 0 if all succeeded

Requests (`op` plus fields); objects are kept under the names given in `as`,
`cred` and `ctx`:

    acquire      as, name?, name_type?, usage=initiate, store?   -> name, lifetime
    impersonate  as, cred, user, name_type=user, usage=initiate  -> name
    store        cred, usage=initiate, store?, overwrite=true, default=true
    release      cred
    init         ctx, target, cred?, token?, flags?, name_type=hostbased
                                                                 -> token, complete, ...
    accept       ctx, token, cred?                               -> token, complete, initiator
    localname    name, name_type=principal, mech=krb5            -> localname
    accept_localname  token  (t_names: accept, then gss_localname of the initiator,
                              both in ctypes)                    -> token, localname
    quit

`store` maps cred-store keys to values (gss_acquire_cred_from /
gss_store_cred_into); without it the plain calls are used. Name types:
user, principal, hostbased. Flags: mutual, deleg, replay, sequence, conf, integ.
A failure is peerlib's `{"ok": false, "error", "type", "major"?, "minor"?}`.
"""

from __future__ import annotations

import ctypes
import json
import sys
from typing import Any

import gssapi
import gssapi.raw as graw
import peerlib

NAME_TYPES = {
    "user": gssapi.NameType.user,
    "principal": gssapi.NameType.kerberos_principal,
    "hostbased": gssapi.NameType.hostbased_service,
}
FLAGS = {
    "mutual": gssapi.RequirementFlag.mutual_authentication,
    "deleg": gssapi.RequirementFlag.delegate_to_peer,
    "replay": gssapi.RequirementFlag.replay_detection,
    "sequence": gssapi.RequirementFlag.out_of_sequence_detection,
    "conf": gssapi.RequirementFlag.confidentiality,
    "integ": gssapi.RequirementFlag.integrity,
}
KRB5 = gssapi.MechType.kerberos


def _name(text: str, kind: str) -> gssapi.Name:
    return gssapi.Name(text, NAME_TYPES[kind])


def _store(req: dict[str, Any]) -> dict[bytes, bytes] | None:
    store = req.get("store")
    if store is None:
        return None
    return {k.encode(): v.encode() for k, v in store.items()}


# -- gss_localname through ctypes ------------------------------------------------


class _Buffer(ctypes.Structure):
    _fields_ = [("length", ctypes.c_size_t), ("value", ctypes.c_void_p)]


class _Oid(ctypes.Structure):
    _fields_ = [("length", ctypes.c_uint32), ("elements", ctypes.c_void_p)]


_OIDS = {
    "user": bytes.fromhex("2a864886f71201020101"),
    "principal": bytes.fromhex("2a864886f71201020201"),
    "hostbased": bytes.fromhex("2a864886f71201020104"),
    "krb5": bytes.fromhex("2a864886f712010202"),
    "export": bytes.fromhex("2b0601050604"),
}


class GssCallError(Exception):
    def __init__(self, call: str, major: int, minor: int) -> None:
        super().__init__(f"{call} failed: major 0x{major:08x} minor {minor}")
        self.maj_code = major
        self.min_code = minor


def gss_localname(text: str, kind: str, mech: str | None) -> str:
    lib = ctypes.CDLL("libgssapi_krb5.so.2")
    keep = []

    def oid(der: bytes) -> ctypes.POINTER(_Oid):  # type: ignore[valid-type]
        raw = ctypes.create_string_buffer(der, len(der))
        keep.append(raw)
        o = _Oid(len(der), ctypes.cast(raw, ctypes.c_void_p))
        keep.append(o)
        return ctypes.pointer(o)

    minor = ctypes.c_uint32()
    data = text.encode()
    if kind == "export":
        # RFC 2743 3.2 exported name: 04 01, OID (DER), then the krb5 principal.
        der = b"\x06" + bytes([len(_OIDS["krb5"])]) + _OIDS["krb5"]
        data = b"\x04\x01" + len(der).to_bytes(2, "big") + der + len(data).to_bytes(4, "big") + data
    inbuf = _Buffer(len(data), ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p))
    name = ctypes.c_void_p()
    major = lib.gss_import_name(
        ctypes.byref(minor), ctypes.byref(inbuf), oid(_OIDS[kind]), ctypes.byref(name)
    )
    if major:
        raise GssCallError("gss_import_name", major, minor.value)
    try:
        out = _Buffer()
        major = lib.gss_localname(
            ctypes.byref(minor),
            name,
            oid(_OIDS[mech]) if mech else None,
            ctypes.byref(out),
        )
        if major:
            raise GssCallError("gss_localname", major, minor.value)
        value = ctypes.string_at(out.value, out.length)
        lib.gss_release_buffer(ctypes.byref(minor), ctypes.byref(out))
        return value.decode()
    finally:
        lib.gss_release_name(ctypes.byref(minor), ctypes.byref(name))


def accept_and_localname(token: bytes) -> dict[str, Any]:
    """gssproxy's t_names: accept with default creds, then gss_localname(src_name, NO_OID).

    All in ctypes, because python-gssapi hides the gss_name_t that the
    interposer returns (a remote name, so gss_localname goes to the daemon).
    """
    lib = ctypes.CDLL("libgssapi_krb5.so.2")
    minor = ctypes.c_uint32()
    ctx = ctypes.c_void_p()
    src = ctypes.c_void_p()
    inbuf = _Buffer(len(token), ctypes.cast(ctypes.c_char_p(token), ctypes.c_void_p))
    out = _Buffer()
    major = lib.gss_accept_sec_context(
        ctypes.byref(minor),
        ctypes.byref(ctx),
        None,
        ctypes.byref(inbuf),
        None,
        ctypes.byref(src),
        None,
        ctypes.byref(out),
        None,
        None,
        None,
    )
    if major:
        raise GssCallError("gss_accept_sec_context", major, minor.value)
    try:
        reply = {"token": peerlib.b64e(ctypes.string_at(out.value, out.length) or None)}
        lib.gss_release_buffer(ctypes.byref(minor), ctypes.byref(out))
        local = _Buffer()
        major = lib.gss_localname(ctypes.byref(minor), src, None, ctypes.byref(local))
        if major:
            raise GssCallError("gss_localname", major, minor.value)
        reply["localname"] = ctypes.string_at(local.value, local.length).decode()
        lib.gss_release_buffer(ctypes.byref(minor), ctypes.byref(local))
        return reply
    finally:
        lib.gss_release_name(ctypes.byref(minor), ctypes.byref(src))
        lib.gss_delete_sec_context(ctypes.byref(minor), ctypes.byref(ctx), None)


# -- the dispatcher ----------------------------------------------------------------


class Ops:
    def __init__(self) -> None:
        self.creds: dict[str, Any] = {}
        self.ctxs: dict[str, gssapi.SecurityContext] = {}

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        method = getattr(self, f"op_{op}", None)
        if method is None:
            return {"ok": False, "error": f"unknown op {op!r}", "type": "ProtocolError"}
        try:
            return {"ok": True, "op": op, **method(req)}
        except Exception as exc:  # failures are data for the test
            return {"op": op, **peerlib.error_reply(exc)}

    def _cred(self, req: dict[str, Any]) -> Any:
        key = req.get("cred")
        return None if key is None else self.creds[key]

    def op_acquire(self, req: dict[str, Any]) -> dict[str, Any]:
        name = req.get("name")
        gname = None if name is None else _name(name, req.get("name_type", "principal"))
        usage = req.get("usage", "initiate")
        store = _store(req)
        if store is None:
            creds = gssapi.Credentials(name=gname, usage=usage, mechs=[KRB5])
        else:
            creds = gssapi.Credentials(name=gname, usage=usage, mechs=[KRB5], store=store)
        self.creds[req["as"]] = creds
        return {"name": str(creds.name), "lifetime": creds.lifetime}

    def op_impersonate(self, req: dict[str, Any]) -> dict[str, Any]:
        imp = self.creds[req["cred"]]
        user = _name(req["user"], req.get("name_type", "user"))
        res = graw.acquire_cred_impersonate_name(
            imp, user, mechs=[KRB5], usage=req.get("usage", "initiate")
        )
        creds = gssapi.Credentials(base=res.creds)
        self.creds[req["as"]] = creds
        return {"name": str(creds.name)}

    def op_store(self, req: dict[str, Any]) -> dict[str, Any]:
        creds = self.creds[req["cred"]]
        usage = req.get("usage", "initiate")
        overwrite = bool(req.get("overwrite", True))
        default = bool(req.get("default", True))
        store = _store(req)
        if store is None:
            res = graw.store_cred(
                creds, usage=usage, mech=KRB5, overwrite=overwrite, set_default=default
            )
        else:
            res = graw.store_cred_into(
                store, creds, usage=usage, mech=KRB5, overwrite=overwrite, set_default=default
            )
        return {"usage": res.usage}

    def op_release(self, req: dict[str, Any]) -> dict[str, Any]:
        self.creds.pop(req["cred"], None)
        return {}

    def op_init(self, req: dict[str, Any]) -> dict[str, Any]:
        key = req["ctx"]
        ctx = self.ctxs.get(key)
        if ctx is None:
            flags = [FLAGS[f] for f in req.get("flags", ["mutual"])]
            target = _name(req["target"], req.get("name_type", "hostbased"))
            ctx = gssapi.SecurityContext(
                name=target, usage="initiate", creds=self._cred(req), flags=flags, mech=KRB5
            )
            self.ctxs[key] = ctx
        token = req.get("token")
        out = ctx.step(None if token is None else peerlib.b64d(token))
        return {"token": peerlib.b64e(out), **peerlib.context_info(ctx)}

    def op_accept(self, req: dict[str, Any]) -> dict[str, Any]:
        key = req["ctx"]
        ctx = self.ctxs.get(key)
        if ctx is None:
            ctx = gssapi.SecurityContext(usage="accept", creds=self._cred(req))
            self.ctxs[key] = ctx
        out = ctx.step(peerlib.b64d(req["token"]))
        info = peerlib.context_info(ctx)
        if ctx.complete and ctx.delegated_creds is not None:
            self.creds[f"{key}.deleg"] = ctx.delegated_creds
            info["delegated"] = str(ctx.delegated_creds.name)
        return {"token": peerlib.b64e(out), **info}

    def op_localname(self, req: dict[str, Any]) -> dict[str, Any]:
        mech = req.get("mech", "krb5")
        return {"localname": gss_localname(req["name"], req.get("name_type", "principal"), mech)}

    def op_accept_localname(self, req: dict[str, Any]) -> dict[str, Any]:
        return accept_and_localname(peerlib.b64d(req["token"]))

    def op_quit(self, req: dict[str, Any]) -> dict[str, Any]:
        return {}


def main() -> int:
    ops = Ops()
    if sys.argv[1:2] == ["--serve"]:
        for line in sys.stdin:
            if not line.strip():
                continue
            req = json.loads(line)
            peerlib.emit(ops.handle(req))
            if req.get("op") == "quit":
                break
        return 0
    if len(sys.argv) != 2:
        sys.stderr.write(__doc__ or "")
        return 2
    for req in json.loads(sys.argv[1]):
        reply = ops.handle(req)
        peerlib.emit(reply)
        if not reply["ok"]:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
