"""PKINIT with a key on a token: a TGT for a service's principal, the daemon
supplying the token PIN without a terminal.

How the PIN gets to libkrb5. `X509_user_identity` (PKCS11:module_name=...
:token=...) cannot carry a PIN, and gss_acquire_cred_with_password only
answers the *password* prompt, not pkinit's "<token> PIN" prompt. What MIT
krb5 (1.12 and later) offers is the responder: krb5_get_init_creds_password
with a responder callback set by krb5_get_init_creds_opt_set_responder.
pkinit defers its token login and asks the "pkinit" question, whose
challenge lists the identities it wants PINs for
(`PKCS11:module_name=M:slotid=N:token=T`) with the token's PIN flags; the
responder answers with krb5_responder_pkinit_set_answer(identity, pin).
That is what this module calls through ctypes (libkrb5.so.3), with
krb5_get_init_creds_opt_set_out_ccache so that the TGT lands in the
service's ccache, from which GSSAPI then initiates contexts as usual.

Why in a child process. pkinit loads the PKCS#11 module itself and calls
C_Initialize(NULL), which fails with CKR_CRYPTOKI_ALREADY_INITIALIZED in a
process that already initialised that module (ours does, on its worker
thread), and its cleanup calls C_Finalize, which would pull the module out
from under the worker. So `obtain_tgt` (and `obtain_tgt_sync`) runs `python -m
gssproxy_py.pkcs11.pkinit` with a clean PKCS#11 state: the request as one
JSON line on stdin, the PIN as the second line (never argv or the
environment), a one-line reason on stderr when it fails.

The responder answers only identities in the configured module, and not at
all when the token says the PIN is locked or one try from locking (the
daemon's rule: an unattended retry must not lock a token).
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Final

from gssproxy_py.errors import LocalError
from gssproxy_py.pkcs11.pin import Pin
from gssproxy_py.pkcs11.uri import Pkcs11Uri

__all__ = [
    "PkinitError",
    "PkinitRequest",
    "get_tgt_here",
    "obtain_tgt",
    "obtain_tgt_sync",
    "token_identity",
    "why_no_tgt",
]

_LIBKRB5: Final = "libkrb5.so.3"
_QUESTION_PKINIT: Final = b"pkinit"
_FLAG_FINAL_TRY: Final = 1 << 1
_FLAG_LOCKED: Final = 1 << 2
_CREDS_SIZE: Final = 512  # sizeof(krb5_creds) is 120 on LP64; room to spare
DEFAULT_TIMEOUT: Final = 30.0


class PkinitError(LocalError):
    """PKINIT did not produce a TGT; the message says why (never the PIN)."""


@dataclass(frozen=True, slots=True)
class PkinitRequest:
    """One TGT to get: for `principal`, with the token identity `identity`
    (an X509_user_identity value), into the ccache `ccache`."""

    principal: str
    identity: str
    ccache: str


def token_identity(module: str, uri: Pkcs11Uri) -> str:
    """The PKCS11 X509_user_identity for the key `uri` selects in `module`.

    MIT's syntax separates fields with ':' and has no escaping, so values
    containing ':' are refused rather than mangled.
    """
    fields = [("module_name", module)]
    if uri.slot_id is not None:
        fields.append(("slotid", str(uri.slot_id)))
    if uri.token is not None:
        fields.append(("token", uri.token))
    if uri.id:
        fields.append(("certid", uri.id.hex()))
    if uri.object is not None:
        fields.append(("certlabel", uri.object))
    for name, value in fields:
        if ":" in value or "\n" in value:
            raise PkinitError(f"{name} {value!r} cannot be written in a PKCS11 identity")
    return "PKCS11:" + ":".join(f"{n}={v}" for n, v in fields)


def _module_of(identity: str) -> str | None:
    for part in identity.removeprefix("PKCS11:").split(":"):
        name, _, value = part.partition("=")
        if name == "module_name":
            return value
    return None


# -- libkrb5 through ctypes (runs in the child) -------------------------------------


class _PkinitIdentity(ctypes.Structure):
    _fields_ = (("identity", ctypes.c_char_p), ("token_flags", ctypes.c_int32))


class _PkinitChallenge(ctypes.Structure):
    _fields_ = (("identities", ctypes.POINTER(ctypes.POINTER(_PkinitIdentity))),)


_RESPONDER = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)


def _krb5() -> ctypes.CDLL:
    lib = ctypes.CDLL(_LIBKRB5)
    vp, cp, i32 = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int32
    pvp = ctypes.POINTER(vp)
    sigs: dict[str, tuple[list[object], object]] = {
        "krb5_init_context": ([pvp], i32),
        "krb5_free_context": ([vp], None),
        "krb5_parse_name": ([vp, cp, pvp], i32),
        "krb5_free_principal": ([vp, vp], None),
        "krb5_get_init_creds_opt_alloc": ([vp, pvp], i32),
        "krb5_get_init_creds_opt_free": ([vp, vp], None),
        "krb5_get_init_creds_opt_set_pa": ([vp, vp, cp, cp], i32),
        "krb5_get_init_creds_opt_set_responder": ([vp, vp, _RESPONDER, vp], i32),
        "krb5_get_init_creds_opt_set_out_ccache": ([vp, vp, vp], i32),
        "krb5_cc_resolve": ([vp, cp, pvp], i32),
        "krb5_cc_close": ([vp, vp], i32),
        "krb5_get_init_creds_password": ([vp, vp, vp, cp, vp, vp, i32, cp, vp], i32),
        "krb5_free_cred_contents": ([vp, vp], None),
        "krb5_get_error_message": ([vp, i32], vp),
        "krb5_free_error_message": ([vp, vp], None),
        "krb5_responder_list_questions": ([vp, vp], ctypes.POINTER(cp)),
        "krb5_responder_pkinit_get_challenge": (
            [vp, vp, ctypes.POINTER(ctypes.POINTER(_PkinitChallenge))],
            i32,
        ),
        "krb5_responder_pkinit_set_answer": ([vp, vp, cp, cp], i32),
        "krb5_responder_pkinit_challenge_free": (
            [vp, vp, ctypes.POINTER(_PkinitChallenge)],
            None,
        ),
    }
    for name, (args, res) in sigs.items():
        fn = getattr(lib, name)
        fn.argtypes = args
        fn.restype = res
    return lib


class _Responder:
    """The responder callback's state: what it was asked, what it answered."""

    def __init__(self, lib: ctypes.CDLL, module: str | None, pin: Pin) -> None:
        self.lib = lib
        self.module = module
        self.pin = pin
        self.asked: list[str] = []
        self.answered: list[str] = []
        self.refused: str | None = None
        self.callback = _RESPONDER(self._respond)

    def _respond(self, ctx: int | None, _data: int | None, rctx: int | None) -> int:
        try:
            return self._answer(ctx, rctx)
        except Exception as e:  # never let an exception unwind through C
            self.refused = f"responder failed: {e}"
            return 0

    def _answer(self, ctx: int | None, rctx: int | None) -> int:
        lib = self.lib
        questions = lib.krb5_responder_list_questions(ctx, rctx)
        i = 0
        while questions and questions[i] is not None:
            self.asked.append(questions[i].decode("utf-8", "replace"))
            i += 1
        if _QUESTION_PKINIT.decode() not in self.asked:
            return 0
        chl = ctypes.POINTER(_PkinitChallenge)()
        code = lib.krb5_responder_pkinit_get_challenge(ctx, rctx, ctypes.byref(chl))
        if code or not chl:
            self.refused = "could not read the pkinit challenge"
            return 0
        try:
            ids = chl.contents.identities
            n = 0
            while ids and ids[n]:
                ident = ids[n].contents
                n += 1
                name = (ident.identity or b"").decode("utf-8", "replace")
                if self.module is not None and _module_of(name) != self.module:
                    continue
                if ident.token_flags & _FLAG_LOCKED:
                    self.refused = f"{name}: the token's user PIN is locked"
                    continue
                if ident.token_flags & _FLAG_FINAL_TRY:
                    self.refused = f"{name}: one more wrong PIN would lock the token; not trying"
                    continue
                lib.krb5_responder_pkinit_set_answer(
                    ctx, rctx, ident.identity, self.pin.reveal().encode("utf-8")
                )
                self.answered.append(name)
        finally:
            lib.krb5_responder_pkinit_challenge_free(ctx, rctx, chl)
        return 0


