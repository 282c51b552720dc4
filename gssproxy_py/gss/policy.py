"""Pure policy decisions: whose credentials a request gets, and what it may do with them.

This is gssproxy's `gp_get_cred_environment` / `gp_add_krb5_creds` logic,
with its service-driven impersonation (S4U2Self for the caller's user name
when `impersonate` is set and the usage may initiate), without any GSSAPI
calls, so it can be tested
on its own:

* `narrow_usage`: a caller's cred_usage against the service's;
* `decide_cred_environment`: the target uid, whether the service keytab
  acts for the caller, which name is requested, and whether the service
  impersonates the uid's user (S4U2Self);
* `build_store`: the `cred_store` for one acquisition (`%U`/`%u` expanded,
  `client_keytab` from `keytab` for the service identity, a private MEMORY
  ccache when none is configured);
* `filter_req_flags`, `may_impersonate_name`, `constrained_delegation_allowed`,
  `store_cred_target`: the remaining gates;
* `explain_acquire_failure` / `explaining`: why acquiring failed, in terms of
  the files the cred_store names for that uid (for the daemon log).
"""

from __future__ import annotations

import os
import pwd
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from gssproxy_py.config.expand import UnknownUserError, expand_cred_store
from gssproxy_py.config.model import CredUsage, Service
from gssproxy_py.gss.status import (
    EACCES,
    EINVAL,
    ENOENT,
    GSS_S_BAD_NAME,
    GSS_S_CREDENTIALS_EXPIRED,
    GSS_S_FAILURE,
    GSS_S_NO_CRED,
    GSS_S_UNAUTHORIZED,
    KRB5KDC_ERR_C_PRINCIPAL_UNKNOWN,
    NO_CREDENTIALS_CODES,
    GssFailure,
)
from gssproxy_py.vocab import oids

__all__ = [
    "CredRequest",
    "NameSpec",
    "build_store",
    "constrained_delegation_allowed",
    "decide_cred_environment",
    "explain_acquire_failure",
    "explaining",
    "filter_req_flags",
    "keytab_files",
    "may_impersonate_name",
    "narrow_usage",
    "needs_user_name",
    "store_cred_target",
]

_U32_MAX = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class NameSpec:
    """A name as the client sent it: display bytes plus type, or an exported name."""

    value: bytes
    name_type: bytes  # gssx_OID bytes; empty = GSS_C_NO_OID

    @property
    def is_uid_name(self) -> bool:
        return self.name_type in (oids.NT_STRING_UID_NAME, oids.NT_MACHINE_UID_NAME)

    def uid(self) -> int:
        """The uid a STRING_UID / MACHINE_UID name carries (EINVAL if it carries none)."""
        raw = self.value
        try:
            if self.name_type == oids.NT_MACHINE_UID_NAME and len(raw) == 4 and not raw.isdigit():
                # The binary form is a host-order uid_t.
                uid = int.from_bytes(raw, "little")
            else:
                text = raw.rstrip(b"\0").decode("ascii")
                if not text.isdigit():
                    raise ValueError(text)
                uid = int(text)
        except (UnicodeDecodeError, ValueError):
            raise GssFailure(GSS_S_BAD_NAME, EINVAL, "uid name does not hold a uid") from None
        if uid > _U32_MAX:
            raise GssFailure(GSS_S_BAD_NAME, EINVAL, "uid name out of range")
        return uid


@dataclass(frozen=True, slots=True)
class CredRequest:
    """What to acquire for one request, decided from service, peer and arguments."""

    target_uid: int
    #: the service's own identity (keytab, also as client_keytab) acts for the caller
    use_service_keytab: bool
    #: the name to request (None = the store's default principal)
    name: NameSpec | None
    usage: CredUsage
    #: service-driven S4U2Self: `name` is the user to impersonate
    impersonate: bool = False


