"""Initiator credentials from a key on a PKCS#11 token: PKINIT on demand.

A service configured with `pkcs11_module`, `pkcs11_uri`, `pkcs11_pin` *and*
`krb5_principal` initiates Kerberos contexts as `krb5_principal`, whose
private key (and certificate) sit on the token. When such a request finds no
valid TGT in the service's ccache, the daemon gets one by MIT PKINIT with
`X509_user_identity=PKCS11:...`, supplying the token PIN itself, and then
acquires from that ccache as for any configured ccache. The client never
holds a key, a PIN or a ccache; the same token key can also sign through the
TOKEN_SIGN program.

The seam between the two layers:

* `TgtSource` (this module) is the one thing the GSS layer needs from the
  token layer: `pkinit_tgt_blocking(service, ccache=NAME, time_limit=S)`
  puts a fresh TGT for the service's `krb5_principal` into the ccache NAME,
  blocking the calling executor thread, or raises a `GssProxyError` whose
  text is fit for the client (it names the token, the PIN *source*, the
  principal; never a PIN), or `TimeoutError`. The PKCS#11 layer's
  `TokenSignBackend` provides it: it hands its login check to the module's
  executor and waits for it (a wrong PIN is reported as such), then runs
  libkrb5 in a child; no event loop is involved on the way. A source that
  only has the coroutine `pkinit_tgt(service, ccache=NAME)`
  (`CoroutineTgtSource`, such as a stand-in in a test) is run on a private
  event loop of the calling thread instead.
* `server/programs.py` builds the TOKEN_SIGN program first and hands its
  backend to `gss.program.gss_proxy_service(config, tgt_source=...)`, so
  both programs share one backend (one module load, one login per token).
  Without a source (the PKCS#11 layer did not load) a PKINIT request fails
  with a clear GSS status instead of falling through to libkrb5's "No
  credentials cache found".
* `GssEngine.acquire_sealed` asks `PkinitCreds.plan` whether a request is
  one (pure: service options and the credential decision) and, only when the
  acquisition cache misses, calls `PkinitCreds.ensure` before acquiring.

When it applies (`plan`): the service has all four options, the usage
includes INITIATE, it is not an impersonation, and the request acts as the
service itself (the service keytab case, or a peer running as the service's
`euid`) with no name or `krb5_principal` as the name. User requests of an
`allow_any_uid` service are left alone.

Which ccache: the service's `cred_store` `ccache` (expanded); if none is
configured, a daemon-owned `FILE:<state_dir>/pkinit/<service>.ccache`, in a
0700 directory, file 0600, never a file the client can read (the private
MEMORY ccache an acquisition gets otherwise would lose the TGT after every
call, and the PKINIT child cannot write into our memory anyway, so MEMORY
ccaches are refused). FILE ccaches are filled atomically: the child writes a
temporary file next to the target, which is then renamed over it, so a
concurrent acquisition never reads a half-initialised ccache.

When the TGT is (re)fetched (`ensure`): when the ccache holds no
credential for `krb5_principal`, or its lifetime left is at most the
service's `min_lifetime`. One PKINIT per ccache at a time: concurrent
requests wait for it and then find the fresh TGT. A failure is remembered
for `FAILURE_HOLD` seconds and answered again without another attempt (no
child-process storm while the KDC is down; a token PIN the token rejected is
never retried by the token layer anyway until a reload, which also clears
this memory).

Threads: `ensure` blocks, so the engine calls it from its executor threads
only (a PKINIT service never runs inline, see `gss.inline`); called on a
thread whose event loop is running it refuses with a GSS error rather than
block that loop, before the token layer is asked. The token layer's own work
goes to its module's executor (`pkcs11.token.ModuleWorker.call`) and a child
process.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol, runtime_checkable

from gssproxy_py.config.model import Config, CredUsage, Service
from gssproxy_py.errors import GssProxyError
from gssproxy_py.gss import api, policy
from gssproxy_py.gss.status import EACCES, EINVAL, GSS_S_FAILURE, GSS_S_NO_CRED, GssFailure
from gssproxy_py.vocab import oids

__all__ = [
    "FAILURE_HOLD",
    "CoroutineTgtSource",
    "PkinitCreds",
    "PkinitPlan",
    "TgtSource",
    "daemon_ccache",
    "pkinit_configured",
]

log = logging.getLogger("gssproxy_py.gss.pkinit")

#: Seconds a failed PKINIT is answered from memory before it is tried again.
FAILURE_HOLD: Final = 5.0
#: Upper bound on one wait for the token layer (its own child limit is 30 s).
WAIT_LIMIT: Final = 60.0
PKINIT_DIR: Final = "pkinit"


@runtime_checkable
class TgtSource(Protocol):
    """What the GSS layer needs from the token layer (see the module docstring)."""

    def pkinit_tgt_blocking(self, service: Service, *, ccache: str, time_limit: float) -> None:
        """A fresh TGT for `service.krb5_principal` into `ccache`, blocking
        this (executor) thread at most about `time_limit` s; a GssProxyError
        with a client-fit message (no PIN) or TimeoutError when not."""
        ...


class CoroutineTgtSource(Protocol):
    """A TGT source with a coroutine only (a stand-in token layer)."""

    async def pkinit_tgt(self, service: Service, *, ccache: str) -> None:
        """As `TgtSource.pkinit_tgt_blocking`, awaited."""
        ...


def pkinit_configured(service: Service) -> bool:
    """Does the service initiate as `krb5_principal` with a token key?"""
    return bool(
        service.pkcs11_module
        and service.pkcs11_uris
        and service.pkcs11_pin is not None
        and service.krb5_principal
    )


def _names_principal(name: policy.NameSpec, principal: str) -> bool:
    if name.name_type not in (b"", oids.NT_KRB5_PRINCIPAL, oids.NT_USER_NAME):
        return False
    wanted = name.value.rstrip(b"\0").decode("utf-8", "replace")
    bare = principal.rpartition("@")[0] if "@" in principal else principal
    return wanted in (principal, bare)


def daemon_ccache(config: Config, service: Service) -> str:
    """The daemon-owned ccache of a service without a configured one."""
    slug = re.sub(r"[^A-Za-z0-9._-]", "_", service.name)[:64]
    tag = hashlib.sha256(service.name.encode("utf-8")).hexdigest()[:8]
    return f"FILE:{Path(config.globals.state_dir) / PKINIT_DIR / f'{slug}-{tag}.ccache'}"


@dataclass(frozen=True, slots=True)
class PkinitPlan:
    """A request that initiates through PKINIT, and the ccache it uses."""

    service: Service
    principal: str
    ccache: str
    daemon_owned: bool


@dataclass(slots=True)
class _Slot:
    lock: threading.Lock
    failed_at: float = 0.0
    failure: GssFailure | None = None


class PkinitCreds:
    """The GSS side of PKINIT from the token (see the module docstring)."""

    def __init__(self, source: TgtSource | CoroutineTgtSource | None) -> None:
        self.source = source
        self._lock = threading.Lock()
        self._slots: dict[str, _Slot] = {}
        self.obtained = 0  # TGTs fetched (for tests and the log)

    # -- decisions (pure) ------------------------------------------------------

    def plan(
        self, config: Config, service: Service, creq: policy.CredRequest, store: dict[str, str]
    ) -> PkinitPlan | None:
        """The PKINIT plan for an acquisition with `store`, or None when the
        request is not one (then nothing changes)."""
        if not pkinit_configured(service) or creq.usage is CredUsage.ACCEPT or creq.impersonate:
            return None
        if not (creq.use_service_keytab or creq.target_uid == service.euid):
            return None
        principal = service.krb5_principal
        assert principal is not None
        if creq.name is not None and not _names_principal(creq.name, principal):
            return None
        configured = service.cred_store_values("ccache")
        if configured:
            return PkinitPlan(service, principal, store["ccache"], daemon_owned=False)
        return PkinitPlan(service, principal, daemon_ccache(config, service), daemon_owned=True)

    # -- state -----------------------------------------------------------------

    def forget(self) -> None:
        """Drop remembered failures (configuration reloaded)."""
        with self._lock:
            for slot in self._slots.values():
                slot.failure = None

    def _slot(self, ccache: str) -> _Slot:
        with self._lock:
            slot = self._slots.get(ccache)
            if slot is None:
                slot = self._slots[ccache] = _Slot(threading.Lock())
            return slot

    # -- the blocking part (executor threads only) ------------------------------

    def ensure(self, plan: PkinitPlan, log_to: logging.LoggerAdapter[Any] | logging.Logger) -> None:
        """Make sure `plan.ccache` holds a TGT for the principal with more
        than `min_lifetime` left, fetching one by PKINIT if not; GssFailure
        with the reason otherwise."""
        min_life = plan.service.min_lifetime
        if self._lifetime(plan) > min_life:
            return
        slot = self._slot(plan.ccache)
        with slot.lock:
            if self._lifetime(plan) > min_life:
                return  # another request fetched it while we waited
            if slot.failure is not None and time.monotonic() - slot.failed_at < FAILURE_HOLD:
                raise slot.failure
            try:
                self._fetch(plan, log_to)
            except GssFailure as failure:
                slot.failure, slot.failed_at = failure, time.monotonic()
                raise
            slot.failure = None
            self.obtained += 1
        left = self._lifetime(plan)
        if left <= min_life:
            raise GssFailure(
                GSS_S_NO_CRED,
                EACCES,
                f"PKINIT gave {plan.principal} a TGT for {left} s, not more than the "
                f"service's min_lifetime ({min_life} s)",
            )

    def _lifetime(self, plan: PkinitPlan) -> int:
        """Seconds the ccache's credential for the principal has left (0 if none)."""
        if plan.daemon_owned and not os.path.exists(plan.ccache.removeprefix("FILE:")):
            return 0
        try:
            name = api.import_name(plan.principal.encode("utf-8"), oids.NT_KRB5_PRINCIPAL)
            creds = api.acquire_cred_from(
                {"ccache": plan.ccache}, name, CredUsage.INITIATE, oids.KRB5
            )
            info = api.inquire_cred(creds)
        except GssFailure:
            return 0
        times = [e.init_lifetime for e in info.elements if e.mech == oids.KRB5]
        if not times:
            return 0
        return api.INDEFINITE if times[0] == api.INDEFINITE else times[0]

    def _fetch(self, plan: PkinitPlan, log_to: logging.LoggerAdapter[Any] | logging.Logger) -> None:
        what = f"no initiator credential for {plan.principal}"
        if self.source is None:
            raise GssFailure(
                GSS_S_NO_CRED,
                EACCES,
                f"{what}: PKINIT from the token is not available in this process (the "
                "PKCS#11 layer did not load, see the daemon log)",
            )
        kind, sep, path = plan.ccache.partition(":")
        if sep and kind.upper() == "MEMORY":
            raise GssFailure(
                GSS_S_NO_CRED,
                EINVAL,
                f"{what}: PKINIT cannot fill a MEMORY ccache; configure a FILE, DIR or "
                "KEYRING ccache in cred_store, or none",
            )
        file_path = path if sep and kind.upper() == "FILE" else None
        if not sep:
            file_path = plan.ccache  # a bare name is a FILE ccache
        if plan.daemon_owned:
            assert file_path is not None
            _private_dir(Path(file_path).parent)
        target = plan.ccache
        temp: str | None = None
        if file_path is not None:
            temp = f"{file_path}.pkinit-{secrets.token_hex(6)}"
            target = f"FILE:{temp}"
        log_to.info(
            "PKINIT: getting a TGT for %s from the token into %s", plan.principal, plan.ccache
        )
        started = time.monotonic()
        try:
            self._call(self.source, plan.service, target, what)
            if temp is not None and file_path is not None:
                os.chmod(temp, 0o600)
                os.replace(temp, file_path)
                temp = None
        finally:
            if temp is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temp)
        log_to.info(
            "PKINIT: TGT for %s in %s (%.0f ms)",
            plan.principal,
            plan.ccache,
            (time.monotonic() - started) * 1000,
        )

    @staticmethod
    def _call(
        source: TgtSource | CoroutineTgtSource, service: Service, ccache: str, what: str
    ) -> None:
        try:
            _obtain(source, service, ccache)
        except TimeoutError:
            raise GssFailure(
                GSS_S_NO_CRED, 0, f"{what}: PKINIT did not finish within {WAIT_LIMIT:g} s"
            ) from None
        except GssProxyError as e:
            message = f"{what}: PKINIT with the token key: {e}"
            raise GssFailure(GSS_S_NO_CRED, EACCES, message) from e
        except Exception as e:
            log.exception("PKINIT (%s) failed unexpectedly", what)
            raise GssFailure(
                GSS_S_FAILURE, 0, f"{what}: PKINIT failed inside the daemon; see its log"
            ) from e


class _OnTheLoopError(RuntimeError):
    """`ensure` was called on a thread whose event loop runs (a bug of ours)."""


def _obtain(source: TgtSource | CoroutineTgtSource, service: Service, ccache: str) -> None:
    """Ask `source` for the TGT from this thread, which must not be running
    an event loop (blocking it would stop every call the loop serves)."""
    if _loop_running():
        raise _OnTheLoopError("PKINIT asked for on an event loop's thread; it would block it")
    if isinstance(source, TgtSource):
        source.pkinit_tgt_blocking(service, ccache=ccache, time_limit=WAIT_LIMIT)
        return

    async def bounded() -> None:
        await asyncio.wait_for(source.pkinit_tgt(service, ccache=ccache), WAIT_LIMIT)

    asyncio.run(bounded())


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _private_dir(path: Path) -> None:
    """`path` as a directory only the daemon's uid can enter."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if st.st_uid != os.geteuid() or st.st_mode & 0o077:
        os.chmod(path, 0o700)
        if path.stat().st_uid != os.geteuid():
            raise GssFailure(
                GSS_S_FAILURE, EACCES, f"{path} belongs to another user; not storing a TGT there"
            )
