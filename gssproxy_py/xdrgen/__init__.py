"""The XDR IDL compiler: `.x` files (RFC 4506 §6 + RFC 5531 §12) to typed Python.

Run it as `python -m gssproxy_py.xdrgen FILE.x [-o OUT.py]` or
`gssproxy-py-xdrgen`. Stages: `parse` (Lark grammar `xdr.lark` → syntax tree),
`resolve` (semantic checks → model), `emit` (model → Python source).
"""

from __future__ import annotations

import os

from gssproxy_py.xdrgen.emit import emit
from gssproxy_py.xdrgen.errors import XdrgenError
from gssproxy_py.xdrgen.parse import parse
from gssproxy_py.xdrgen.resolve import Model, resolve


def load(path: str) -> Model:
    """Parse and check one .x file."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return resolve(parse(text, path), path)


def compile_file(path: str) -> str:
    """Python source for one .x file. Raises `XdrgenError`."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    model = resolve(parse(text, path), path)
    return emit(model, os.path.basename(path), text)


__all__ = ["Model", "XdrgenError", "compile_file", "emit", "load", "parse", "resolve"]
