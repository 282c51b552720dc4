"""Semantic checks over the syntax tree, and the resolved model the emitter reads.

Every rule that makes a syntactically valid .x file meaningless lives here:
undefined or duplicate names, duplicate case values, constants out of range,
unsupported types (`quadruple`), void outside union arms, and types that
contain themselves without an optional or array in between (infinite size).

The result is a `Model`: constants and enum values resolved to ints, and each
declaration reduced to a `Shape` (what actually goes on the wire).
"""

from __future__ import annotations

import keyword
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Final

from gssproxy_py.xdrgen.ast import (
    ConstDef,
    Decl,
    DeclKind,
    EnumDef,
    Pos,
    Prim,
    ProgramDef,
    Specification,
    StructDef,
    TypedefDef,
    TypeSpec,
    UnionDef,
    Value,
)
from gssproxy_py.xdrgen.errors import XdrgenError

U32_MAX = 0xFFFFFFFF
I32_MIN, I32_MAX = -(1 << 31), (1 << 31) - 1
CONST_MIN, CONST_MAX = -(1 << 63), (1 << 64) - 1


class Kind(Enum):
    INT = "int"
    UINT = "uint"
    HYPER = "hyper"
    UHYPER = "uhyper"
    FLOAT = "float"
    DOUBLE = "double"
    BOOL = "bool"
    ENUM = "enum"
    STRUCT = "struct"
    UNION = "union"
    FIXED_OPAQUE = "fixed_opaque"
    VAR_OPAQUE = "var_opaque"
    STRING = "string"
    FIXED_ARRAY = "fixed_array"
    VAR_ARRAY = "var_array"
    OPTIONAL = "optional"
    VOID = "void"


_PRIM_KIND = {
    Prim.INT: Kind.INT,
    Prim.UINT: Kind.UINT,
    Prim.HYPER: Kind.HYPER,
    Prim.UHYPER: Kind.UHYPER,
    Prim.FLOAT: Kind.FLOAT,
    Prim.DOUBLE: Kind.DOUBLE,
    Prim.BOOL: Kind.BOOL,
}


@dataclass(frozen=True, slots=True)
class Shape:
    """What one declaration puts on the wire."""

    kind: Kind
    #: the enum/struct/union definition named, for those kinds
    name: str | None = None
    #: fixed size, or the bound of a variable-length item (None = unbounded)
    size: int | None = None
    #: the element of arrays and optionals
    elem: Shape | None = None
    #: the typedef this shape was reached through, for readable annotations
    alias: str | None = None


@dataclass(frozen=True, slots=True)
class Field:
    name: str  # the Python attribute name (keyword-safe)
    xdr_name: str
    shape: Shape


@dataclass(frozen=True, slots=True)
class RConst:
    name: str
    value: int


@dataclass(frozen=True, slots=True)
class REnum:
    name: str
    members: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class RStruct:
    name: str
    fields: tuple[Field, ...]
    #: True when the last field is `T *next` of this very struct: decoded iteratively
    linked_list: bool = False


@dataclass(frozen=True, slots=True)
class RArm:
    values: tuple[int, ...]  # empty for the default arm
    labels: tuple[str, ...]  # the names written in the .x file, for enum discriminants
    field: Field | None  # None for void arms


@dataclass(frozen=True, slots=True)
class RUnion:
    name: str
    discriminant: Field
    arms: tuple[RArm, ...]
    default: RArm | None


@dataclass(frozen=True, slots=True)
class RTypedef:
    name: str
    shape: Shape


@dataclass(frozen=True, slots=True)
class RProc:
    name: str
    number: int
    result: Shape
    args: tuple[Shape, ...]


@dataclass(frozen=True, slots=True)
class RVersion:
    name: str
    number: int
    procedures: tuple[RProc, ...]


@dataclass(frozen=True, slots=True)
class RProgram:
    name: str
    number: int
    versions: tuple[RVersion, ...]


RDef = RConst | REnum | RStruct | RUnion | RTypedef | RProgram