def narrow_usage(service_usage: CredUsage, requested: int) -> CredUsage:
    """The caller's usage, narrowed to the service's; a conflict is EACCES.

    MIT defines GSS_S_CRED_UNAVAIL as GSS_S_FAILURE, which is what gssproxy
    answers here.
    """
    try:
        wanted = CredUsage(requested)
    except ValueError:
        raise GssFailure(GSS_S_FAILURE, EINVAL, f"invalid cred_usage {requested}") from None
    if service_usage is CredUsage.BOTH or wanted is service_usage:
        return wanted
    if wanted is CredUsage.BOTH:
        return service_usage
    raise GssFailure(
        GSS_S_FAILURE,
        EACCES,
        f"service allows only {service_usage.name.lower()} credentials, "
        f"{wanted.name.lower()} requested",
    )


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, OverflowError):
        raise GssFailure(GSS_S_FAILURE, ENOENT, f"uid {uid} has no local user name") from None


def _is_user_request(service: Service, peer_uid: int, desired: NameSpec | None) -> bool:
    """Does the request act for a user rather than as the service itself?"""
    if desired is not None and service.trusted and service.euid == peer_uid:
        # A trusted service naming a uid acts for that uid's user.
        return desired.is_uid_name
    return peer_uid != service.euid


def needs_user_name(
    service: Service, peer_uid: int, desired: NameSpec | None, usage: CredUsage
) -> bool:
    """Will `decide_cred_environment` look a user name up (NSS, may wait)?"""
    return (
        service.impersonate
        and usage is not CredUsage.ACCEPT
        and _is_user_request(service, peer_uid, desired)
    )


def decide_cred_environment(
    service: Service,
    peer_uid: int,
    desired: NameSpec | None,
    usage: CredUsage,
    *,
    user_name: Callable[[int], str] = _user_name,
) -> CredRequest:
    """gssproxy's credential environment decision (`gp_get_cred_environment`).

    A trusted service calling as its own euid may name another uid
    (`GSS_C_NT_STRING_UID_NAME`/`MACHINE_UID_NAME`) or, naming nobody, use the
    service keytab; a caller of another uid is a user request for its own
    uid; with `impersonate` and a usage that may initiate, a user request is
    served from the service keytab by S4U2Self for the uid's user name.
    """
    trusted_self = service.trusted and service.euid == peer_uid
    target_uid = peer_uid
    name = desired
    user_request = _is_user_request(service, peer_uid, desired)
    if desired is not None:
        if trusted_self and desired.is_uid_name:
            # A trusted service (nfsd's rpc.gssd) acts for the uid it names.
            target_uid = desired.uid()
            name = None
        use_keytab = not user_request
    else:
        use_keytab = trusted_self
    impersonate = False
    if user_request and service.impersonate and usage is not CredUsage.ACCEPT:
        use_keytab = True
        impersonate = True
        name = NameSpec(user_name(target_uid).encode("utf-8"), oids.NT_USER_NAME)
    if use_keytab and name is None and service.krb5_principal:
        name = NameSpec(service.krb5_principal.encode("utf-8"), oids.NT_KRB5_PRINCIPAL)
    return CredRequest(
        target_uid=target_uid,
        use_service_keytab=use_keytab,
        name=name,
        usage=usage,
        impersonate=impersonate,
    )


def private_ccache_name() -> str:
    """A fresh MEMORY ccache name for one acquisition (gssproxy's internal_<tid>)."""
    return f"MEMORY:gssproxy-py-{secrets.token_hex(8)}"


def build_store(
    service: Service, request: CredRequest, *, private_ccache: str | None = None
) -> dict[str, str]:
    """The cred_store for one acquisition; values `%U`/`%u`-expanded for the target uid.

    The first value of a repeated key wins, as in MIT's own lookup.
    """
    try:
        pairs = expand_cred_store(service.cred_store, request.target_uid)
    except UnknownUserError as exc:
        raise GssFailure(GSS_S_FAILURE, ENOENT, str(exc)) from None
    store: dict[str, str] = {}
    for key, value in pairs:
        store.setdefault(key, value)
    if request.use_service_keytab and "keytab" in store:
        # So the service identity can initiate too (e.g. nfs client mounts).
        store["client_keytab"] = store["keytab"]
    if "ccache" not in store:
        store["ccache"] = private_ccache or private_ccache_name()
    return store


