"""The TOKEN_SIGN RPC program (0x2F5E5001): handlers, per-service access,
and the `ProgramService` the server registers.

`build_token_sign(config)` reads every configured PIN source at once (it
is called at daemon start, before any privilege drop, so root-only PIN files
and root's keyrings are readable), starts one worker thread per PKCS#11
module and queues a warm-up on each (load, log in, list keys) so that a
wrong PIN or a missing module shows in the log at startup. None of that can
make startup fail: a service whose module, token or PIN is unusable gets
that failure as the status of each of its calls, and the others keep
working. On reload the PIN sources are read again and every token is logged
in afresh with the new PINs; a PIN source that cannot be read any more
(say, a root-only file after the daemon dropped privileges) keeps the PIN
read before, with a warning, as long as the source itself did not change.

Which keys a service may use: its `pkcs11_uri` values, each selecting
tokens (token/slot/library attributes) and private keys on them
(object/id/type). A SIGN names its key with a URI too; the key must be the
only one it selects among the keys the service may use.

Replies never contain a PIN, and log lines name PIN sources only; private
key bytes are never read (CKA_VALUE is only read from certificates).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from gssproxy_py.config.model import Config, PinSource, Service
from gssproxy_py.pkcs11.adapter import Library, load_library
from gssproxy_py.pkcs11.errors import PinSourceError, Refusal, SignFailure, TokenFailure
from gssproxy_py.pkcs11.keys import KeyKind, KeyRecord
from gssproxy_py.pkcs11.mechanisms import MECHANISMS, mechanisms_for_key
from gssproxy_py.pkcs11.pin import Pin, read_pin
from gssproxy_py.pkcs11.pkinit import (
    DEFAULT_TIMEOUT,
    PkinitRequest,
    obtain_tgt,
    obtain_tgt_sync,
    token_identity,
)
from gssproxy_py.pkcs11.token import ModuleWorker, ServiceAccess, TokenProblem
from gssproxy_py.pkcs11.uri import ObjectType, Pkcs11Uri, UriError, parse_uri
from gssproxy_py.proto.token_sign import (
    TOKEN_SIGN_PROGRAM,
    TOKEN_SIGN_V1,
    TS_LIST_KEYS,
    TS_SIGN,
    TsFailure,
    TsKeyInfo,
    TsKeyList,
    TsKeyType,
    TsListKeysOutcomeFailure,
    TsListKeysOutcomeListing,
    TsListKeysRes,
    TsSignArg,
    TsSignInputDigest,
    TsSignOutcomeFailure,
    TsSignOutcomeSignature,
    TsSignRes,
    TsStatus,
    TsTokenProblem,
)
from gssproxy_py.rpc.dispatch import CallInfo, Handler, ProgramService

__all__ = ["TokenSignBackend", "build_token_sign", "parse_service_uris", "token_sign_service"]

log = logging.getLogger("gssproxy_py.pkcs11")

#: Default bound on one blocking PKINIT: the login check queued behind the
#: module's other calls, then the child (itself bounded by DEFAULT_TIMEOUT).
PKINIT_TIME_LIMIT: Final = 2 * DEFAULT_TIMEOUT

_KEY_TYPES: Final = {
    KeyKind.RSA: TsKeyType.TS_KEY_RSA,
    KeyKind.EC: TsKeyType.TS_KEY_EC,
    KeyKind.EC_EDWARDS: TsKeyType.TS_KEY_EDWARDS,
}


def _not_configured(message: str) -> Refusal:
    return Refusal(TsStatus.TS_NOT_CONFIGURED, message)


def parse_service_uris(service: Service, module: str) -> tuple[Pkcs11Uri, ...]:
    """A service's `pkcs11_uri` values, parsed and checked for what a
    service URI may not carry; Refusal(TS_NOT_CONFIGURED) otherwise."""
    uris = []
    for n, text in enumerate(service.pkcs11_uris, 1):
        where = f"service {service.name}: pkcs11_uri #{n}"
        try:
            uri = parse_uri(text)
        except UriError as e:
            raise _not_configured(f"{where}: {e}") from None
        if uri.pin_value is not None or uri.pin_source is not None:
            raise _not_configured(f"{where}: must not carry a PIN; use pkcs11_pin")
        if uri.vendor:
            raise _not_configured(
                f"{where}: vendor attributes ({uri.vendor[0][0]}) are not supported"
            )
        if uri.module_name is not None:
            raise _not_configured(f"{where}: module-name is not supported; use pkcs11_module")
        if uri.module_path is not None and os.path.realpath(uri.module_path) != module:
            raise _not_configured(f"{where}: module-path differs from pkcs11_module")
        if uri.type not in (None, ObjectType.PRIVATE):
            raise _not_configured(f"{where}: type={uri.type} selects no private keys")
        uris.append(uri)
    return tuple(uris)


@functools.lru_cache(maxsize=256)
def _parsed_client_uri(raw: bytes) -> Pkcs11Uri:
    """A SIGN's key URI parsed and checked on its own (clients repeat the
    same few URIs, so the result is kept; a Refusal is not)."""
    try:
        uri = parse_uri(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise Refusal(TsStatus.TS_BAD_INPUT, "the key URI is not UTF-8") from None
    except UriError as e:
        raise Refusal(TsStatus.TS_BAD_INPUT, f"bad key URI: {e}") from None
    if uri.pin_value is not None or uri.pin_source is not None:
        raise Refusal(TsStatus.TS_BAD_INPUT, "the key URI carries a PIN; the daemon supplies PINs")
    if uri.vendor:
        raise Refusal(TsStatus.TS_BAD_INPUT, f"unsupported vendor attribute {uri.vendor[0][0]}")
    if uri.type not in (None, ObjectType.PRIVATE):
        raise Refusal(TsStatus.TS_BAD_INPUT, f"type={uri.type} does not name a private key")
    return uri


def _client_uri(access: ServiceAccess, raw: bytes) -> Pkcs11Uri:
    """The key URI of a SIGN call, parsed and vetted; Refusal if unusable."""
    uri = _parsed_client_uri(raw)
    # Only a hint from the client: the service has one module, and a URI
    # naming another cannot select any of its keys.
    if uri.module_path is not None and os.path.normpath(uri.module_path) not in (
        access.module,
        access.configured_module,
    ):
        raise Refusal(
            TsStatus.TS_UNKNOWN_KEY, f"service {access.service} keeps its keys in another module"
        )
    return uri


@dataclass(frozen=True, slots=True)
class _Entry:
    """A configured token service: its access, or why it has none."""

    access: ServiceAccess | None
    problem: SignFailure | None
    pin_source: PinSource | None


class TokenSignBackend:
    """The services' token access, one `ModuleWorker` per module. Create it,
    `configure()` it with each configuration, `close()` it at the end."""

    def __init__(
        self,
        *,
        loader: Callable[[str], Library] = load_library,
        pin_reader: Callable[[PinSource], Pin] = read_pin,
    ) -> None:
        self._loader = loader
        self._pin_reader = pin_reader
        self._entries: dict[str, _Entry] = {}
        self._workers: dict[str, ModuleWorker] = {}

    # -- configuration -----------------------------------------------------

    def configure(self, config: Config) -> None:
        """Adopt a configuration: read PINs, start, reset or retire workers,
        and queue a warm-up. Never raises for a bad service."""
        entries: dict[str, _Entry] = {}
        for service in config.services:
            entry = self._entry(service)
            if entry is not None:
                entries[service.name] = entry
                if entry.problem is not None:
                    log.error("pkcs11: %s", entry.problem)
        by_module: dict[str, list[ServiceAccess]] = {}
        for entry in entries.values():
            if entry.access is not None:
                by_module.setdefault(entry.access.module, []).append(entry.access)
        for module, worker in list(self._workers.items()):
            if module not in by_module:
                worker.retire()
                del self._workers[module]
        for module, accesses in by_module.items():
            existing = self._workers.get(module)
            if existing is None:
                worker = self._workers[module] = ModuleWorker(module, self._loader)
            else:
                worker = existing
                worker.submit(worker.reset)
            worker.submit(worker.warm, tuple(accesses))
        self._entries = entries

    def _entry(self, service: Service) -> _Entry | None:
        if service.pkcs11_module is None and not service.pkcs11_uris and not service.pkcs11_pin:
            return None
        pin_source = service.pkcs11_pin
        if service.pkcs11_module is None:
            why = f"service {service.name}: pkcs11_uri/pkcs11_pin given without pkcs11_module"
            return _Entry(None, _not_configured(why), pin_source)
        if not service.pkcs11_uris:
            why = f"service {service.name}: no pkcs11_uri, so it may use no keys"
            return _Entry(None, _not_configured(why), pin_source)
        module = os.path.realpath(service.pkcs11_module)
        try:
            uris = parse_service_uris(service, module)
        except Refusal as r:
            return _Entry(None, r, pin_source)
        pin, pin_problem = self._read_pin(service)
        access = ServiceAccess(
            service.name,
            module,
            uris,
            pin,
            pin_problem,
            service.pkcs11_module,
            service.pkcs11_session_keys,
        )
        return _Entry(access, None, pin_source)

    def _read_pin(self, service: Service) -> tuple[Pin | None, str | None]:
        source = service.pkcs11_pin
        if source is None:
            return None, None
        try:
            return self._pin_reader(source), None
        except PinSourceError as e:
            old = self._entries.get(service.name)
            kept = old.access.pin if old is not None and old.access is not None else None
            if kept is not None and old is not None and old.pin_source == source:
                log.warning("pkcs11: service %s: %s; keeping the PIN read before", service.name, e)
                return kept, None
            log.error("pkcs11: service %s: %s", service.name, e)
            return None, str(e)

    def _access(self, service: Service) -> ServiceAccess:
        entry = self._entries.get(service.name)
        if entry is None:
            raise _not_configured(f"service {service.name} has no pkcs11_module")
        if entry.problem is not None:
            raise entry.problem
        assert entry.access is not None
        return entry.access

    def _worker(self, access: ServiceAccess) -> ModuleWorker:
        worker = self._workers.get(access.module)
        if worker is None:  # configure() always makes one; a reload race at worst
            raise TokenFailure(TsStatus.TS_TOKEN_UNAVAILABLE, f"{access.module} is not loaded")
        return worker

    def service_worker(self, service: Service) -> tuple[ServiceAccess, ModuleWorker]:
        """The service's token access and its module's worker; SignFailure
        (Refusal, TokenFailure) if the service has none."""
        access = self._access(service)
        return access, self._worker(access)

    # -- calls ---------------------------------------------------------------

    async def list_keys(self, service: Service) -> tuple[list[KeyRecord], list[TokenProblem]]:
        access = self._access(service)
        worker = self._worker(access)
        return await worker.run(worker.list_keys, access)

    async def sign(self, service: Service, arg: TsSignArg) -> bytes:
        access = self._access(service)
        uri = _client_uri(access, arg.key_uri)
        spec = MECHANISMS[arg.mechanism]
        is_digest = isinstance(arg.input, TsSignInputDigest)
        data = arg.input.digest if isinstance(arg.input, TsSignInputDigest) else arg.input.message
        worker = self._worker(access)
        return await worker.run(worker.sign, access, uri, spec, data, is_digest)

    # -- PKINIT --------------------------------------------------------------

    async def pkinit_tgt(
        self,
        service: Service,
        *,
        ccache: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        """Get a TGT for the service's `krb5_principal` by PKINIT with the
        key its first `pkcs11_uri` selects, the PIN from its `pkcs11_pin`,
        into `ccache` (default: the service's `cred_store` ccache, which must
        then be a fixed name). PkinitError or SignFailure when it cannot,
        with a message fit for the client (never the PIN). For callers on an
        event loop; the GSS layer uses `pkinit_tgt_blocking`."""
        access, pin, worker, request = self._pkinit_request(service, ccache)
        await worker.run(worker.check_login, access)
        await obtain_tgt(request, pin, env=env)
        _log_pkinit(service, request)

    def pkinit_tgt_blocking(
        self,
        service: Service,
        *,
        ccache: str | None = None,
        env: dict[str, str] | None = None,
        time_limit: float = PKINIT_TIME_LIMIT,
    ) -> None:
        """`pkinit_tgt` for a thread that may block: the login check goes to
        the module's executor and this thread waits for it, then the PKINIT
        child runs from this thread; TimeoutError when the login check or the
        child takes the thread past `time_limit` s.

        This is `gssproxy_py.gss.pkinit_creds.TgtSource`: the GSS layer
        calls it from its executor threads (no event loop in between) before
        it initiates as such a service without a valid TGT; the server hands
        this backend to the GSS program (`server/programs.py`)."""
        deadline = time.monotonic() + time_limit
        access, pin, worker, request = self._pkinit_request(service, ccache)
        worker.call(worker.check_login, access, timeout=time_limit)
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"PKINIT for {request.principal}: no time left after the login")
        obtain_tgt_sync(request, pin, env=env, time_limit=min(DEFAULT_TIMEOUT, left))
        _log_pkinit(service, request)

    def _pkinit_request(
        self, service: Service, ccache: str | None
    ) -> tuple[ServiceAccess, Pin, ModuleWorker, PkinitRequest]:
        """What a PKINIT for `service` needs, or the reason it cannot run:
        the token access, the PIN, the module's worker and the request."""
        access = self._access(service)
        if service.krb5_principal is None:
            raise _not_configured(f"service {service.name}: PKINIT needs krb5_principal")
        if ccache is None:
            names = service.cred_store_values("ccache")
            if not names or "%" in names[0]:
                raise _not_configured(
                    f"service {service.name}: PKINIT needs a cred_store ccache without %U/%u"
                )
            ccache = names[0]
        if access.pin is None:
            why = access.pin_problem or f"service {service.name} has no pkcs11_pin"
            raise TokenFailure(TsStatus.TS_PIN_ERROR, why)
        # The caller logs in through our own worker first (check_login): a
        # wrong or locked PIN is then reported precisely (libkrb5 only says
        # "preauthentication failed") and falls under the never-retry rule
        # instead of reaching the token again from the child.
        request = PkinitRequest(
            principal=service.krb5_principal,
            identity=token_identity(access.configured_module or access.module, access.uris[0]),
            ccache=ccache,
        )
        return access, access.pin, self._worker(access), request

    # -- shutdown ------------------------------------------------------------

    def sessions(self) -> list[tuple[str, str, bool]]:
        """(module, token, session open) for every token of every module."""
        return [
            (module, token, is_open)
            for module, worker in sorted(self._workers.items())
            for token, is_open in worker.sessions()
        ]

    def close(self) -> None:
        """Retire every worker (sessions closed, modules unloaded, in order
        after queued work); does not wait."""
        for worker in self._workers.values():
            worker.retire()
        self._workers.clear()
        self._entries = {}

    async def aclose(self) -> None:
        """close(), then wait for the worker threads to end."""
        workers = list(self._workers.values())
        self.close()
        for worker in workers:
            await asyncio.to_thread(worker.join)


