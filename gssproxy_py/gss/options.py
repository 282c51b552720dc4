"""The daemon's reading of `gssx_option`s: which exports a call asks for.

The option names and values, and `option`/`find_option`/`has_option`, are the
shared vocabulary in `vocab/gssx_options.py` (re-exported here for the
procedures); lookup is gssproxy's: first option whose bytes equal the name
exactly, length (and so the NUL) included.

`parse_call_options` reads the two kernel options of `call_ctx` into an
`ExportTypes`; an unknown value is a GSS_S_FAILURE/EINVAL, as in gssproxy.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from gssproxy_py.gss.status import EINVAL, GSS_S_FAILURE, GssFailure
from gssproxy_py.proto.gss_proxy import GssxOption
from gssproxy_py.vocab.gssx_options import (
    ACQUIRE_TYPE,
    DEFAULT,
    EXPORTED_CONTEXT_TYPE,
    EXPORTED_CREDS_TYPE,
    IMPERSONATE_NAME,
    KRB5_SET_ALLOWED_ENCTYPE_VALUES,
    KRB5_SET_NO_CI_FLAGS,
    LINUX_CREDS_V1,
    LINUX_LUCID_V1,
    LOCALNAME,
    SYNC_CREDS,
    SYNC_MODIFIED_CREDS,
    find_option,
    has_option,
    option,
)

__all__ = [
    "ACQUIRE_TYPE",
    "DEFAULT",
    "EXPORTED_CONTEXT_TYPE",
    "EXPORTED_CREDS_TYPE",
    "IMPERSONATE_NAME",
    "KRB5_SET_ALLOWED_ENCTYPE_VALUES",
    "KRB5_SET_NO_CI_FLAGS",
    "LINUX_CREDS_V1",
    "LINUX_LUCID_V1",
    "LOCALNAME",
    "SYNC_CREDS",
    "SYNC_MODIFIED_CREDS",
    "ContextExport",
    "CredsExport",
    "ExportTypes",
    "find_option",
    "has_option",
    "option",
    "parse_acquire_type",
    "parse_call_options",
    "wants_sync",
]


class ContextExport(enum.Enum):
    """How an established context goes back to the client."""

    DEFAULT = "default"  # gss_export_sec_context token (MIT mechglue format)
    LINUX_LUCID_V1 = "linux_lucid_v1"  # the kernel's lucid blob


class CredsExport(enum.Enum):
    """Whether the accept reply carries the kernel's uid/gid/groups option."""

    NONE = "none"
    LINUX_CREDS_V1 = "linux_creds_v1"


@dataclass(frozen=True, slots=True)
class ExportTypes:
    context: ContextExport = ContextExport.DEFAULT
    creds: CredsExport = CredsExport.NONE

    @property
    def kernel(self) -> bool:
        """A lucid export means the kernel path, with its stricter rules."""
        return self.context is ContextExport.LINUX_LUCID_V1


def _shown(value: bytes) -> str:
    return value.rstrip(b"\0").decode("utf-8", errors="replace")[:64]


def parse_call_options(options: Iterable[GssxOption]) -> ExportTypes:
    """`exported_context_type` / `exported_creds_type` from `call_ctx.options`."""
    opts = tuple(options)
    context = ContextExport.DEFAULT
    creds = CredsExport.NONE
    value = find_option(opts, EXPORTED_CONTEXT_TYPE)
    if value is not None:
        if value != LINUX_LUCID_V1:
            raise GssFailure(
                GSS_S_FAILURE, EINVAL, f"unsupported exported_context_type {_shown(value)!r}"
            )
        context = ContextExport.LINUX_LUCID_V1
    value = find_option(opts, EXPORTED_CREDS_TYPE)
    if value is not None:
        if value != LINUX_CREDS_V1:
            raise GssFailure(
                GSS_S_FAILURE, EINVAL, f"unsupported exported_creds_type {_shown(value)!r}"
            )
        creds = CredsExport.LINUX_CREDS_V1
    return ExportTypes(context, creds)


def parse_acquire_type(options: Iterable[GssxOption]) -> bool:
    """True for `acquire_type = impersonate_name`; other values are EINVAL."""
    value = find_option(options, ACQUIRE_TYPE)
    if value is None:
        return False
    if value != IMPERSONATE_NAME:
        raise GssFailure(GSS_S_FAILURE, EINVAL, f"unsupported acquire_type {_shown(value)!r}")
    return True


def wants_sync(options: Iterable[GssxOption]) -> bool:
    """The interposer's `sync_modified_creds = default` on init/accept."""
    return find_option(options, SYNC_MODIFIED_CREDS) == DEFAULT
