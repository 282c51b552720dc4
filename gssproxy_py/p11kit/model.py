"""What one p11-kit connection sees, and what it asks of the daemon.

A `VirtualToken` is a snapshot of one real token as policy shows it to a
service: its identity, the mechanisms served, and only the objects the
service may see (each permitted private key, its public key and its
certificate), with the attribute values it may read. The `Backend` is the
service's access to the real token for the operations that need the key
(sign, decrypt) and for verification; `gssproxy_py.pkcs11.p11kit_backend`
implements it, unit tests fake it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from gssproxy_py.p11kit.attributes import AttrValue
from gssproxy_py.p11kit.ck import Cko, Ckr
from gssproxy_py.p11kit.wire import Mechanism

__all__ = ["Backend", "CkError", "InlineBackend", "MechanismInfo", "VirtualObject", "VirtualToken"]


class CkError(Exception):
    """A call's CK_RV other than CKR_OK."""

    def __init__(self, rv: Ckr | int, why: str = "") -> None:
        self.rv = int(rv)
        self.why = why
        super().__init__(f"{_rv_name(self.rv)}{': ' + why if why else ''}")


def _rv_name(rv: int) -> str:
    try:
        return f"CKR_{Ckr(rv).name}"
    except ValueError:
        return f"CKR {rv:#x}"


@dataclass(frozen=True, slots=True)
class MechanismInfo:
    """CK_MECHANISM_INFO."""

    min_key_size: int
    max_key_size: int
    flags: int


@dataclass(frozen=True, slots=True)
class VirtualObject:
    """One object as served. `attributes` are the readable values;
    `sensitive` the types answered CKR_ATTRIBUTE_SENSITIVE (every other
    type not in `attributes` is CKR_ATTRIBUTE_TYPE_INVALID). `key_ref` is
    the backend's name for a private key (None for other objects)."""

    object_class: Cko
    attributes: Mapping[int, AttrValue]
    sensitive: frozenset[int] = frozenset()
    key_ref: object = field(default=None, compare=False)

    @property
    def label(self) -> str:
        raw = self.attributes.get(0x3)
        return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else ""


@dataclass(frozen=True, slots=True)
class VirtualToken:
    """One token as a service sees it (the slot it sits in is ours)."""

    label: str
    manufacturer: str
    model: str
    serial: str
    objects: tuple[VirtualObject, ...]
    mechanisms: Mapping[int, MechanismInfo]
    hardware_version: tuple[int, int] = (0, 0)
    firmware_version: tuple[int, int] = (0, 0)


class Backend(Protocol):
    """The matched service's access to its real tokens."""

    async def tokens(self) -> tuple[VirtualToken, ...]:
        """The service's tokens now (a snapshot; may be cached briefly)."""
        ...

    async def sign(self, key: VirtualObject, mechanism: Mechanism, data: bytes) -> bytes:
        """Sign with a private key of `tokens()`; CkError on failure."""
        ...

    async def decrypt(self, key: VirtualObject, mechanism: Mechanism, data: bytes) -> bytes:
        """Decrypt with a private key of `tokens()`; CkError on failure."""
        ...

    def verify(
        self, key: VirtualObject, mechanism: Mechanism, data: bytes, signature: bytes
    ) -> None:
        """Check a signature with a public key (no token needed); CkError
        (CKR_SIGNATURE_INVALID...) if it does not verify."""
        ...

    def output_length(self, key: VirtualObject, mechanism: Mechanism) -> int:
        """The length of a signature (or the largest plaintext) `mechanism`
        makes with `key`; CkError if the two do not suit each other."""
        ...

    def allows(self, mechanism: int) -> bool:
        """Whether the service's policy allows the mechanism at all."""
        ...

    def note_login(self, user_type: int) -> None:
        """A consumer called C_Login (its PIN was not used): log it."""
        ...


class InlineBackend(Protocol):
    """A backend whose token calls run on the calling thread (the p11-kit
    worker process's `ServiceTokens`): the hot calls make their output
    without a coroutine."""

    def operate_inline(
        self, sign: bool, key: VirtualObject, mechanism: Mechanism, data: bytes
    ) -> bytes:
        """`Backend.sign` (sign true) or `Backend.decrypt`, done at once."""
        ...