def _log_pkinit(service: Service, request: PkinitRequest) -> None:
    log.info(
        "pkcs11: service %s: PKINIT TGT for %s in %s",
        service.name,
        request.principal,
        request.ccache,
    )


# -- wire conversion ---------------------------------------------------------


def _failure(f: SignFailure) -> TsFailure:
    return f.to_wire()


def _key_info(k: KeyRecord) -> TsKeyInfo | None:
    key_type = _KEY_TYPES.get(k.kind)
    if key_type is None:
        return None
    return TsKeyInfo(
        uri=k.uri.encode("utf-8"),
        key_type=key_type,
        key_bits=k.bits,
        curve=k.curve.display.encode("utf-8"),
        spki=k.spki or b"",
        certificate=k.certificate or b"",
        mechanisms=mechanisms_for_key(k.kind, k.curve, k.bits),
    )


def _problem(p: TokenProblem) -> TsTokenProblem:
    return TsTokenProblem(
        token=p.where.encode("utf-8"), status=p.failure.status, failure=_failure(p.failure)
    )


def _no_service(info: CallInfo) -> Refusal:
    reason = info.no_match_reason or "no configured service matches this caller"
    return Refusal(TsStatus.TS_NO_SERVICE, reason)


def _internal(info: CallInfo, what: str) -> TokenFailure:
    info.log.exception("TOKEN_SIGN %s failed unexpectedly", what)
    return TokenFailure(TsStatus.TS_INTERNAL_ERROR, f"{what} failed inside the daemon; see its log")


