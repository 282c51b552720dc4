"""The syntax tree of an XDR specification, as the parser builds it.

Nodes are plain dataclasses that keep their source position; values are still
unresolved (a number or a name) until `resolve` checks the whole file.
Anonymous inline types (`union switch (...) {...} body;`) are hoisted by the
parser into named definitions, so later passes only see named types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


@dataclass(frozen=True, slots=True)
class Pos:
    line: int
    column: int


@dataclass(frozen=True, slots=True)
class Value:
    """A constant or a name of a constant/enum member, as written."""

    number: int | None
    name: str | None
    pos: Pos


class Prim(Enum):
    INT = "int"
    UINT = "unsigned int"
    HYPER = "hyper"
    UHYPER = "unsigned hyper"
    FLOAT = "float"
    DOUBLE = "double"
    BOOL = "bool"
    QUADRUPLE = "quadruple"


@dataclass(frozen=True, slots=True)
class TypeSpec:
    """A primitive type or a reference to a named type."""

    prim: Prim | None
    ref: str | None
    pos: Pos


class DeclKind(Enum):
    BASIC = "basic"
    FIXED_ARRAY = "fixed array"
    VAR_ARRAY = "variable array"
    FIXED_OPAQUE = "fixed opaque"
    VAR_OPAQUE = "variable opaque"
    STRING = "string"
    OPTIONAL = "optional"
    VOID = "void"


@dataclass(frozen=True, slots=True)
class Decl:
    kind: DeclKind
    name: str | None
    type: TypeSpec | None
    size: Value | None
    pos: Pos


@dataclass(frozen=True, slots=True)
class ConstDef:
    name: str
    value: Value
    pos: Pos


@dataclass(frozen=True, slots=True)
class EnumMember:
    name: str
    value: Value
    pos: Pos


@dataclass(frozen=True, slots=True)
class EnumDef:
    name: str
    members: tuple[EnumMember, ...]
    pos: Pos


@dataclass(frozen=True, slots=True)
class StructDef:
    name: str
    fields: tuple[Decl, ...]
    pos: Pos


@dataclass(frozen=True, slots=True)
class Arm:
    labels: tuple[Value, ...]
    decl: Decl
    pos: Pos


@dataclass(frozen=True, slots=True)
class UnionDef:
    name: str
    discriminant: Decl
    arms: tuple[Arm, ...]
    default: Decl | None
    pos: Pos


@dataclass(frozen=True, slots=True)
class TypedefDef:
    name: str
    decl: Decl
    pos: Pos


@dataclass(frozen=True, slots=True)
class ProcDef:
    name: str
    number: Value
    result: TypeSpec | None
    args: tuple[TypeSpec, ...]
    pos: Pos


@dataclass(frozen=True, slots=True)
class VersionDef:
    name: str
    number: Value
    procedures: tuple[ProcDef, ...]
    pos: Pos


@dataclass(frozen=True, slots=True)
class ProgramDef:
    name: str
    number: Value
    versions: tuple[VersionDef, ...]
    pos: Pos


TypeDef = EnumDef | StructDef | UnionDef | TypedefDef
Definition = ConstDef | TypeDef | ProgramDef


@dataclass(slots=True)
class Specification:
    definitions: list[Definition] = field(default_factory=list)
