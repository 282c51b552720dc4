"""The modules compiled with mypyc, and the guard that keeps a stale build out.

`MODULES` is the one list: `mk/mypyc_build.py` compiles these (`make deps`,
`make install`), chosen by measurement (docs/PERFORMANCE.md, issue 15).
Each compiled module is an extension next to its unchanged .py file, and
Python's import prefers the extension. The build writes `compiled.sha256`
(the sha256 of each source as compiled); `guard()`, run once by the
package's `__init__`, compares it with the .py files and, when one differs
or `GSSPROXY_PY_NO_MYPYC` is set, puts a finder first on `sys.meta_path`
that imports every listed module from its .py file. All of them or none: a
compiled module calls the others of its build directly, not through their
module objects, so a stale module must not stay compiled beside an edited
one. Without the manifest (nothing built, the build failed, or it is
under way: the build writes the manifest last) the finder is put first
too, so an extension is only ever loaded with all the others of its build.
The decision holds for the life of the process.

`STATE` says which of these happened; the daemon logs it at start
(`describe()`), at warning level for a stale build.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Final

#: The modules `mk/mypyc_build.py` compiles (see docs/PERFORMANCE.md).
MODULES: Final = (
    "gssproxy_py.xdr.runtime",
    "gssproxy_py.proto.gss_proxy",
    "gssproxy_py.proto.rpc_msg",
    "gssproxy_py.rpc.messages",
    "gssproxy_py.rpc.records",
    "gssproxy_py.rpc.dispatch",
    "gssproxy_py.xdr.program",
    "gssproxy_py.gss.credentials",
    "gssproxy_py.gss.convert",
    "gssproxy_py.server.calls",
    "gssproxy_py.gss.procedures",
    "gssproxy_py.gss.program",
    "gssproxy_py.gss.direct",
    "gssproxy_py.gss.krb5_token",
    "gssproxy_py.p11kit.wire",
    "gssproxy_py.p11kit.session",
    "gssproxy_py.p11kit.fast",
)
#: The manifest the build writes next to this file.
MANIFEST: Final = "compiled.sha256"
#: Set (to anything but "" or "0") to run the .py files of a compiled tree.
NO_MYPYC_ENV: Final = "GSSPROXY_PY_NO_MYPYC"

_PACKAGE_DIR = Path(__file__).resolve().parent


def source_of(module: str, root: Path = _PACKAGE_DIR.parent) -> Path:
    """The .py file of a module of this package (under `root`, the directory
    that holds the package).

    Not from the module's `__file__`: mypyc sets that of a module first
    imported by another of its build under the shared library's directory
    (`gssproxy_py/gssproxy_py/...`).
    """
    return root / (module.replace(".", "/") + ".py")


class SourceFirst(importlib.abc.MetaPathFinder):
    """Imports the listed modules from their .py files, never an extension."""

    def __init__(self, root: Path, modules: Sequence[str]) -> None:
        # root: the directory that holds the top-level package
        self.paths = {m: source_of(m, root) for m in modules}

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        source = self.paths.get(fullname)
        if source is None:
            return None
        return importlib.util.spec_from_file_location(fullname, source)


def stale_modules(package_dir: Path) -> list[str] | None:
    """Modules whose source differs from the build; None when nothing is built."""
    try:
        manifest = (package_dir / MANIFEST).read_text()
    except FileNotFoundError:
        return None
    root = package_dir.parent
    stale = []
    built = {}
    for line in manifest.splitlines():
        digest_hex, _, module_name = line.partition("  ")
        built[module_name.strip()] = digest_hex
    for module in MODULES:
        try:
            digest = hashlib.sha256(source_of(module, root).read_bytes())
        except FileNotFoundError:
            continue  # no source to prefer: the extension is all there is
        if built.get(module) != digest.hexdigest():
            stale.append(module)
    return stale


def decide(package_dir: Path, environ: Mapping[str, str]) -> tuple[str, bool]:
    """(STATE, whether the .py files must be preferred) for one tree."""
    stale = stale_modules(package_dir)
    if stale is None:
        # Extensions without a manifest are a build under way (or a broken
        # one): never load them, half of them next to the other half's .py.
        return "pure Python (no mypyc build)", True
    if environ.get(NO_MYPYC_ENV, "") not in ("", "0"):
        return f"pure Python ({NO_MYPYC_ENV} is set)", True
    if stale:
        return f"pure Python: the mypyc build is stale for {', '.join(stale)}", True
    return f"compiled with mypyc: {len(MODULES)} modules", False


#: What `guard()` found; "" before it ran.
STATE = ""


def guard() -> None:
    """Decide once per process; prefer the .py files if the build is stale or off."""
    global STATE
    if STATE:
        return
    STATE, prefer_sources = decide(_PACKAGE_DIR, os.environ)
    if prefer_sources:
        sys.meta_path.insert(0, SourceFirst(_PACKAGE_DIR.parent, MODULES))


def describe() -> tuple[bool, str]:
    """(is it a warning, the line): for the daemon's start-up log."""
    return STATE.startswith("pure Python: the mypyc build is stale"), STATE
