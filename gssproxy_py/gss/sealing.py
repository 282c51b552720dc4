"""Credential handles: sealing exported credentials for a client, and opening them.

`Sealer` loads the handle key file `<state_dir>/handle-keys` and re-reads
it when the file changes on disk (rotation by another process) or
`state_dir` moves. It seals credentials into `GssxCred` handles and opens
them again (`handles.seal` / `open_handle`), bound to the peer uid and to
the service's `handle_scope`. The plaintext is our envelope around
`gss_export_cred`, so long-term material only ever leaves the daemon sealed;
a handle that does not open (other uid or scope, tampered, unknown key,
expired) is logged with the reason and treated as "no credential".
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from gssproxy_py.config.model import Config, Service
from gssproxy_py.gss import api, convert, handles, keyfile
from gssproxy_py.gss.credcache import STAMPS
from gssproxy_py.proto.gss_proxy import GssxCred

__all__ = ["HANDLE_KEYS_FILE", "Sealer", "handle_scope"]

HANDLE_KEYS_FILE = "handle-keys"
#: Envelope of a sealed plaintext: version byte, then the gss_export_cred token.
_ENVELOPE_V1 = b"\x01"

_Log = logging.LoggerAdapter[logging.Logger] | logging.Logger


def handle_scope(service: Service) -> str:
    """What a sealed handle is bound to besides the uid.

    Services naming the same keytab share a scope, others are their own. The
    C gssproxy encrypts handles with the service keytab's key, so a handle
    one service issued works at every service with that keytab, for any
    uid; gssproxy's t_impersonate relies on it (S4U2Self through a
    protocol-transition-only service, S4U2Proxy with the stored result
    through a delegation-only one). We keep that, and unlike gssproxy keep
    the uid binding. The unexpanded `keytab` value is used (without a
    `FILE:` prefix), so renaming a service does not invalidate its handles.
    """
    keytabs = service.cred_store_values("keytab")
    if keytabs:
        value = keytabs[0]
        if value[:5].upper() == "FILE:":
            value = value[5:]
        return f"keytab:{value}"
    return f"service:{service.name}"


@dataclass(slots=True)
class Sealer:
    """The handle keys in force, and sealing and opening with them. Thread-safe."""

    _path: str | None = None
    _stamp: tuple[int, int, int] | None = None
    _keys: keyfile.HandleKeys | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def keys(self, config: Config) -> keyfile.HandleKeys:
        """The keys of `config`'s state_dir, read again when the file changed
        (seen within `credcache.STAT_INTERVAL`)."""
        path = os.path.join(config.globals.state_dir, HANDLE_KEYS_FILE)
        with self._lock:
            stamp = STAMPS.stamp(path)
            if self._keys is None or self._path != path or stamp is None or stamp != self._stamp:
                self._keys = keyfile.load_or_create(Path(path))
                self._path = path
                self._stamp = STAMPS.refresh(path)
            return self._keys

    def seal_creds(
        self, config: Config, service: Service, uid: int, creds: api.Creds
    ) -> tuple[GssxCred, bytes, api.CredInfo]:
        """Describe, export and seal `creds` for this service's scope and uid."""
        info = api.inquire_cred(creds)
        token = api.export_cred(creds)
        expires = info.expires_at()
        blob = handles.seal(
            self.keys(config),
            _ENVELOPE_V1 + token,
            service=handle_scope(service),
            uid=uid,
            not_after=None if expires is None else int(expires),
        )
        return gssx_cred(info, blob), token, info

    def open_blob(
        self, config: Config, service: Service, uid: int, blob: bytes, log: _Log
    ) -> bytes | None:
        """The export token in a sealed handle, or None (logged) if it does not open."""
        if not blob:
            return None
        try:
            plain = handles.open_handle(
                self.keys(config),
                blob,
                service=handle_scope(service),
                uid=uid,
                now=int(time.time()),
            )
        except handles.HandleRejected as exc:
            log.warning(
                "credential handle not honoured (%s): %s; treating as no credential",
                exc.reason,
                exc,
            )
            return None
        if not plain.startswith(_ENVELOPE_V1):
            log.warning("credential handle has an unknown envelope; treating as no credential")
            return None
        return plain[len(_ENVELOPE_V1) :]


def gssx_cred(info: api.CredInfo, blob: bytes) -> GssxCred:
    """The `gssx_cred` a client holds: the description plus the sealed blob."""
    return GssxCred(
        desired_name=convert.gssx_name(info.name),
        elements=convert.gssx_cred_elements(info),
        cred_handle_reference=blob,
        needs_release=False,
    )