def _handlers(backend: TokenSignBackend) -> dict[tuple[int, int], Handler]:
    async def list_keys(info: CallInfo, _arg: None) -> TsListKeysRes:
        try:
            if info.service is None:
                raise _no_service(info)
            keys, problems = await backend.list_keys(info.service)
        except SignFailure as e:
            info.log.info("TS_LIST_KEYS: %s: %s", e.status.name, e)
            return TsListKeysRes(TsListKeysOutcomeFailure(e.status, _failure(e)))
        except Exception:
            bug = _internal(info, "TS_LIST_KEYS")
            return TsListKeysRes(TsListKeysOutcomeFailure(bug.status, _failure(bug)))
        infos = [i for i in map(_key_info, keys) if i is not None]
        if not infos and problems:
            # Nothing to show and something broke: the failure is the answer.
            first = problems[0].failure
            info.log.info("TS_LIST_KEYS: %s: %s", first.status.name, first)
            return TsListKeysRes(TsListKeysOutcomeFailure(first.status, _failure(first)))
        info.log.info(
            "TS_LIST_KEYS for service %s: %d key(s), %d token problem(s)",
            info.service.name,
            len(infos),
            len(problems),
        )
        listing = TsKeyList(keys=tuple(infos), problems=tuple(map(_problem, problems)))
        return TsListKeysRes(TsListKeysOutcomeListing(listing))

    async def sign(info: CallInfo, arg: TsSignArg) -> TsSignRes:
        spec = MECHANISMS[arg.mechanism]
        kind = "digest" if isinstance(arg.input, TsSignInputDigest) else "message"
        try:
            if info.service is None:
                raise _no_service(info)
            signature = await backend.sign(info.service, arg)
        except SignFailure as e:
            info.log.info("TS_SIGN %s (%s): %s: %s", spec.name, kind, e.status.name, e)
            return TsSignRes(TsSignOutcomeFailure(e.status, _failure(e)))
        except Exception:
            bug = _internal(info, "TS_SIGN")
            return TsSignRes(TsSignOutcomeFailure(bug.status, _failure(bug)))
        info.log.info(
            "TS_SIGN for service %s: %s over a %s: OK", info.service.name, spec.name, kind
        )
        return TsSignRes(TsSignOutcomeSignature(signature))

    return {(TOKEN_SIGN_V1, TS_LIST_KEYS): list_keys, (TOKEN_SIGN_V1, TS_SIGN): sign}


def build_token_sign(
    config: Config,
    *,
    loader: Callable[[str], Library] = load_library,
    pin_reader: Callable[[PinSource], Pin] = read_pin,
) -> tuple[ProgramService, TokenSignBackend]:
    """The TOKEN_SIGN program and the backend behind it. Reads the PIN
    sources now; the service's `reload` and `close` are the backend's. The
    keyword arguments exist for tests (a scripted module, fixed PINs)."""
    backend = TokenSignBackend(loader=loader, pin_reader=pin_reader)
    backend.configure(config)
    service = ProgramService(
        program=TOKEN_SIGN_PROGRAM,
        handlers=_handlers(backend),
        reload=backend.configure,
        close=backend.close,
    )
    return service, backend


def token_sign_service(config: Config) -> ProgramService:
    """The TOKEN_SIGN program alone. The server itself calls
    `build_token_sign`, so that the GSS program shares the backend (PKINIT).

    Its `close` hook retires the module threads without waiting (they finish
    queued work, log out and unload); hold the backend from
    `build_token_sign` to `await backend.aclose()` instead.
    """
    return build_token_sign(config)[0]
