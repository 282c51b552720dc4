"""Python source from a resolved XDR model.

What a module generated from `FILE.x` holds, in this order:

* constants (`NAME: Final = 42`), including program/version/procedure numbers;
* one `IntEnum` per enum, plus its members as module constants;
* one frozen, slotted dataclass per struct;
* per union, one dataclass per arm, so handlers can `match` on the arm class;
  a single-case arm carries its discriminant as a read-only property (not a
  `ClassVar`: mypyc would make a defaulted field of it, python/mypy's mypyc
  issue 1122), a multi-case or `default` arm as its first field; an arm field
  named like the discriminant gets a trailing underscore;
* type aliases for typedefs and unions;
* `encode_<name>(enc, value)` / `decode_<name>(dec)` for every type, on the
  strict runtime in `gssproxy_py.xdr`;
* one `Program` table per program, with procedure 0 (NULL) added as rpcgen does.

Output depends only on the input text, so regenerating is reproducible.
"""

from __future__ import annotations

import hashlib

from gssproxy_py import __version__
from gssproxy_py.xdrgen.errors import XdrgenError
from gssproxy_py.xdrgen.resolve import (
    Field,
    Kind,
    Model,
    RArm,
    RConst,
    REnum,
    RProc,
    RProgram,
    RStruct,
    RTypedef,
    RUnion,
    Shape,
    class_name,
)

_INDENT = "    "

_DEC_PRIM = {
    Kind.INT: "d.int32()",
    Kind.UINT: "d.uint32()",
    Kind.HYPER: "d.int64()",
    Kind.UHYPER: "d.uint64()",
    Kind.FLOAT: "d.float32()",
    Kind.DOUBLE: "d.float64()",
    Kind.BOOL: "d.boolean()",
}
_ENC_PRIM = {
    Kind.INT: "int32",
    Kind.UINT: "uint32",
    Kind.HYPER: "int64",
    Kind.UHYPER: "uint64",
    Kind.FLOAT: "float32",
    Kind.DOUBLE: "float64",
    Kind.BOOL: "boolean",
    Kind.ENUM: "enum",
}
_PY_PRIM = {
    Kind.INT: "int",
    Kind.UINT: "int",
    Kind.HYPER: "int",
    Kind.UHYPER: "int",
    Kind.FLOAT: "float",
    Kind.DOUBLE: "float",
    Kind.BOOL: "bool",
    Kind.FIXED_OPAQUE: "bytes",
    Kind.VAR_OPAQUE: "bytes",
    Kind.STRING: "bytes",
    Kind.VOID: "None",
}