def keytab_files(store: Mapping[str, str]) -> tuple[str, ...]:
    """File paths of the keytabs in a store, for change detection (FILE/WRFILE or bare)."""
    paths: list[str] = []
    for key in ("keytab", "client_keytab"):
        value = store.get(key)
        if not value:
            continue
        kind, sep, rest = value.partition(":")
        if not sep:
            path = value
        elif kind.upper() in ("FILE", "WRFILE"):
            path = rest
        else:
            continue
        if path and path not in paths:
            paths.append(path)
    return tuple(paths)


def filter_req_flags(service: Service, req_flags: int) -> int:
    """init req_flags with `filter_flags` removed and `enforce_flags` added."""
    return (req_flags & ~service.filter_flags & 0xFFFFFFFFFFFFFFFF) | service.enforce_flags


def may_impersonate_name(service: Service) -> None:
    """Gate for `acquire_type = impersonate_name` (client-driven S4U2Self)."""
    if not (service.allow_protocol_transition or service.trusted):
        raise GssFailure(
            GSS_S_UNAUTHORIZED,
            EACCES,
            "protocol transition (S4U2Self) is not allowed for this service",
        )


def _strip_realm(principal: str) -> tuple[str, str]:
    # The last unescaped '@' separates the realm.
    i = len(principal) - 1
    while i >= 0:
        if principal[i] == "@" and (i == 0 or principal[i - 1] != "\\"):
            return principal[:i], principal[i + 1 :]
        i -= 1
    return principal, ""


def constrained_delegation_allowed(
    service: Service, impersonator: str | None, target: str | None
) -> None:
    """gssproxy's `gp_cred_allowed`: S4U2Proxy with an impersonated cred.

    Trusted, impersonating or constrained-delegation services may use such a
    cred towards anyone (the KDC still decides). Otherwise a cred obtained by
    impersonation may only be used towards the impersonator itself.
    """
    if service.trusted or service.impersonate or service.allow_constrained_delegation:
        return
    if not impersonator:
        return
    if target is not None:
        imp_name, imp_realm = _strip_realm(impersonator)
        tgt_name, tgt_realm = _strip_realm(target)
        if imp_name == tgt_name and (not tgt_realm or tgt_realm == imp_realm):
            return
    raise GssFailure(
        GSS_S_UNAUTHORIZED,
        EACCES,
        "constrained delegation with an impersonated credential is not allowed for this service",
    )


def store_cred_target(service: Service, peer_uid: int, usage: CredUsage) -> dict[str, str]:
    """Where STORE_CRED may write, or GSS_S_UNAUTHORIZED.

    Our rule (gssproxy only stubs STORE_CRED): the service must configure a
    `ccache` in `cred_store`, and that ccache must be per-user (`%U`/`%u` in
    its value) unless the caller is the service's own euid. A shared ccache
    would otherwise let one user plant credentials that later requests of
    other users pick up. Only initiator credentials are stored.
    """
    templates = service.cred_store_values("ccache")
    if not templates:
        raise GssFailure(
            GSS_S_UNAUTHORIZED, EACCES, "the service has no ccache to store credentials into"
        )
    template = templates[0]
    per_user = "%U" in template or "%u" in template
    if not per_user and peer_uid != service.euid:
        raise GssFailure(
            GSS_S_UNAUTHORIZED,
            EACCES,
            "the service ccache is shared; only its own euid may store into it",
        )
    if usage is CredUsage.ACCEPT:
        raise GssFailure(GSS_S_UNAUTHORIZED, EACCES, "only initiator credentials can be stored")
    try:
        (pair,) = expand_cred_store((("ccache", template),), peer_uid)
    except UnknownUserError as exc:
        raise GssFailure(GSS_S_FAILURE, ENOENT, str(exc)) from None
    return {"ccache": pair[1]}


# -- why an acquisition failed ---------------------------------------------------


