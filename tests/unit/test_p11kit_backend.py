"""The p11-kit view of a service on the token layer, on the scripted fake
module: only the permitted keys with their public keys, policy's forced
attributes, no private component read, signatures through the module
thread with the audit line, and verification in the daemon."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import hashes

from gssproxy_py.config.model import Service
from gssproxy_py.p11kit.attributes import Cka
from gssproxy_py.p11kit.ck import Cko, Ckr
from gssproxy_py.p11kit.model import CkError, VirtualToken
from gssproxy_py.p11kit.wire import Mechanism
from gssproxy_py.pkcs11.p11kit_backend import P11KitTokens, ServiceTokens
from tests.unit.test_pkcs11_token import Env, Harness, env

__all__ = ["env"]


@pytest.fixture
def h(env: Env) -> Iterator[Harness]:
    harness = Harness(env)
    yield harness
    harness.close()


def svc_of(h: Harness, service: str) -> Service:
    svc = h.config.service(service)
    assert svc is not None
    return svc


def _view(h: Harness, service: str) -> ServiceTokens:
    return P11KitTokens(h.backend).view(svc_of(h, service), "uid 1 pid 2 program /x")


def _tokens(h: Harness, view: ServiceTokens) -> tuple[VirtualToken, ...]:
    return h.loop.run_until_complete(view.tokens())


def test_only_permitted_keys_and_their_public_keys(h: Harness) -> None:
    (token,) = _tokens(h, _view(h, "limited"))
    assert token.label == "main" and token.serial == "0001"
    seen = sorted((o.object_class.name, o.label) for o in token.objects)
    assert seen == [
        ("PRIVATE_KEY", "ed"),
        ("PRIVATE_KEY", "p256"),
        ("PUBLIC_KEY", "ed"),
        ("PUBLIC_KEY", "p256"),
    ]
    assert 0x1041 in token.mechanisms and 0x40 not in token.mechanisms  # no RSA key here


def test_private_keys_read_sensitive_whatever_the_token_says(h: Harness) -> None:
    (token,) = _tokens(h, _view(h, "signer"))
    soft = next(o for o in token.objects if o.label == "soft" and o.object_class is Cko.PRIVATE_KEY)
    a = soft.attributes
    assert a[Cka.SENSITIVE] is True and a[Cka.EXTRACTABLE] is False
    assert a[Cka.ALWAYS_AUTHENTICATE] is False and a[Cka.MODIFIABLE] is False
    assert Cka.VALUE not in a and Cka.VALUE in soft.sensitive


def test_sign_through_the_module_thread_with_an_audit_line(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    view = _view(h, "limited")
    (token,) = _tokens(h, view)
    key = next(o for o in token.objects if o.label == "p256" and o.object_class is Cko.PRIVATE_KEY)
    pub = next(o for o in token.objects if o.label == "p256" and o.object_class is Cko.PUBLIC_KEY)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(b"message")
    d = digest.finalize()
    mech = Mechanism(0x1041)
    assert view.output_length(key, mech) == 64
    with caplog.at_level(logging.INFO, logger="gssproxy_py.pkcs11.p11kit"):
        raw = h.loop.run_until_complete(view.sign(key, mech, d))
    assert "p11kit sign: uid 1 pid 2 program /x service limited key pkcs11:" in caplog.text
    assert "object=p256;type=private CKM_ECDSA, 32 bytes: ok" in caplog.text
    view.verify(pub, mech, d, raw)  # the daemon checks it with the public key
    with pytest.raises(CkError) as bad:
        view.verify(pub, mech, d, raw[:-1] + bytes([raw[-1] ^ 1]))
    assert bad.value.rv == 0xC0
    # Below debug level 1 nothing of the line is built (not even its
    # mechanism name): every signature would pay for it.
    built: list[int] = []
    with (
        caplog.at_level(logging.WARNING, logger="gssproxy_py.pkcs11.p11kit"),
        pytest.MonkeyPatch.context() as mp,
    ):
        mp.setattr("gssproxy_py.pkcs11.p11kit_backend._mech_name", built.append)
        h.loop.run_until_complete(view.sign(key, mech, d))
    assert built == []
    # The same signature and audit line inline (a p11-kit worker process,
    # whose module calls run on its one thread: here the module's thread).
    inline = P11KitTokens(h.backend, inline=True).view(
        svc_of(h, "limited"), "uid 1 pid 2 program /y"
    )
    _, worker = h.backend.service_worker(svc_of(h, "limited"))
    (token,) = _tokens(h, inline)
    key = next(o for o in token.objects if o.label == "p256" and o.object_class is Cko.PRIVATE_KEY)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="gssproxy_py.pkcs11.p11kit"):
        raw = worker.call(inline.operate_inline, True, key, mech, d, timeout=30)
    assert "p11kit sign: uid 1 pid 2 program /y service limited key pkcs11:" in caplog.text
    assert "object=p256;type=private CKM_ECDSA, 32 bytes: ok" in caplog.text
    view.verify(pub, mech, d, raw)
    # Nothing calls the module inline where it has a thread of its own.
    with pytest.raises(RuntimeError):
        view.operate_inline(True, key, mech, d)
    # a key the service may not use is not among its objects at all, and an
    # RSA mechanism does not suit an EC key
    with pytest.raises(CkError) as wrong:
        view.output_length(key, Mechanism(0x40))
    assert wrong.value.rv == Ckr.KEY_TYPE_INCONSISTENT
