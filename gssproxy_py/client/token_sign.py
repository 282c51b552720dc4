"""A blocking client for the TOKEN_SIGN program (0x2F5E5001): list the keys
the caller's service may use, and sign with one of them.

It rides on the generic `RpcClient` (client/sync.py) and finds the daemon
the way the interposer does: `$GSSPROXY_SOCKET`, else
/var/lib/gssproxy/default.sock, unless a socket path is given.

A failure the daemon reports (no service, key not permitted, wrong PIN...)
is raised as `TokenSignError` with the wire status, the daemon's message and
the CKR name when there is one; RPC and transport failures are the
`RpcClientError` family of client/errors.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType

from gssproxy_py.client.sync import RpcClient
from gssproxy_py.client.wire import DEFAULT_TIMEOUT, default_socket_path
from gssproxy_py.errors import PeerError
from gssproxy_py.proto.token_sign import (
    TOKEN_SIGN_PROGRAM,
    TOKEN_SIGN_V1,
    TS_LIST_KEYS,
    TS_SIGN,
    TsFailure,
    TsKeyType,
    TsListKeysOutcomeFailure,
    TsListKeysRes,
    TsMechanism,
    TsSignArg,
    TsSignInputDigest,
    TsSignInputMessage,
    TsSignOutcomeFailure,
    TsSignRes,
    TsStatus,
)
from gssproxy_py.vocab.token_sign import mechanism_from_name, mechanism_name

__all__ = [
    "KeyInfo",
    "KeyListing",
    "TokenProblemInfo",
    "TokenSignClient",
    "TokenSignError",
    "mechanism_from_name",
]


class TokenSignError(PeerError):
    """The daemon answered with a failure status."""

    def __init__(self, status: TsStatus, message: str, ckr: str = "") -> None:
        self.status = status
        self.message = message
        self.ckr = ckr
        suffix = f" ({ckr})" if ckr else ""
        super().__init__(f"{status.name}: {message}{suffix}")

    @classmethod
    def from_wire(cls, status: TsStatus, failure: TsFailure) -> TokenSignError:
        return cls(
            status,
            failure.message.decode("utf-8", "replace"),
            failure.ckr.decode("ascii", "replace"),
        )


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """One key the caller's service may use."""

    uri: str
    key_type: TsKeyType
    bits: int
    curve: str  # "" for RSA
    spki: bytes  # SubjectPublicKeyInfo DER ("" if the token gave no public key)
    certificate: bytes | None
    mechanisms: tuple[str, ...]  # names, as `--mech` takes them

    @property
    def type_name(self) -> str:
        return {
            TsKeyType.TS_KEY_RSA: "rsa",
            TsKeyType.TS_KEY_EC: "ec",
            TsKeyType.TS_KEY_EDWARDS: "edwards",
        }[self.key_type]


@dataclass(frozen=True, slots=True)
class TokenProblemInfo:
    """A token of the service that could not be listed."""

    token: str
    status: TsStatus
    message: str
    ckr: str


@dataclass(frozen=True, slots=True)
class KeyListing:
    keys: tuple[KeyInfo, ...]
    problems: tuple[TokenProblemInfo, ...]


class TokenSignClient:
    """Calls TOKEN_SIGN v1 on one socket; one connection, reused."""

    def __init__(
        self, socket_path: str | None = None, *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> None:
        self.socket_path = socket_path or default_socket_path()
        self._rpc = RpcClient(self.socket_path, TOKEN_SIGN_PROGRAM, TOKEN_SIGN_V1, timeout)

    def close(self) -> None:
        self._rpc.close()

    def __enter__(self) -> TokenSignClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def ping(self) -> None:
        """Procedure 0: is the daemon there and serving this program?"""
        self._rpc.null()

    def list_keys(self) -> KeyListing:
        res: TsListKeysRes = self._rpc.call(TS_LIST_KEYS, None)
        outcome = res.outcome
        if isinstance(outcome, TsListKeysOutcomeFailure):
            raise TokenSignError.from_wire(outcome.status, outcome.failure)
        listing = outcome.listing
        keys = tuple(
            KeyInfo(
                uri=k.uri.decode("utf-8"),
                key_type=k.key_type,
                bits=k.key_bits,
                curve=k.curve.decode("utf-8"),
                spki=k.spki,
                certificate=k.certificate or None,
                mechanisms=tuple(mechanism_name(m) for m in k.mechanisms),
            )
            for k in listing.keys
        )
        problems = tuple(
            TokenProblemInfo(
                token=p.token.decode("utf-8", "replace"),
                status=p.status,
                message=p.failure.message.decode("utf-8", "replace"),
                ckr=p.failure.ckr.decode("ascii", "replace"),
            )
            for p in listing.problems
        )
        return KeyListing(keys, problems)

    def sign(
        self,
        key_uri: str,
        mechanism: str | TsMechanism,
        data: bytes,
        *,
        digest: bool = False,
    ) -> bytes:
        """Sign `data` (a message, or a digest made with the mechanism's hash
        when `digest`) with the key `key_uri` names."""
        mech = mechanism_from_name(mechanism) if isinstance(mechanism, str) else mechanism
        arg = TsSignArg(
            key_uri=key_uri.encode("utf-8"),
            mechanism=mech,
            input=TsSignInputDigest(data) if digest else TsSignInputMessage(data),
        )
        res: TsSignRes = self._rpc.call(TS_SIGN, arg)
        outcome = res.outcome
        if isinstance(outcome, TsSignOutcomeFailure):
            raise TokenSignError.from_wire(outcome.status, outcome.failure)
        return outcome.signature