class _Context:
    """A krb5 context and what `get_tgt_here` makes in it, freed by `close`."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib
        self.ctx = ctypes.c_void_p()
        code = lib.krb5_init_context(ctypes.byref(self.ctx))
        if code:
            raise PkinitError(f"krb5_init_context failed ({code})")
        self.princ = ctypes.c_void_p()
        self.opt = ctypes.c_void_p()
        self.cc = ctypes.c_void_p()
        self.creds = ctypes.create_string_buffer(_CREDS_SIZE)
        self.got_creds = False

    def error(self, what: str, code: int) -> PkinitError:
        """`what`, then libkrb5's own text for `code`."""
        ptr = self.lib.krb5_get_error_message(self.ctx, code)
        text = ctypes.string_at(ptr).decode("utf-8", "replace") if ptr else str(code)
        if ptr:
            self.lib.krb5_free_error_message(self.ctx, ptr)
        return PkinitError(f"{what}: {text}")

    def check(self, what: str, code: int) -> None:
        if code:
            raise self.error(what, code)

    def prepare(self, request: PkinitRequest, responder: _Responder) -> None:
        """The principal, and options that ask pkinit for the token identity,
        answer its PIN question with `responder` and store the TGT in the
        request's ccache."""
        lib, ctx, ref = self.lib, self.ctx, ctypes.byref
        principal = request.principal.encode()
        self.check(
            f"principal {request.principal!r}", lib.krb5_parse_name(ctx, principal, ref(self.princ))
        )
        self.check(
            "krb5_get_init_creds_opt_alloc", lib.krb5_get_init_creds_opt_alloc(ctx, ref(self.opt))
        )
        identity = request.identity.encode()
        self.check(
            "X509_user_identity",
            lib.krb5_get_init_creds_opt_set_pa(ctx, self.opt, b"X509_user_identity", identity),
        )
        self.check(
            "krb5_get_init_creds_opt_set_responder",
            lib.krb5_get_init_creds_opt_set_responder(ctx, self.opt, responder.callback, None),
        )
        self.check(
            f"ccache {request.ccache!r}",
            lib.krb5_cc_resolve(ctx, request.ccache.encode(), ref(self.cc)),
        )
        self.check(
            "krb5_get_init_creds_opt_set_out_ccache",
            lib.krb5_get_init_creds_opt_set_out_ccache(ctx, self.opt, self.cc),
        )

    def get_init_creds(self) -> int:
        code: int = self.lib.krb5_get_init_creds_password(
            self.ctx, self.creds, self.princ, None, None, None, 0, None, self.opt
        )
        self.got_creds = code == 0
        return code

    def close(self) -> None:
        lib, ctx = self.lib, self.ctx
        if self.got_creds:
            lib.krb5_free_cred_contents(ctx, self.creds)
        if self.cc:
            lib.krb5_cc_close(ctx, self.cc)
        if self.opt:
            lib.krb5_get_init_creds_opt_free(ctx, self.opt)
        if self.princ:
            lib.krb5_free_principal(ctx, self.princ)
        lib.krb5_free_context(ctx)


