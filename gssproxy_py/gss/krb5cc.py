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

__all__ = ["destroy_memory_ccache"]

_lib: ctypes.CDLL | None = None
_lib_lock = threading.Lock()


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