@dataclass(slots=True)
class Model:
    definitions: list[RDef] = field(default_factory=list)
    enums: dict[str, REnum] = field(default_factory=dict)
    structs: dict[str, RStruct] = field(default_factory=dict)
    unions: dict[str, RUnion] = field(default_factory=dict)
    typedefs: dict[str, RTypedef] = field(default_factory=dict)
    #: types that take part in a cycle (through optionals or arrays): depth-limited
    recursive: set[str] = field(default_factory=set)

    def min_size(self, s: Shape, _seen: frozenset[str] = frozenset()) -> int:
        """The fewest bytes any value of this shape encodes to."""
        fixed = _FIXED_MIN_SIZE.get(s.kind)
        if fixed is not None:
            return fixed
        if s.kind == Kind.FIXED_OPAQUE:
            assert s.size is not None
            return s.size + (-s.size) % 4
        if s.kind == Kind.FIXED_ARRAY:
            assert s.size is not None and s.elem is not None
            return s.size * self.min_size(s.elem, _seen)
        assert s.name is not None
        if s.name in _seen:
            return 0
        seen = _seen | {s.name}
        if s.kind == Kind.STRUCT:
            return sum(self.min_size(f.shape, seen) for f in self.structs[s.name].fields)
        u = self.unions[s.name]
        arms = [*u.arms, *([u.default] if u.default else [])]
        return 4 + min(self.min_size(a.field.shape, seen) if a.field else 0 for a in arms)


#: Kinds whose smallest encoding does not depend on the model: one word for
#: the 32-bit scalars and for the length or flag that starts variable data,
#: two for 64-bit scalars, nothing for void.
_FIXED_MIN_SIZE: Final = {
    **dict.fromkeys((Kind.INT, Kind.UINT, Kind.FLOAT, Kind.BOOL, Kind.ENUM), 4),
    **dict.fromkeys((Kind.HYPER, Kind.UHYPER, Kind.DOUBLE), 8),
    **dict.fromkeys((Kind.VAR_OPAQUE, Kind.STRING, Kind.VAR_ARRAY, Kind.OPTIONAL), 4),
    Kind.VOID: 0,
}


def python_name(xdr_name: str) -> str:
    """A field or function name safe to use in Python."""
    return xdr_name + "_" if keyword.iskeyword(xdr_name) or xdr_name == "self" else xdr_name


def class_name(xdr_name: str) -> str:
    """`gssx_OID_set` → `GssxOIDSet`: CamelCase that keeps acronyms."""
    return "".join(p[:1].upper() + p[1:] for p in xdr_name.split("_") if p)