def _file_of(value: str) -> str | None:
    """The path of a FILE ccache/keytab name (or a bare path); None for other types."""
    kind, sep, rest = value.partition(":")
    if not sep or kind.startswith("/"):
        return value
    return rest if kind.upper() in ("FILE", "WRFILE") else None


def _first_values(service: Service, uid: int) -> dict[str, str] | None:
    """The service's cred_store for `uid`, first value of each key (None: no such user)."""
    try:
        pairs = expand_cred_store(service.cred_store, uid)
    except UnknownUserError:
        return None
    store: dict[str, str] = {}
    for key, value in pairs:
        store.setdefault(key, value)
    return store


def _keytab_of(store: Mapping[str, str], own: bool) -> str | None:
    """The keytab an acquisition used: the service's own (or its client
    keytab) when acting as the service, else the client keytab."""
    if own:
        return store.get("keytab") or store.get("client_keytab")
    return store.get("client_keytab")


def _keytab_fact(keytab: str, kind: str, exists: Callable[[str], bool]) -> str:
    path = _file_of(keytab)
    if path is not None and not exists(path):
        return f"the {kind} {path} does not exist"
    return f"the {kind} {keytab} holds no usable key"


def _ccache_fact(ccache: str, expired: bool, exists: Callable[[str], bool]) -> str:
    path = _file_of(ccache)
    if path is not None and not exists(path):
        return f"the ccache {ccache} does not exist"
    if expired:
        return f"the credentials in the ccache {ccache} have expired"
    return f"the ccache {ccache} holds no usable credentials"


def explain_acquire_failure(
    failure: GssFailure,
    service: Service,
    request: CredRequest,
    *,
    exists: Callable[[str], bool] = os.path.exists,
) -> str | None:
    """Why acquiring for `request` failed, naming the keytab and ccache of its uid.

    Covers the store having nothing usable (missing, empty or expired files)
    and a client keytab naming a principal the KDC does not know; None for
    anything else (`status.explain_failure` may still know the code).
    """
    minor = failure.minor & 0xFFFFFFFF
    routine = failure.major & 0xFF0000
    expired = routine == GSS_S_CREDENTIALS_EXPIRED
    unknown_client = minor == KRB5KDC_ERR_C_PRINCIPAL_UNKNOWN
    nothing = minor in NO_CREDENTIALS_CODES and routine in (GSS_S_NO_CRED, GSS_S_FAILURE)
    if not (expired or unknown_client or nothing):
        return None
    store = _first_values(service, request.target_uid)
    if store is None:
        return None
    own = request.use_service_keytab
    keytab_key = "keytab" if own else "client_keytab"
    keytab = _keytab_of(store, own)
    ccache = store.get("ccache")
    who = f"uid {request.target_uid}"
    keytab_kind = "keytab" if own else "client keytab"
    if unknown_client:
        if keytab is None:
            return None
        return (
            f"principal unknown to the KDC ({failure.message}): it comes from the "
            f"{keytab_kind} {keytab} of {who}; re-create the principal or replace that keytab"
        )
    facts = [_keytab_fact(keytab, keytab_kind, exists)] if keytab is not None else []
    if ccache is not None:
        facts.append(_ccache_fact(ccache, expired, exists))
    if not facts:
        return (
            f"no credentials for {who}: service '{service.name}' has neither "
            f"{keytab_key} nor ccache in its cred_store"
        )
    head = "credentials expired" if expired else "no credentials"
    return f"{head} for {who} (service '{service.name}'): {'; '.join(facts)}"


class explaining:  # noqa: N801 - used as a context manager, like contextlib's
    """Let a `GssFailure` raised inside say why, via `explain_acquire_failure`.

    A class, not a `contextmanager` generator: it wraps every acquisition,
    and a generator-based manager costs several Python calls on each.
    """

    __slots__ = ("request", "service")

    def __init__(self, service: Service, request: CredRequest) -> None:
        self.service = service
        self.request = request

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, failure: BaseException | None, tb: object
    ) -> Literal[False]:
        if isinstance(failure, GssFailure) and failure.explanation is None:
            failure.explanation = explain_acquire_failure(failure, self.service, self.request)
        return False  # the failure goes on
