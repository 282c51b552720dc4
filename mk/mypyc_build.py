"""Compile the daemon's hot modules with mypyc, in place, with a manifest.

Run by `make deps` from the top of the source tree (which the editable
install imports); `make install` copies what it built. The modules are
`gssproxy_py.compiled.MODULES`, next to the check that reads the manifest
at import time; this script only builds. What it leaves, all gitignored:

* one extension per module (`runtime.cpython-311-x86_64-linux-gnu.so` next
  to `runtime.py`) and the shared library they all load
  (`gssproxy_py/_mypyc__mypyc.cpython-...so`);
* `gssproxy_py/compiled.sha256`: the sha256 of each module's source as
  compiled, which `gssproxy_py.compiled.guard()` compares with the .py
  files so that an edited source is never shadowed by its old extension.

Any failure (no compiler, no Python headers, a module mypyc rejects)
removes what was built and exits 1; make carries on with the pure-Python
tree. `--clean` only removes.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
from pathlib import Path

from gssproxy_py.compiled import MANIFEST, MODULES

PACKAGE = Path("gssproxy_py")


def clean() -> None:
    # The manifest first: from then on no new process loads an extension.
    (PACKAGE / MANIFEST).unlink(missing_ok=True)
    for so in PACKAGE.rglob("*.so"):
        so.unlink()


def build() -> None:
    from mypyc.build import mypycify
    from setuptools import setup

    paths = [m.replace(".", "/") + ".py" for m in MODULES]
    # The sources as they are compiled: one edited during the build shows as stale.
    lines = [
        f"{hashlib.sha256(Path(path).read_bytes()).hexdigest()}  {module}\n"
        for path, module in zip(paths, MODULES, strict=True)
    ]
    with tempfile.TemporaryDirectory(prefix="gssproxy-py-mypyc-") as tmp:
        # mypy's options come from setup.cfg; its cache and gcc's output stay
        # in the scratch directory (build/ holds the kernel test's VM).
        ext = mypycify(
            [f"--cache-dir={tmp}/cache", *paths], group_name="gssproxy_py._mypyc", target_dir=tmp
        )
        setup(
            name="gssproxy-py-compiled",
            ext_modules=ext,
            script_args=["-q", "build_ext", "--inplace", "--build-temp", tmp, "--build-lib", tmp],
        )
    # Last, and whole: the guard loads no extension before the manifest exists.
    (PACKAGE / (MANIFEST + ".new")).write_text("".join(lines))
    (PACKAGE / (MANIFEST + ".new")).replace(PACKAGE / MANIFEST)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clean", action="store_true", help="only remove compiled modules")
    args = p.parse_args()
    if not (PACKAGE / "compiled.py").is_file():
        sys.exit("run from the top of the source tree")
    clean()
    if args.clean:
        return
    try:
        build()
    except BaseException as e:  # SystemExit from setup() too: fall back, say why
        clean()
        print(
            f"mypyc: nothing compiled ({type(e).__name__}: {e}); the .py files run", file=sys.stderr
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
