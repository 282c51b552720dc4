"""Destroying the private MEMORY ccaches the daemon creates (ctypes to libkrb5).

python-gssapi cannot destroy a ccache. Each acquisition without a configured
`ccache` gets a private ``MEMORY:`` ccache (gssproxy's ``internal_<tid>``);
once its credential has been exported, imported again (the import owns a
copy) and the original released, the ccache itself is destroyed here so the
daemon does not accumulate TGTs in memory.

Blocking but quick (no I/O for MEMORY ccaches); call it from the executor.
"""

from __future__ import annotations

import ctypes
import threading

__all__ = ["destroy_memory_ccache", "hold_profile"]

_lib: ctypes.CDLL | None = None
_lib_lock = threading.Lock()
_held: ctypes.c_void_p | None = None


def _krb5() -> ctypes.CDLL:
    global _lib
    with _lib_lock:
        if _lib is None:
            lib = ctypes.CDLL("libkrb5.so.3")
            lib.krb5_init_context.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
            lib.krb5_init_context.restype = ctypes.c_int32
            lib.krb5_free_context.argtypes = [ctypes.c_void_p]
            lib.krb5_free_context.restype = None
            lib.krb5_cc_resolve.argtypes = [
                ctypes.c_void_p,
                ctypes.c_char_p,
                ctypes.POINTER(ctypes.c_void_p),
            ]
            lib.krb5_cc_resolve.restype = ctypes.c_int32
            lib.krb5_cc_destroy.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
            lib.krb5_cc_destroy.restype = ctypes.c_int32
            _lib = lib
        return _lib


def destroy_memory_ccache(name: str) -> bool:
    """Destroy a ``MEMORY:`` ccache by name; anything else is refused (False)."""
    if not name.startswith("MEMORY:"):
        return False
    lib = _krb5()
    kctx = ctypes.c_void_p()
    if lib.krb5_init_context(ctypes.byref(kctx)) != 0:
        return False
    try:
        cc = ctypes.c_void_p()
        if lib.krb5_cc_resolve(kctx, name.encode("utf-8"), ctypes.byref(cc)) != 0:
            return False
        return bool(lib.krb5_cc_destroy(kctx, cc) == 0)
    finally:
        lib.krb5_free_context(kctx)


def hold_profile() -> bool:
    """Keep one krb5_context open for the life of the process (idempotent).

    Most GSSAPI calls into the krb5 mechanism make and free a krb5_context
    of their own, and a new context parses krb5.conf again unless another
    open context already holds the parsed profile (MIT's profile library
    shares it among open contexts, and still checks the file's mtime at most
    once a second, so edits are picked up as before). With one context held,
    a display_name + export_name pair costs a third of what it did.
    False if libkrb5 could not make a context (nothing changes then).
    """
    global _held
    if _held is not None:
        return True
    try:
        lib = _krb5()
    except OSError:
        return False
    kctx = ctypes.c_void_p()
    if lib.krb5_init_context(ctypes.byref(kctx)) != 0:
        return False
    _held = kctx
    return True