def why_no_tgt(
    principal: str, *, refused: str | None, asked: Sequence[str], answered: Sequence[str]
) -> tuple[str, bool]:
    """Why krb5_get_init_creds_password failed, from what the responder was
    asked and answered: the message, and whether libkrb5's own error text
    belongs after it (not when our responder refused, which says why)."""
    if refused:
        return f"PKINIT for {principal}: {refused}", False
    if _QUESTION_PKINIT.decode() not in asked:
        return (
            f"PKINIT for {principal} was not attempted (no pkinit question; "
            "does the principal require preauthentication and the KDC offer PKINIT?)",
            True,
        )
    if not answered:
        return f"PKINIT for {principal}: no identity in the module", True
    # pkinit reports a failed C_Login, a certificate the KDC refuses and the
    # like all as "preauthentication failed".
    return (
        f"PKINIT for {principal} with {', '.join(answered)} "
        "(PIN supplied; a wrong PIN or a certificate the KDC does not accept end here)",
        True,
    )


def get_tgt_here(request: PkinitRequest, pin: Pin) -> None:
    """Get the TGT in this process. Only safe where the PKCS#11 module is not
    loaded yet (the child); `obtain_tgt` and `obtain_tgt_sync` are the
    daemon's entry points."""
    lib = _krb5()
    k = _Context(lib)
    try:
        responder = _Responder(lib, _module_of(request.identity), pin)
        k.prepare(request, responder)
        code = k.get_init_creds()
        if code:
            why, krb5_text = why_no_tgt(
                request.principal,
                refused=responder.refused,
                asked=responder.asked,
                answered=responder.answered,
            )
            raise k.error(why, code) if krb5_text else PkinitError(why)
    finally:
        k.close()