class _Emitter:
    def __init__(self, model: Model, source_name: str, source_text: str) -> None:
        self.m = model
        self.source_name = source_name
        self.digest = hashlib.sha256(source_text.encode()).hexdigest()
        self.out: list[str] = []
        self.arm_classes: dict[tuple[str, int], str] = {}
        self.used_classes: set[str] = set()

    # -- helpers ------------------------------------------------------------------
    def w(self, line: str = "", level: int = 0) -> None:
        self.out.append(_INDENT * level + line if line else "")

    def err(self, msg: str) -> XdrgenError:
        return XdrgenError(self.source_name, None, msg)

    def ann(self, s: Shape, *, through_alias: bool = True) -> str:
        """The Python annotation for a shape."""
        if through_alias and s.alias is not None:
            return class_name(s.alias)
        k = s.kind
        if k in _PY_PRIM:
            return _PY_PRIM[k]
        if k in (Kind.ENUM, Kind.STRUCT, Kind.UNION):
            assert s.name is not None
            return class_name(s.name)
        assert s.elem is not None
        if k in (Kind.FIXED_ARRAY, Kind.VAR_ARRAY):
            return f"tuple[{self.ann(s.elem)}, ...]"
        return f"{self.ann(s.elem)} | None"

    def dec(self, s: Shape) -> str:
        """An expression that decodes one value of shape `s` from `d`."""
        k = s.kind
        if k in _DEC_PRIM:
            return _DEC_PRIM[k]
        if k is Kind.ENUM:
            return f'd.enum_member(_M_{s.name}, "{s.name}")'
        if k in (Kind.STRUCT, Kind.UNION):
            return f"decode_{s.name}(d)"
        if k is Kind.FIXED_OPAQUE:
            return f"d.opaque_fixed({s.size})"
        if k is Kind.VAR_OPAQUE:
            return f"d.opaque_var({s.size})"
        if k is Kind.STRING:
            return f"d.string_var({s.size})"
        if k is Kind.VOID:
            return "None"
        assert s.elem is not None
        if k is Kind.OPTIONAL:
            return f"({self.dec(s.elem)} if d.optional_flag() else None)"
        min_item = self.m.min_size(s.elem)
        count = (
            f"d.fixed_count({s.size}, {min_item})"
            if k is Kind.FIXED_ARRAY
            else f"d.array_count({s.size}, {min_item})"
        )
        return f"tuple([{self.dec(s.elem)} for _ in range({count})])"

    def enc(self, s: Shape, expr: str, level: int, depth: int = 0) -> None:
        """Statements that encode `expr` (of shape `s`) into `e`."""
        k = s.kind
        if k in _ENC_PRIM:
            self.w(f"e.{_ENC_PRIM[k]}({expr})", level)
        elif k in (Kind.STRUCT, Kind.UNION):
            self.w(f"encode_{s.name}(e, {expr})", level)
        elif k is Kind.FIXED_OPAQUE:
            self.w(f"e.opaque_fixed({s.size}, {expr})", level)
        elif k is Kind.VAR_OPAQUE:
            self.w(f"e.opaque_var({expr}, {s.size})", level)
        elif k is Kind.STRING:
            self.w(f"e.string_var({expr}, {s.size})", level)
        elif k is Kind.VOID:
            self.w("pass", level)
        elif k is Kind.OPTIONAL:
            assert s.elem is not None
            var = self.temp("o")
            self.w(f"{var} = {expr}", level)
            self.w(f"if {var} is None:", level)
            self.w("e.boolean(False)", level + 1)
            self.w("else:", level)
            self.w("e.boolean(True)", level + 1)
            self.enc(s.elem, var, level + 1, depth + 1)
        else:
            assert s.elem is not None
            var, seq = self.temp("x"), self.temp("s")
            self.w(f"{seq} = {expr}", level)
            if k is Kind.FIXED_ARRAY:
                self.w(f"e.fixed_count({s.size}, len({seq}))", level)
            else:
                self.w(f"e.array_count(len({seq}), {s.size})", level)
            self.w(f"for {var} in {seq}:", level)
            self.enc(s.elem, var, level + 1, depth + 1)

    # -- sections -----------------------------------------------------------------
    def header(self) -> None:
        self.w(f'"""Types and XDR codecs generated from {self.source_name}.')
        self.w()
        self.w(f"Generated by gssproxy-py-xdrgen {__version__}; source sha256 {self.digest}.")
        self.w("Do not edit: change the .x file and run `make stubs`.")
        self.w('"""')
        self.w()
        self.w("# ruff: noqa")
        self.w("from __future__ import annotations")
        self.w()
        self.w("from dataclasses import dataclass")
        self.w("from enum import IntEnum")
        self.w("from typing import Final, TypeAlias")
        self.w()
        self.w("from gssproxy_py.errors import XdrEncodeError, XdrError")
        imports = "Procedure, Program, Version, decode_void, encode_void"
        self.w(f"from gssproxy_py.xdr.program import {imports}")
        self.w("from gssproxy_py.xdr.runtime import Decoder, Encoder")

    def constants(self) -> None:
        consts = [d for d in self.m.definitions if isinstance(d, RConst)]
        if consts:
            self.w()
            self.w()
            for c in consts:
                self.w(f"{c.name}: Final = {c.value}")

    def enums(self) -> None:
        for e in self.m.definitions:
            if not isinstance(e, REnum):
                continue
            cls = class_name(e.name)
            self.w()
            self.w()
            self.w(f"class {cls}(IntEnum):")
            self.w(f'"""enum {e.name}"""', 1)
            self.w()
            for name, value in e.members:
                self.w(f"{name} = {value}", 1)
            self.w()
            self.w()
            self.w(f"_M_{e.name}: Final[dict[int, {cls}]] = {{int(m): m for m in {cls}}}")
            for name, _ in e.members:
                self.w(f"{name}: Final = {cls}.{name}")

    def dataclass_fields(self, fields: list[Field], level: int) -> None:
        for f in fields:
            self.w(f"{f.name}: {self.ann(f.shape)}", level)

    def struct_class(self, s: RStruct) -> None:
        cls = class_name(s.name)
        self.w()
        self.w()
        if s.linked_list:
            self.linked_list_class(s, cls)
            return
        self.w("@dataclass(frozen=True, slots=True)")
        self.w(f"class {cls}:")
        self.w(f'"""struct {s.name}"""', 1)
        self.w()
        self.dataclass_fields(list(s.fields), 1)

    def linked_list_class(self, s: RStruct, cls: str) -> None:
        # Equality, hashing and repr walk the list in a loop: the dataclass
        # defaults would recurse once per node and hit the recursion limit.
        head, link = list(s.fields[:-1]), s.fields[-1]
        self.w("@dataclass(frozen=True, slots=True, eq=False, repr=False)")
        self.w(f"class {cls}:")
        self.w(f'"""struct {s.name} (a linked list through `{link.name}`)"""', 1)
        self.w()
        self.dataclass_fields(list(s.fields), 1)
        vals = ", ".join(f"n.{f.name}" for f in head)
        self.w()
        self.w("def _values(self) -> list[tuple[object, ...]]:", 1)
        self.w("out: list[tuple[object, ...]] = []", 2)
        self.w(f"n: {cls} | None = self", 2)
        self.w("while n is not None:", 2)
        self.w(f"out.append(({vals},))", 3)
        self.w(f"n = n.{link.name}", 3)
        self.w("return out", 2)
        self.w()
        self.w("def __eq__(self, other: object) -> bool:", 1)
        self.w(f"if not isinstance(other, {cls}):", 2)
        self.w("return NotImplemented", 3)
        self.w("return self._values() == other._values()", 2)
        self.w()
        self.w("def __hash__(self) -> int:", 1)
        self.w("return hash(tuple(self._values()))", 2)
        self.w()
        self.w("def __repr__(self) -> str:", 1)
        names = ", ".join(repr(f.name) for f in head)
        self.w(f"names = ({names},)", 2)
        self.w("items = [", 2)
        self.w('", ".join(f"{k}={v!r}" for k, v in zip(names, vals, strict=True))', 3)
        self.w("for vals in self._values()", 3)
        self.w("]", 2)
        self.w(f'return "{cls}[" + "; ".join(items) + "]"', 2)

    def arm_class_name(self, u: RUnion, index: int, arm: RArm) -> str:
        base = class_name(u.name)
        candidates = []
        if arm.field is not None:
            candidates.append(base + class_name(arm.field.xdr_name))
        if arm.labels:
            candidates.append(base + class_name(arm.labels[0].lower()))
        else:
            candidates.append(base + "Default")
        for c in candidates:
            if c not in self.used_classes:
                self.used_classes.add(c)
                return c
        raise self.err(f"union {u.name}: cannot name the class of arm {index}")

    def union_classes(self, u: RUnion) -> None:
        arms = [*u.arms, *([u.default] if u.default else [])]
        disc = u.discriminant
        disc_ann = self.ann(disc.shape)
        names = []
        for i, arm in enumerate(arms):
            cls = self.arm_class_name(u, i, arm)
            self.arm_classes[(u.name, i)] = cls
            names.append(cls)
            self.w()
            self.w()
            self.w("@dataclass(frozen=True, slots=True)")
            self.w(f"class {cls}:")
            label = " ".join(f"case {x}:" for x in arm.labels) if arm.labels else "default:"
            what = f"{arm.field.xdr_name}" if arm.field else "void"
            self.w(f'"""union {u.name}, {label} {what}"""', 1)
            self.w()
            if len(arm.values) != 1:
                self.w(f"{disc.name}: {disc_ann}", 1)
            if arm.field is not None:
                self.w(f"{self.arm_attr(u, arm)}: {self.ann(arm.field.shape)}", 1)
            if len(arm.values) == 1:
                if arm.field is not None:
                    self.w()
                self.w("@property", 1)
                self.w(f"def {disc.name}(self) -> {disc_ann}:", 1)
                self.w(f"return {self.disc_literal(u, arm.values[0])}", 2)
        self.aliases.append(f'{class_name(u.name)}: TypeAlias = "{" | ".join(names)}"')

    def arm_attr(self, u: RUnion, arm: RArm) -> str:
        assert arm.field is not None
        name = arm.field.name
        return name + "_" if name == u.discriminant.name else name

    def disc_literal(self, u: RUnion, value: int) -> str:
        s = u.discriminant.shape
        if s.kind is Kind.ENUM:
            assert s.name is not None
            e = self.m.enums[s.name]
            member = next(n for n, v in e.members if v == value)
            return f"{class_name(s.name)}.{member}"
        if s.kind is Kind.BOOL:
            return "True" if value else "False"
        return str(value)

    def types(self) -> None:
        self.aliases: list[str] = []
        for d in self.m.definitions:
            if isinstance(d, RStruct):
                self.struct_class(d)
            elif isinstance(d, RUnion):
                self.union_classes(d)
            elif isinstance(d, RTypedef):
                ann = self.ann(d.shape, through_alias=False)
                self.aliases.append(f'{class_name(d.name)}: TypeAlias = "{ann}"')
        if self.aliases:
            self.w()
            self.w()
            for a in self.aliases:
                self.w(a)

    # -- codecs -------------------------------------------------------------------
    def codecs(self) -> None:
        for d in self.m.definitions:
            if isinstance(d, REnum):
                self.enum_codec(d)
            elif isinstance(d, RStruct):
                self.struct_codec(d)
            elif isinstance(d, RUnion):
                self.union_codec(d)
            elif isinstance(d, RTypedef):
                self.typedef_codec(d)

    def temp(self, prefix: str) -> str:
        # Unique per function: mypy types a local by its first assignment.
        self.temps += 1
        return f"{prefix}{self.temps}"

    def fn(self, sig: str) -> None:
        self.temps = 0
        self.w()
        self.w()
        self.w(sig)

    def enum_codec(self, e: REnum) -> None:
        cls = class_name(e.name)
        self.fn(f"def encode_{e.name}(e: Encoder, v: {cls}) -> None:")
        self.w("e.enum(v)", 1)
        self.fn(f"def decode_{e.name}(d: Decoder) -> {cls}:")
        self.w(f'return d.enum_member(_M_{e.name}, "{e.name}")', 1)

    def typedef_codec(self, t: RTypedef) -> None:
        cls = class_name(t.name)
        self.fn(f"def encode_{t.name}(e: Encoder, v: {cls}) -> None:")
        self.enc(t.shape, "v", 1)
        self.fn(f"def decode_{t.name}(d: Decoder) -> {cls}:")
        self.w(f"return {self.dec(t.shape)}", 1)

    def guarded(self, name: str) -> bool:
        return name in self.m.recursive

    def struct_codec(self, s: RStruct) -> None:
        cls = class_name(s.name)
        if s.linked_list:
            self.linked_list_codec(s, cls)
            return
        self.fn(f"def encode_{s.name}(e: Encoder, v: {cls}) -> None:")
        for f in s.fields:
            self.enc(f.shape, f"v.{f.name}", 1)
        self.fn(f"def decode_{s.name}(d: Decoder) -> {cls}:")
        level = 1
        if self.guarded(s.name):
            self.w("d.enter()", 1)
            self.w("try:", 1)
            level = 2
        self.w(f"return {cls}(", level)
        for f in s.fields:
            self.w(f"{f.name}={self.dec(f.shape)},", level + 1)
        self.w(")", level)
        if self.guarded(s.name):
            self.w("finally:", 1)
            self.w("d.leave()", 2)

    def linked_list_codec(self, s: RStruct, cls: str) -> None:
        head, link = list(s.fields[:-1]), s.fields[-1]
        self.fn(f"def encode_{s.name}(e: Encoder, v: {cls}) -> None:")
        self.w(f"n: {cls} = v", 1)
        self.w("while True:", 1)
        for f in head:
            self.enc(f.shape, f"n.{f.name}", 2)
        self.w(f"nxt = n.{link.name}", 2)
        self.w("e.boolean(nxt is not None)", 2)
        self.w("if nxt is None:", 2)
        self.w("return", 3)
        self.w("n = nxt", 2)
        self.fn(f"def decode_{s.name}(d: Decoder) -> {cls}:")
        self.w("# Iterative: a long list must not cost one stack frame per node.", 1)
        types = ", ".join(self.ann(f.shape) for f in head)
        self.w(f"rows: list[tuple[{types}]] = []", 1)
        self.w("while True:", 1)
        self.w(f"rows.append(({', '.join(self.dec(f.shape) for f in head)},))", 2)
        self.w("if not d.optional_flag():", 2)
        self.w("break", 3)
        self.w(f"node: {cls} | None = None", 1)
        self.w("for row in reversed(rows):", 1)
        self.w(f"node = {cls}(*row, node)", 2)
        self.w("assert node is not None", 1)
        self.w("return node", 1)

    def union_codec(self, u: RUnion) -> None:
        cls = class_name(u.name)
        arms = [*u.arms, *([u.default] if u.default else [])]
        disc = u.discriminant
        enc_disc = _ENC_PRIM[disc.shape.kind]
        self.fn(f"def encode_{u.name}(e: Encoder, v: {cls}) -> None:")
        taken = sorted(x for a in u.arms for x in a.values)
        for i, arm in enumerate(arms):
            acls = self.arm_classes[(u.name, i)]
            kw = "if" if i == 0 else "elif"
            self.w(f"{kw} isinstance(v, {acls}):", 1)
            self.w(f"e.{enc_disc}({self.arm_disc(u, arm, acls, taken)})", 2)
            if arm.field is not None:
                self.enc(arm.field.shape, f"v.{self.arm_attr(u, arm)}", 2)
        self.w("else:", 1)
        self.w(f'raise XdrEncodeError(f"not an arm of {u.name}: {{type(v).__name__}}")', 2)

        self.fn(f"def decode_{u.name}(d: Decoder) -> {cls}:")
        level = 1
        if self.guarded(u.name):
            self.w("d.enter()", 1)
            self.w("try:", 1)
            level = 2
        self.w(f"{disc.name} = {self.dec(disc.shape)}", level)
        for i, arm in enumerate(u.arms):
            acls = self.arm_classes[(u.name, i)]
            cond = (
                f"{disc.name} == {arm.values[0]}"
                if len(arm.values) == 1
                else f"{disc.name} in {tuple(arm.values)!r}"
            )
            self.w(f"if {cond}:", level)
            self.w(f"return {acls}({self.arm_args(arm, disc.name)})", level + 1)
        if u.default is not None:
            acls = self.arm_classes[(u.name, len(u.arms))]
            self.w(f"return {acls}({self.arm_args(u.default, disc.name)})", level)
        else:
            self.w(f'raise XdrError(f"{u.name}: no arm for discriminant {{{disc.name}}}")', level)
        if self.guarded(u.name):
            self.w("finally:", 1)
            self.w("d.leave()", 2)

    def arm_disc(self, u: RUnion, arm: RArm, acls: str, taken: list[int]) -> str:
        """Check a field discriminant against its arm; what the encoder writes."""
        disc = u.discriminant.name
        if len(arm.values) == 1:
            # A constant: no property call on the hot path.
            return self.disc_literal(u, arm.values[0])
        if arm.values:
            self.w(f"if v.{disc} not in {tuple(arm.values)!r}:", 2)
            self.w(f'raise XdrEncodeError(f"{u.name}: {{v.{disc}}} does not select {acls}")', 3)
        else:
            self.w(f"if v.{disc} in {tuple(taken)!r}:", 2)
            self.w(f'raise XdrEncodeError(f"{u.name}: {{v.{disc}}} selects another arm")', 3)
        return f"v.{disc}"

    def arm_args(self, arm: RArm, disc: str) -> str:
        args = []
        if len(arm.values) != 1:
            args.append(disc)
        if arm.field is not None:
            args.append(self.dec(arm.field.shape))
        return ", ".join(args)

    # -- programs -------------------------------------------------------------------
    def codec_ref(self, s: Shape, role: str, helper: str) -> str:
        """The name of a function that encodes/decodes `s`, making one if needed."""
        if s.kind is Kind.VOID:
            return f"{role}_void"
        if s.alias is not None:
            return f"{role}_{s.alias}"
        if s.kind in (Kind.STRUCT, Kind.UNION, Kind.ENUM):
            return f"{role}_{s.name}"
        self.helpers.append((helper, role, s))
        return helper

    def py_type(self, s: Shape) -> str:
        if s.kind is Kind.VOID:
            return "None"
        if s.kind is Kind.UNION and s.alias is None:
            assert s.name is not None
            u = self.m.unions[s.name]
            n = len(u.arms) + (1 if u.default else 0)
            return "(" + ", ".join(self.arm_classes[(u.name, i)] for i in range(n)) + ",)"
        if s.kind in (Kind.STRUCT, Kind.ENUM) and s.alias is None:
            return self.ann(s)
        if s.kind in _PY_PRIM:
            return _PY_PRIM[s.kind]
        if s.kind in (Kind.FIXED_ARRAY, Kind.VAR_ARRAY):
            return "tuple"
        if s.kind is Kind.OPTIONAL:
            return "None"
        return self.ann(s, through_alias=False)

    def programs(self) -> None:
        self.helpers: list[tuple[str, str, Shape]] = []
        programs = [d for d in self.m.definitions if isinstance(d, RProgram)]
        if not programs:
            return
        self.w()
        self.w()
        for p in programs:
            self.w(f"{p.name}: Final = {p.number}")
            for v in p.versions:
                self.w(f"{v.name}: Final = {v.number}")
                for proc in v.procedures:
                    self.w(f"{proc.name}: Final = {proc.number}")
        tables: list[str] = []
        for p in programs:
            tables.append(f"{p.name}_PROGRAM: Final = Program(")
            tables.append(f"{_INDENT}number={p.number},")
            tables.append(f'{_INDENT}name="{p.name}",')
            tables.append(f"{_INDENT}versions={{")
            for v in p.versions:
                tables.append(f"{_INDENT * 2}{v.number}: Version(")
                tables.append(f"{_INDENT * 3}number={v.number},")
                tables.append(f'{_INDENT * 3}name="{v.name}",')
                tables.append(f"{_INDENT * 3}procedures={{")
                procs = list(v.procedures)
                if all(x.number != 0 for x in procs):
                    procs.insert(0, RProc("NULL", 0, Shape(Kind.VOID), ()))
                for proc in procs:
                    tables.extend(self.proc_entry(p, v.name, proc))
                tables.append(f"{_INDENT * 3}}},")
                tables.append(f"{_INDENT * 2}),")
            tables.append(f"{_INDENT}}},")
            tables.append(")")
        self.emit_helpers()
        self.w()
        self.w()
        self.out.extend(tables)

    def proc_entry(self, p: RProgram, vname: str, proc: RProc) -> list[str]:
        base = f"_{p.name}_{vname}_{proc.name}".lower()
        if len(proc.args) > 1:
            arg = Shape(Kind.VOID)  # placeholder; multi-arg helpers are made below
            dec_arg, enc_arg = f"{base}_decode_args", f"{base}_encode_args"
            self.helpers.append((base, "args", arg))
            self.multi_args.append((base, proc.args))
            arg_type = "tuple"
        else:
            arg = proc.args[0] if proc.args else Shape(Kind.VOID)
            dec_arg = self.codec_ref(arg, "decode", f"{base}_decode_arg")
            enc_arg = self.codec_ref(arg, "encode", f"{base}_encode_arg")
            arg_type = self.py_type(arg)
        dec_res = self.codec_ref(proc.result, "decode", f"{base}_decode_res")
        enc_res = self.codec_ref(proc.result, "encode", f"{base}_encode_res")
        i = _INDENT * 4
        return [
            f"{i}{proc.number}: Procedure(",
            f"{i}{_INDENT}number={proc.number},",
            f'{i}{_INDENT}name="{proc.name}",',
            f"{i}{_INDENT}arg_type={arg_type},",
            f"{i}{_INDENT}res_type={self.py_type(proc.result)},",
            f"{i}{_INDENT}decode_arg={dec_arg},",
            f"{i}{_INDENT}encode_arg={enc_arg},",
            f"{i}{_INDENT}decode_res={dec_res},",
            f"{i}{_INDENT}encode_res={enc_res},",
            f"{i}),",
        ]

    def emit_helpers(self) -> None:
        for name, role, s in self.helpers:
            if role == "decode":
                self.fn(f"def {name}(d: Decoder) -> {self.ann(s)}:")
                self.w(f"return {self.dec(s)}", 1)
            elif role == "encode":
                self.fn(f"def {name}(e: Encoder, v: {self.ann(s)}) -> None:")
                self.enc(s, "v", 1)
        for base, args in self.multi_args:
            types = ", ".join(self.ann(a) for a in args)
            self.fn(f"def {base}_decode_args(d: Decoder) -> tuple[{types}]:")
            self.w(f"return ({', '.join(self.dec(a) for a in args)},)", 1)
            self.fn(f"def {base}_encode_args(e: Encoder, v: tuple[{types}]) -> None:")
            for i, a in enumerate(args):
                self.enc(a, f"v[{i}]", 1)

    def run(self) -> str:
        self.multi_args: list[tuple[str, tuple[Shape, ...]]] = []
        self.temps = 0
        self.used_classes = {
            class_name(d.name)
            for d in self.m.definitions
            if isinstance(d, (REnum, RStruct, RUnion, RTypedef))
        }
        self.header()
        self.constants()
        self.enums()
        self.types()
        self.codecs()
        self.programs()
        return "\n".join(self.out) + "\n"


def emit(model: Model, source_name: str, source_text: str) -> str:
    """Python source for a resolved model; deterministic for a given input."""
    return _Emitter(model, source_name, source_text).run()
