"""The token layer's fast path for repeated SIGNs, on the scripted fake module
of test_pkcs11_token: resolved keys remembered per service, URI and
session (and dropped when stale), and the module thread's batched queue."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from gssproxy_py.pkcs11 import token as token_mod
from gssproxy_py.pkcs11.adapter import ObjectClass, ObjectView
from gssproxy_py.pkcs11.errors import CkrError
from gssproxy_py.pkcs11.mechanisms import PssParams
from gssproxy_py.pkcs11.token import ModuleWorker
from gssproxy_py.proto.token_sign import TsMechanism, TsStatus
from tests.unit import test_pkcs11_token as fake
from tests.unit.test_pkcs11_token import Env, FakeKey, FakeSession, Harness, uri_of

# The fake module's fixtures, used here under the same names.
env = fake.env
h = fake.h

ECDSA = TsMechanism.TS_MECH_ECDSA_SHA256


@pytest.fixture
def searches(monkeypatch: pytest.MonkeyPatch) -> list[ObjectClass]:
    """Every private-key search the fake module sees."""
    seen: list[ObjectClass] = []
    original = FakeSession.objects

    def counting(self: FakeSession, object_class: ObjectClass, **kw: Any) -> list[ObjectView]:
        if object_class is ObjectClass.PRIVATE_KEY:
            seen.append(object_class)
        return original(self, object_class, **kw)

    monkeypatch.setattr(FakeSession, "objects", counting)
    return seen


def test_repeated_signs_search_once(h: Harness, searches: list[ObjectClass]) -> None:
    uri = uri_of(h, "signer", "p256")
    searches.clear()
    for _ in range(5):
        h.ok("signer", uri, ECDSA, b"m")
    assert len(searches) == 1
    # Another service with the same URI resolves for itself.
    h.ok("limited", uri, ECDSA, b"m")
    assert len(searches) == 2


def test_a_deleted_key_is_noticed(
    h: Harness, env: Env, searches: list[ObjectClass], monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = uri_of(h, "signer", "p256")
    h.ok("signer", uri, ECDSA, b"m")
    original = FakeSession.sign

    def stale_handles(
        self: FakeSession, key: ObjectView, mechanism: int, param: PssParams | None, data: bytes
    ) -> bytes:
        if key.handle not in self.token.keys:
            raise CkrError("CKR_KEY_HANDLE_INVALID", "C_Sign")
        return original(self, key, mechanism, param, data)

    monkeypatch.setattr(FakeSession, "sign", stale_handles)
    env.main.keys = [k for k in env.main.keys if k.label != "p256"]
    status, msg, _ = h.failed("signer", uri, ECDSA)
    assert status is TsStatus.TS_UNKNOWN_KEY, msg


def test_entries_expire_and_see_new_keys(
    h: Harness, env: Env, searches: list[ObjectClass], monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = "pkcs11:token=main;object=p256"
    h.ok("signer", uri, ECDSA, b"m")
    searches.clear()
    env.main.keys.append(FakeKey("p256", b"\x09", ec.generate_private_key(ec.SECP256R1())))
    h.ok("signer", uri, ECDSA, b"m")  # remembered: still the one key it found
    assert not searches
    monkeypatch.setattr(token_mod, "RESOLVED_TTL", 0.0)
    h.backend.configure(h.config)  # new entries from now on live 0 s
    h.ok("signer", "pkcs11:token=main;id=%02", ECDSA, b"m")
    time.sleep(0.01)
    status, _, _ = h.failed("signer", uri, ECDSA)
    assert status is TsStatus.TS_AMBIGUOUS_KEY


def test_lost_session_falls_back_and_recovers(
    h: Harness, env: Env, searches: list[ObjectClass]
) -> None:
    uri = uri_of(h, "signer", "p256")
    h.ok("signer", uri, ECDSA, b"m")
    logins = env.main.login_attempts
    env.main.kill_sessions()
    h.ok("signer", uri, ECDSA, b"m")
    assert env.main.login_attempts == logins + 1


def test_reload_drops_the_entries(h: Harness, searches: list[ObjectClass]) -> None:
    uri = uri_of(h, "signer", "p256")
    h.ok("signer", uri, ECDSA, b"m")
    searches.clear()
    h.service.reload(h.config)  # type: ignore[misc]
    h.ok("signer", uri, ECDSA, b"m")
    assert len(searches) >= 1


def _worker() -> ModuleWorker:
    return ModuleWorker("/nonexistent/fake.so", lambda _p: None)  # type: ignore[arg-type,return-value]


def test_queue_keeps_order_and_one_thread() -> None:
    worker = _worker()
    seen: list[tuple[int, str]] = []

    def job(i: int) -> int:
        seen.append((i, threading.current_thread().name))
        if i == 7:
            raise ValueError("seven")
        return i * 2

    async def go() -> list[Any]:
        return await asyncio.gather(
            *(worker.run(job, i) for i in range(50)), return_exceptions=True
        )

    results = asyncio.run(go())
    assert [i for i, _ in seen] == list(range(50))
    assert {name for _, name in seen} == {"pkcs11-fake.so"}
    assert isinstance(results[7], ValueError)
    assert [r for i, r in enumerate(results) if i != 7] == [i * 2 for i in range(50) if i != 7]
    worker.retire()
    worker.join()

    async def late() -> None:
        await worker.run(job, 1)

    with pytest.raises(RuntimeError):
        asyncio.run(late())


def test_a_caller_that_gives_up_does_not_stop_the_thread() -> None:
    worker = _worker()
    gate = threading.Event()

    async def go() -> int:
        slow = asyncio.ensure_future(worker.run(gate.wait, 5))
        await asyncio.sleep(0.01)
        slow.cancel()
        gate.set()
        return await worker.run(lambda: 42)

    assert asyncio.run(go()) == 42
    worker.retire()
    worker.join()
