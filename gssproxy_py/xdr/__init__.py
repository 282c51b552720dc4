"""The strict XDR runtime (RFC 4506) that generated stubs call.

`Decoder` and `Encoder` read and write XDR with the checks a daemon facing
hostile peers needs (`runtime` says why they do not build on xdrlib3's
`Unpacker`/`Packer`); `program` holds the procedure tables that generated
modules fill in and the RPC dispatcher reads.
"""

from __future__ import annotations

from gssproxy_py.errors import XdrEncodeError, XdrError
from gssproxy_py.xdr.program import Procedure, Program, Version
from gssproxy_py.xdr.runtime import (
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_ITEMS,
    Decoder,
    Encoder,
    decode_bytes,
    encode_bytes,
)

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_ITEMS",
    "Decoder",
    "Encoder",
    "Procedure",
    "Program",
    "Version",
    "XdrEncodeError",
    "XdrError",
    "decode_bytes",
    "encode_bytes",
]
