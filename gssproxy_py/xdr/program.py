"""Procedure tables for ONC RPC programs, filled in by generated modules.

The RPC dispatcher looks a call up as program → version → procedure and gets
back the argument decoder and result encoder; it never needs to know the
protocol's types.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gssproxy_py.xdr.runtime import Decoder, Encoder


@dataclass(frozen=True, slots=True)
class Procedure:
    """One procedure of one program version (RFC 5531 §12)."""

    number: int
    name: str
    #: the Python type of the argument/result: a class, a tuple of arm classes
    #: for a union, or None for void
    arg_type: type[Any] | tuple[type[Any], ...] | None
    res_type: type[Any] | tuple[type[Any], ...] | None
    decode_arg: Callable[[Decoder], Any]
    encode_arg: Callable[[Encoder, Any], None]
    decode_res: Callable[[Decoder], Any]
    encode_res: Callable[[Encoder, Any], None]


@dataclass(frozen=True, slots=True)
class Version:
    number: int
    name: str
    procedures: Mapping[int, Procedure]


@dataclass(frozen=True, slots=True)
class Program:
    number: int
    name: str
    versions: Mapping[int, Version]

    @property
    def low_version(self) -> int:
        return min(self.versions)

    @property
    def high_version(self) -> int:
        return max(self.versions)


def decode_void(dec: Decoder) -> None:
    return None


def encode_void(enc: Encoder, value: None) -> None:
    """Nothing goes on the wire for void."""