# -- the daemon's side ------------------------------------------------------------


def _child_argv() -> list[str]:
    # -P: `-m` alone puts the working directory first on sys.path (a daemon
    # run with -i from a directory others can write would import theirs).
    return [sys.executable, "-P", "-m", "gssproxy_py.pkcs11.pkinit"]


def _child_input(request: PkinitRequest, pin: Pin) -> bytes:
    return (json.dumps(asdict(request)) + "\n" + pin.reveal() + "\n").encode("utf-8")


def _too_slow(request: PkinitRequest, limit: float) -> PkinitError:
    return PkinitError(f"PKINIT for {request.principal} took longer than {limit:g} s")


def _result(returncode: int, stderr: bytes) -> None:
    if returncode == 0:
        return
    lines = stderr.decode("utf-8", "replace").strip().splitlines()
    raise PkinitError(lines[-1] if lines else f"the PKINIT helper exited {returncode}")


async def obtain_tgt(
    request: PkinitRequest,
    pin: Pin,
    *,
    env: dict[str, str] | None = None,
    time_limit: float = DEFAULT_TIMEOUT,
) -> None:
    """Get a TGT into `request.ccache` with PKINIT from the token, in a
    child process; PkinitError with the reason if it fails."""
    proc = await asyncio.create_subprocess_exec(
        *_child_argv(),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(_child_input(request, pin)), time_limit)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise _too_slow(request, time_limit) from None
    _result(proc.returncode or 0, err)


def obtain_tgt_sync(
    request: PkinitRequest,
    pin: Pin,
    *,
    env: dict[str, str] | None = None,
    time_limit: float = DEFAULT_TIMEOUT,
) -> None:
    """obtain_tgt for a thread that may block (a GSS executor thread; never
    an event loop's)."""
    try:
        proc = subprocess.run(
            _child_argv(),
            input=_child_input(request, pin),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            timeout=time_limit,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise _too_slow(request, time_limit) from None
    _result(proc.returncode, proc.stderr)


def _child_main() -> int:
    request_line = sys.stdin.readline()
    pin_line = sys.stdin.readline()
    try:
        request = PkinitRequest(**json.loads(request_line))
        pin = Pin(pin_line.removesuffix("\n"), "stdin")
        get_tgt_here(request, pin)
    except (PkinitError, ValueError, TypeError) as e:
        print(str(e), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    os.umask(0o077)  # a FILE: ccache created here is the service's secret
    sys.exit(_child_main())