class _Resolver:
    def __init__(self, spec: Specification, file: str) -> None:
        self.spec = spec
        self.file = file
        self.model = Model()
        # name → (kind, position) for every global name, to report duplicates
        self.names: dict[str, tuple[str, Pos]] = {}
        self.consts: dict[str, int] = {"TRUE": 1, "FALSE": 0}
        self.enum_of_member: dict[str, str] = {}
        self.types: dict[str, EnumDef | StructDef | UnionDef | TypedefDef] = {}
        self.pynames: dict[str, tuple[str, Pos]] = {}

    def err(self, pos: Pos | None, msg: str) -> XdrgenError:
        return XdrgenError(self.file, pos, msg)

    def declare(self, name: str, what: str, pos: Pos) -> None:
        if name in ("TRUE", "FALSE"):
            raise self.err(pos, f"'{name}' is predefined by XDR")
        if name in self.names:
            kind, first = self.names[name]
            raise self.err(
                pos,
                f"duplicate name '{name}' (first defined as {kind} at {first.line}:{first.column})",
            )
        self.names[name] = (what, pos)

    def declare_py(self, pyname: str, xdr_name: str, pos: Pos) -> None:
        if pyname in self.pynames and self.pynames[pyname][0] != xdr_name:
            other, first = self.pynames[pyname]
            raise self.err(
                pos,
                f"'{xdr_name}' and '{other}' (at {first.line}:{first.column}) both become "
                f"Python name '{pyname}'",
            )
        self.pynames[pyname] = (xdr_name, pos)

    # -- pass 1: names ------------------------------------------------------------
    def collect(self) -> None:
        for d in self.spec.definitions:
            if isinstance(d, ConstDef):
                self.declare(d.name, "constant", d.pos)
            elif isinstance(d, ProgramDef):
                self.declare(d.name, "program", d.pos)
                for v in d.versions:
                    self.declare(v.name, "version", v.pos)
                    for p in v.procedures:
                        self.declare(p.name, "procedure", p.pos)
            else:
                self.declare(d.name, "type", d.pos)
                self.types[d.name] = d
                self.declare_py(class_name(d.name), d.name, d.pos)
                if isinstance(d, EnumDef):
                    for m in d.members:
                        self.declare(m.name, f"member of enum {d.name}", m.pos)
                        self.enum_of_member[m.name] = d.name

    # -- values -----------------------------------------------------------------------
    def value(
        self, v: Value, lo: int = CONST_MIN, hi: int = CONST_MAX, what: str = "constant"
    ) -> int:
        if v.number is not None:
            n = v.number
        else:
            assert v.name is not None
            if v.name not in self.consts:
                if v.name in self.types:
                    raise self.err(v.pos, f"'{v.name}' is a type, not a constant")
                raise self.err(v.pos, f"undefined constant '{v.name}'")
            n = self.consts[v.name]
        if not lo <= n <= hi:
            raise self.err(v.pos, f"{what} {n} out of range [{lo}, {hi}]")
        return n

    def resolve_consts(self) -> None:
        # Constants and enum members may refer to ones defined earlier.
        for d in self.spec.definitions:
            if isinstance(d, ConstDef):
                self.consts[d.name] = self.value(d.value)
            elif isinstance(d, EnumDef):
                seen: dict[int, str] = {}
                for m in d.members:
                    n = self.value(m.value, I32_MIN, I32_MAX, "enum value")
                    if n in seen:
                        raise self.err(
                            m.pos, f"enum {d.name}: {m.name} repeats the value {n} of {seen[n]}"
                        )
                    seen[n] = m.name
                    self.consts[m.name] = n

    # -- shapes -----------------------------------------------------------------------
    def spec_shape(self, t: TypeSpec) -> Shape:
        if t.prim is not None:
            if t.prim is Prim.QUADRUPLE:
                raise self.err(
                    t.pos, "quadruple is not supported: Python has no 128-bit float to map it to"
                )
            return Shape(_PRIM_KIND[t.prim])
        assert t.ref is not None
        d = self.types.get(t.ref)
        if d is None:
            if t.ref in self.names:
                raise self.err(t.pos, f"'{t.ref}' is a {self.names[t.ref][0]}, not a type")
            raise self.err(t.pos, f"undefined type '{t.ref}'")
        if isinstance(d, EnumDef):
            return Shape(Kind.ENUM, name=d.name)
        if isinstance(d, StructDef):
            return Shape(Kind.STRUCT, name=d.name)
        if isinstance(d, UnionDef):
            return Shape(Kind.UNION, name=d.name)
        inner = self.decl_shape(d.decl)
        return Shape(inner.kind, inner.name, inner.size, inner.elem, alias=d.name)

    def bound(self, v: Value | None, what: str) -> int | None:
        if v is None:
            return None
        return self.value(v, 0, U32_MAX, what)

    def decl_shape(self, decl: Decl) -> Shape:
        k = decl.kind
        if k is DeclKind.VOID:
            return Shape(Kind.VOID)
        if k is DeclKind.FIXED_OPAQUE:
            return Shape(Kind.FIXED_OPAQUE, size=self.bound(decl.size, "opaque size"))
        if k is DeclKind.VAR_OPAQUE:
            return Shape(Kind.VAR_OPAQUE, size=self.bound(decl.size, "opaque bound"))
        if k is DeclKind.STRING:
            return Shape(Kind.STRING, size=self.bound(decl.size, "string bound"))
        assert decl.type is not None
        inner = self.spec_shape(decl.type)
        if k is DeclKind.BASIC:
            return inner
        if inner.kind is Kind.VOID:
            raise self.err(decl.pos, "void cannot be an element type")
        if k is DeclKind.FIXED_ARRAY:
            return Shape(Kind.FIXED_ARRAY, size=self.bound(decl.size, "array size"), elem=inner)
        if k is DeclKind.VAR_ARRAY:
            return Shape(Kind.VAR_ARRAY, size=self.bound(decl.size, "array bound"), elem=inner)
        return Shape(Kind.OPTIONAL, elem=inner)

    def field(self, decl: Decl, where: str) -> Field:
        if decl.kind is DeclKind.VOID or decl.name is None:
            raise self.err(decl.pos, f"void is only allowed in union arms ({where})")
        return Field(python_name(decl.name), decl.name, self.decl_shape(decl))

    # -- definitions ------------------------------------------------------------------
    def struct(self, d: StructDef) -> RStruct:
        fields: list[Field] = []
        seen: set[str] = set()
        for f in d.fields:
            rf = self.field(f, f"struct {d.name}")
            if rf.xdr_name in seen:
                raise self.err(f.pos, f"struct {d.name}: duplicate field '{rf.xdr_name}'")
            seen.add(rf.xdr_name)
            fields.append(rf)
        last = fields[-1].shape
        linked = (
            len(fields) > 1
            and last.kind is Kind.OPTIONAL
            and last.elem is not None
            and last.elem.kind is Kind.STRUCT
            and last.elem.name == d.name
        )
        return RStruct(d.name, tuple(fields), linked)

    def union(self, d: UnionDef) -> RUnion:
        disc = self.field(d.discriminant, f"union {d.name} discriminant")
        dk = disc.shape.kind
        if dk not in (Kind.INT, Kind.UINT, Kind.BOOL, Kind.ENUM):
            raise self.err(
                d.discriminant.pos,
                f"union {d.name}: the discriminant must be int, unsigned int, bool or an enum",
            )
        lo, hi = {Kind.INT: (I32_MIN, I32_MAX), Kind.UINT: (0, U32_MAX), Kind.BOOL: (0, 1)}.get(
            dk, (I32_MIN, I32_MAX)
        )
        enum_values: dict[int, str] = {}
        if dk is Kind.ENUM:
            assert disc.shape.name is not None
            e = self.types[disc.shape.name]
            assert isinstance(e, EnumDef)
            enum_values = {self.consts[m.name]: m.name for m in e.members}
        seen_values: dict[int, Pos] = {}
        seen_names: set[str] = set()
        arms: list[RArm] = []
        for arm in d.arms:
            values: list[int] = []
            labels: list[str] = []
            for label in arm.labels:
                n = self.value(label, lo, hi, "case value")
                if dk is Kind.ENUM and n not in enum_values:
                    raise self.err(
                        label.pos, f"case value {n} is not a member of enum {disc.shape.name}"
                    )
                if n in seen_values:
                    first = seen_values[n]
                    raise self.err(
                        label.pos,
                        f"union {d.name}: duplicate case value {n} "
                        f"(first at {first.line}:{first.column})",
                    )
                seen_values[n] = label.pos
                values.append(n)
                labels.append(enum_values.get(n, label.name or str(n)))
            arms.append(RArm(tuple(values), tuple(labels), self.arm_field(d, arm.decl, seen_names)))
        default = None
        if d.default is not None:
            default = RArm((), (), self.arm_field(d, d.default, seen_names))
        return RUnion(d.name, disc, tuple(arms), default)

    def arm_field(self, d: UnionDef, decl: Decl, seen: set[str]) -> Field | None:
        if decl.kind is DeclKind.VOID:
            return None
        f = self.field(decl, f"union {d.name}")
        if f.xdr_name in seen:
            raise self.err(decl.pos, f"union {d.name}: duplicate arm name '{f.xdr_name}'")
        seen.add(f.xdr_name)
        return f

    def program(self, d: ProgramDef) -> RProgram:
        versions: list[RVersion] = []
        vseen: set[int] = set()
        for v in d.versions:
            vn = self.value(v.number, 0, U32_MAX, "version number")
            if vn in vseen:
                raise self.err(v.number.pos, f"program {d.name}: duplicate version number {vn}")
            vseen.add(vn)
            procs: list[RProc] = []
            pseen: set[int] = set()
            for p in v.procedures:
                pn = self.value(p.number, 0, U32_MAX, "procedure number")
                if pn in pseen:
                    raise self.err(
                        p.number.pos, f"version {v.name}: duplicate procedure number {pn}"
                    )
                pseen.add(pn)
                result = Shape(Kind.VOID) if p.result is None else self.spec_shape(p.result)
                args = tuple(self.spec_shape(a) for a in p.args)
                procs.append(RProc(p.name, pn, result, args))
            versions.append(RVersion(v.name, vn, tuple(procs)))
        return RProgram(d.name, self.value(d.number, 0, U32_MAX, "program number"), tuple(versions))

    # -- containment cycles -------------------------------------------------------------
    def _direct_children(self, s: Shape) -> Iterator[str]:
        """Types a value of this shape always contains (not behind optional/variable arrays)."""
        if s.kind in (Kind.STRUCT, Kind.UNION):
            assert s.name is not None
            yield s.name
        elif s.kind is Kind.FIXED_ARRAY and s.size and s.elem is not None:
            yield from self._direct_children(s.elem)

    def _all_children(self, s: Shape) -> Iterator[str]:
        if s.kind in (Kind.STRUCT, Kind.UNION):
            assert s.name is not None
            yield s.name
        elif s.elem is not None:
            yield from self._all_children(s.elem)

    def _edges(self, name: str, direct: bool) -> set[str]:
        m = self.model
        shapes: list[Shape] = []
        if name in m.structs:
            shapes = [f.shape for f in m.structs[name].fields]
        elif name in m.unions:
            u = m.unions[name]
            arms = [*u.arms, *([u.default] if u.default else [])]
            # A union needs only one arm to be finite, so only edges common to
            # every arm make it infinite; reachability uses all of them.
            if direct:
                per_arm = [
                    set(self._direct_children(a.field.shape)) if a.field else set() for a in arms
                ]
                return set.intersection(*per_arm) if per_arm else set()
            shapes = [a.field.shape for a in arms if a.field]
        out: set[str] = set()
        for s in shapes:
            out |= set(self._direct_children(s) if direct else self._all_children(s))
        return out

    def check_cycles(self) -> None:
        m = self.model
        names = [*m.structs, *m.unions]
        for n in names:
            # infinite size: n reaches itself through direct containment only
            stack, seen = list(self._edges(n, True)), set()
            while stack:
                x = stack.pop()
                if x == n:
                    d = self.types[n]
                    raise self.err(
                        d.pos,
                        f"type '{n}' contains itself without an optional (*) or a "
                        f"variable-length array in between, so it has no finite encoding",
                    )
                if x not in seen:
                    seen.add(x)
                    stack.extend(self._edges(x, True))
            stack, seen = list(self._edges(n, False)), set()
            while stack:
                x = stack.pop()
                if x == n:
                    m.recursive.add(n)
                    break
                if x not in seen:
                    seen.add(x)
                    stack.extend(self._edges(x, False))

    def run(self) -> Model:
        self.collect()
        self.resolve_consts()
        m = self.model
        for d in self.spec.definitions:
            r: RDef
            if isinstance(d, ConstDef):
                r = RConst(d.name, self.consts[d.name])
            elif isinstance(d, EnumDef):
                r = REnum(d.name, tuple((x.name, self.consts[x.name]) for x in d.members))
                m.enums[d.name] = r
            elif isinstance(d, StructDef):
                r = self.struct(d)
                m.structs[d.name] = r
            elif isinstance(d, UnionDef):
                r = self.union(d)
                m.unions[d.name] = r
            elif isinstance(d, TypedefDef):
                if d.decl.kind is DeclKind.VOID:
                    raise self.err(d.pos, "typedef of void")
                r = RTypedef(d.name, self.decl_shape(d.decl))
                m.typedefs[d.name] = r
            else:
                r = self.program(d)
            m.definitions.append(r)
        self.check_cycles()
        self.mark_linked_lists()
        return m

    def _reaches(self, start: set[str], target: str) -> bool:
        stack, seen = list(start), set()
        while stack:
            x = stack.pop()
            if x == target:
                return True
            if x not in seen:
                seen.add(x)
                stack.extend(self._edges(x, False))
        return False

    def mark_linked_lists(self) -> None:
        # Only a struct whose *sole* way back to itself is its last field
        # (`T *next`) can be decoded in a loop; a tree (`T *left; T *right;`)
        # recurses and keeps the depth limit.
        m = self.model
        for i, d in enumerate(m.definitions):
            if not (isinstance(d, RStruct) and d.linked_list):
                continue
            others: set[str] = set()
            for f in d.fields[:-1]:
                others |= set(self._all_children(f.shape))
            if self._reaches(others, d.name):
                plain = RStruct(d.name, d.fields, linked_list=False)
                m.definitions[i] = plain
                m.structs[d.name] = plain


def resolve(spec: Specification, file: str) -> Model:
    """Check a parsed specification and resolve it; raises `XdrgenError`."""
    return _Resolver(spec, file).run()
