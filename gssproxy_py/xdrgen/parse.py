"""Parsing a .x file into the syntax tree, with Lark's LALR parser.

The grammar lives next to this module in `xdr.lark`. Syntax errors become
`XdrgenError` with the position Lark reports; anonymous inline types are hoisted
into named definitions called `<outer>_<field>`.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import cast

import lark
from lark import Token, Transformer, v_args
from lark.tree import Meta

from gssproxy_py.xdrgen.ast import (
    Arm,
    ConstDef,
    Decl,
    DeclKind,
    Definition,
    EnumDef,
    EnumMember,
    Pos,
    Prim,
    ProcDef,
    ProgramDef,
    Specification,
    StructDef,
    TypedefDef,
    TypeSpec,
    UnionDef,
    Value,
    VersionDef,
)
from gssproxy_py.xdrgen.errors import XdrgenError


@cache
def _parser() -> lark.Lark:
    grammar = resources.files("gssproxy_py.xdrgen").joinpath("xdr.lark").read_text()
    return lark.Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=True)


def _pos(meta: Meta) -> Pos:
    return Pos(getattr(meta, "line", 0), getattr(meta, "column", 0))


def _tpos(tok: Token) -> Pos:
    return Pos(tok.line or 0, tok.column or 0)


def _int(tok: Token) -> int:
    text = str(tok)
    if text[:2] in ("0x", "0X"):
        return int(text, 16)
    if len(text) > 1 and text[0] == "0":
        return int(text, 8)
    return int(text, 10)


class _Inline:
    """An anonymous enum/struct/union body waiting for the name of its declaration."""

    def __init__(self, kind: str, body: object, pos: Pos) -> None:
        self.kind = kind
        self.body = body
        self.pos = pos


@v_args(meta=True)
class _ToAst(Transformer[Token, object]):
    def __init__(self) -> None:
        super().__init__()
        self.hoisted: list[Definition] = []

    # values --------------------------------------------------------------
    def constant(self, meta: Meta, c: list[Token]) -> tuple[int, Pos]:
        return _int(c[0]), _tpos(c[0])

    def value_const(self, meta: Meta, c: list[tuple[int, Pos]]) -> Value:
        n, p = c[0]
        return Value(n, None, p)

    def value_ident(self, meta: Meta, c: list[Token]) -> Value:
        return Value(None, str(c[0]), _tpos(c[0]))

    # type specifiers --------------------------------------------------------
    def _prim(self, meta: Meta, p: Prim) -> TypeSpec:
        return TypeSpec(p, None, _pos(meta))

    def t_uint(self, meta: Meta, c: list[object]) -> TypeSpec:
        return self._prim(meta, Prim.UINT)

    def t_uhyper(self, meta: Meta, c: list[object]) -> TypeSpec:
        return self._prim(meta, Prim.UHYPER)

    def t_int(self, meta: Meta, c: list[object]) -> TypeSpec:
        return self._prim(meta, Prim.INT)

    def t_hyper(self, meta: Meta, c: list[object]) -> TypeSpec:
        return self._prim(meta, Prim.HYPER)

    def t_float(self, meta: Meta, c: list[object]) -> TypeSpec:
        return self._prim(meta, Prim.FLOAT)

    def t_double(self, meta: Meta, c: list[object]) -> TypeSpec:
        return self._prim(meta, Prim.DOUBLE)

    def t_quadruple(self, meta: Meta, c: list[object]) -> TypeSpec:
        return self._prim(meta, Prim.QUADRUPLE)

    def t_bool(self, meta: Meta, c: list[object]) -> TypeSpec:
        return self._prim(meta, Prim.BOOL)

    def t_ref(self, meta: Meta, c: list[Token]) -> TypeSpec:
        return TypeSpec(None, str(c[0]), _tpos(c[0]))

    def t_enum(self, meta: Meta, c: list[object]) -> _Inline:
        return _Inline("enum", c[0], _pos(meta))

    def t_struct(self, meta: Meta, c: list[object]) -> _Inline:
        return _Inline("struct", c[0], _pos(meta))

    def t_union(self, meta: Meta, c: list[object]) -> _Inline:
        return _Inline("union", c[0], _pos(meta))

    # declarations -------------------------------------------------------------
    def _decl(
        self, meta: Meta, kind: DeclKind, t: object, name: Token | None, size: Value | None
    ) -> Decl:
        # The declaration's name is only known here, so an inline type is
        # wrapped until the enclosing definition names it (see _name_inline).
        return _PendingDecl(kind, t, name, size, _pos(meta))  # type: ignore[return-value]

    def decl_basic(self, meta: Meta, c: list[object]) -> Decl:
        return self._decl(meta, DeclKind.BASIC, c[0], c[1], None)  # type: ignore[arg-type]

    def decl_fixed_array(self, meta: Meta, c: list[object]) -> Decl:
        return self._decl(meta, DeclKind.FIXED_ARRAY, c[0], c[1], c[2])  # type: ignore[arg-type]

    def decl_var_array(self, meta: Meta, c: list[object]) -> Decl:
        return self._decl(meta, DeclKind.VAR_ARRAY, c[0], c[1], c[2])  # type: ignore[arg-type]

    def decl_fixed_opaque(self, meta: Meta, c: list[object]) -> Decl:
        return self._decl(meta, DeclKind.FIXED_OPAQUE, None, c[0], c[1])  # type: ignore[arg-type]

    def decl_var_opaque(self, meta: Meta, c: list[object]) -> Decl:
        return self._decl(meta, DeclKind.VAR_OPAQUE, None, c[0], c[1])  # type: ignore[arg-type]

    def decl_string(self, meta: Meta, c: list[object]) -> Decl:
        return self._decl(meta, DeclKind.STRING, None, c[0], c[1])  # type: ignore[arg-type]

    def decl_optional(self, meta: Meta, c: list[object]) -> Decl:
        return self._decl(meta, DeclKind.OPTIONAL, c[0], c[1], None)  # type: ignore[arg-type]

    def decl_void(self, meta: Meta, c: list[object]) -> Decl:
        return self._decl(meta, DeclKind.VOID, None, None, None)

    # bodies ---------------------------------------------------------------------
    def enum_item(self, meta: Meta, c: list[object]) -> EnumMember:
        name = c[0]
        assert isinstance(name, Token)
        value = c[1]
        assert isinstance(value, Value)
        return EnumMember(str(name), value, _tpos(name))

    def enum_body(self, meta: Meta, c: list[EnumMember]) -> tuple[EnumMember, ...]:
        return tuple(c)

    def struct_body(self, meta: Meta, c: list[object]) -> tuple[object, ...]:
        return tuple(c)

    def case_label(self, meta: Meta, c: list[Value]) -> Value:
        return c[0]

    def case_spec(self, meta: Meta, c: list[object]) -> tuple[tuple[Value, ...], object, Pos]:
        return tuple(cast(list[Value], c[:-1])), c[-1], _pos(meta)

    def default_spec(self, meta: Meta, c: list[object]) -> tuple[str, object]:
        return ("default", c[0])

    def union_body(self, meta: Meta, c: list[object]) -> tuple[object, ...]:
        return tuple(c)

    # definitions ------------------------------------------------------------------
    def constant_def(self, meta: Meta, c: list[object]) -> ConstDef:
        name = c[0]
        assert isinstance(name, Token)
        n, p = cast(tuple[int, Pos], c[1])
        return ConstDef(str(name), Value(n, None, p), _tpos(name))

    def typedef_def(self, meta: Meta, c: list[object]) -> TypedefDef:
        pending = c[0]
        assert isinstance(pending, _PendingDecl)
        if pending.name is None:
            raise XdrgenError("", pending.pos, "typedef of void")
        decl = pending.finish(self, f"{pending.name}_t")
        return TypedefDef(str(pending.name), decl, pending.pos)

    def enum_def(self, meta: Meta, c: list[object]) -> EnumDef:
        name = c[0]
        assert isinstance(name, Token)
        return EnumDef(str(name), c[1], _tpos(name))  # type: ignore[arg-type]

    def struct_def(self, meta: Meta, c: list[object]) -> StructDef:
        name = c[0]
        assert isinstance(name, Token)
        return self.make_struct(str(name), c[1], _tpos(name))  # type: ignore[arg-type]

    def union_def(self, meta: Meta, c: list[object]) -> UnionDef:
        name = c[0]
        assert isinstance(name, Token)
        return self.make_union(str(name), c[1], _tpos(name))  # type: ignore[arg-type]

    def make_struct(self, name: str, body: tuple[object, ...], pos: Pos) -> StructDef:
        fields = []
        for f in body:
            assert isinstance(f, _PendingDecl)
            fields.append(f.finish(self, f"{name}_{f.name}"))
        return StructDef(name, tuple(fields), pos)

    def make_union(self, name: str, body: tuple[object, ...], pos: Pos) -> UnionDef:
        disc_p = body[0]
        assert isinstance(disc_p, _PendingDecl)
        disc = disc_p.finish(self, f"{name}_{disc_p.name}")
        arms: list[Arm] = []
        default: Decl | None = None
        for item in body[1:]:
            if isinstance(item, tuple) and item and item[0] == "default":
                d = item[1]
                assert isinstance(d, _PendingDecl)
                default = d.finish(self, f"{name}_{d.name}")
            else:
                labels, d, p = cast(tuple[tuple[Value, ...], object, Pos], item)
                assert isinstance(d, _PendingDecl)
                arms.append(Arm(labels, d.finish(self, f"{name}_{d.name}"), p))
        return UnionDef(name, disc, tuple(arms), default, pos)

    def procedure_def(self, meta: Meta, c: list[object]) -> ProcDef:
        result, name, args, num = c
        assert isinstance(name, Token)
        n, p = cast(tuple[int, Pos], num)
        arg_specs: list[TypeSpec] = []
        for i, a in enumerate(cast(tuple[object, ...], args)):
            spec = self._spec(a, f"{name}_arg{i}")
            assert spec is not None
            arg_specs.append(spec)
        return ProcDef(
            str(name),
            Value(n, None, p),
            self._spec(result, f"{name}_res"),
            tuple(arg_specs),
            _tpos(name),
        )

    def _spec(self, t: object, name: str) -> TypeSpec | None:
        if t is None:
            return None
        if isinstance(t, _Inline):
            return self.hoist(t, name)
        assert isinstance(t, TypeSpec)
        return t

    def proc_void(self, meta: Meta, c: list[object]) -> None:
        return None

    def proc_return(self, meta: Meta, c: list[object]) -> object:
        return c[0]

    def args_void(self, meta: Meta, c: list[object]) -> tuple[object, ...]:
        return ()

    def proc_args(self, meta: Meta, c: list[object]) -> tuple[object, ...]:
        return tuple(c)

    def version_def(self, meta: Meta, c: list[object]) -> VersionDef:
        name = c[0]
        assert isinstance(name, Token)
        n, p = cast(tuple[int, Pos], c[-1])
        procs = tuple(x for x in c[1:-1] if isinstance(x, ProcDef))
        return VersionDef(str(name), Value(n, None, p), procs, _tpos(name))

    def program_def(self, meta: Meta, c: list[object]) -> ProgramDef:
        name = c[0]
        assert isinstance(name, Token)
        n, p = cast(tuple[int, Pos], c[-1])
        versions = tuple(x for x in c[1:-1] if isinstance(x, VersionDef))
        return ProgramDef(str(name), Value(n, None, p), versions, _tpos(name))

    def start(self, meta: Meta, c: list[Definition]) -> Specification:
        return Specification(list(c))

    # hoisting ---------------------------------------------------------------------
    def hoist(self, inline: _Inline, name: str) -> TypeSpec:
        body = inline.body
        if inline.kind == "enum":
            self.hoisted.append(EnumDef(name, body, inline.pos))  # type: ignore[arg-type]
        elif inline.kind == "struct":
            self.hoisted.append(self.make_struct(name, body, inline.pos))  # type: ignore[arg-type]
        else:
            self.hoisted.append(self.make_union(name, body, inline.pos))  # type: ignore[arg-type]
        return TypeSpec(None, name, inline.pos)


class _PendingDecl:
    """A declaration whose inline type (if any) is not yet hoisted."""

    def __init__(
        self, kind: DeclKind, t: object, name: Token | None, size: Value | None, pos: Pos
    ) -> None:
        self.kind = kind
        self.t = t
        self.name = name
        self.size = size
        self.pos = pos

    def finish(self, tx: _ToAst, hoist_name: str) -> Decl:
        spec = (
            tx.hoist(self.t, hoist_name)
            if isinstance(self.t, _Inline)
            else cast(TypeSpec | None, self.t)
        )
        name = None if self.name is None else str(self.name)
        return Decl(self.kind, name, spec, self.size, self.pos)


def parse(text: str, file: str) -> Specification:
    """Parse XDR source text; raises `XdrgenError` located in `file`."""
    try:
        tree = _parser().parse(text)
    except lark.exceptions.UnexpectedCharacters as e:
        raise XdrgenError(
            file, Pos(e.line, e.column), f"syntax error: unexpected character {e.char!r}"
        ) from None
    except lark.exceptions.UnexpectedToken as e:
        tok = e.token
        what = "end of file" if tok.type == "$END" else repr(str(tok))
        expected = sorted(_pretty(x) for x in e.accepts or e.expected)[:8]
        hint = f"; expected {', '.join(expected)}" if expected else ""
        raise XdrgenError(
            file, Pos(e.line, e.column), f"syntax error: unexpected {what}{hint}"
        ) from None
    except lark.exceptions.UnexpectedEOF as e:
        raise XdrgenError(file, None, f"syntax error: unexpected end of file ({e})") from None
    tx = _ToAst()
    try:
        spec = tx.transform(tree)
    except lark.exceptions.VisitError as e:
        if isinstance(e.orig_exc, XdrgenError):
            raise XdrgenError(file, e.orig_exc.pos, e.orig_exc.message) from None
        raise
    assert isinstance(spec, Specification)
    spec.definitions = tx.hoisted + spec.definitions
    return spec


_TERMINAL_NAMES = {
    "IDENT": "identifier",
    "NUMBER": "number",
    "SEMICOLON": "';'",
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "LPAR": "'('",
    "RPAR": "')'",
    "LSQB": "'['",
    "RSQB": "']'",
    "LESSTHAN": "'<'",
    "MORETHAN": "'>'",
    "EQUAL": "'='",
    "COMMA": "','",
    "COLON": "':'",
    "STAR": "'*'",
}


def _pretty(terminal: str) -> str:
    if terminal in _TERMINAL_NAMES:
        return _TERMINAL_NAMES[terminal]
    return f"'{terminal.lower()}'"
